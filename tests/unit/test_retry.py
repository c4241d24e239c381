"""backoff_seconds: full jitter under an exponential ceiling, capped."""

from __future__ import annotations

import random

import pytest

from infra.backoff import backoff_seconds

BASE = 2.0
CAP = 300.0


class RecordingRng:
    """Returns the top of the range and records what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b


@pytest.mark.parametrize("attempt", [*range(13), 31, 32, 33, 64, 1000])
def test_always_within_zero_and_ceiling(attempt):
    ceiling = min(CAP, BASE * 2 ** min(attempt, 64))
    rng = random.Random(attempt)

    values = [backoff_seconds(attempt, base=BASE, cap=CAP, rng=rng) for _ in range(500)]

    assert all(0 <= value <= ceiling for value in values)


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 7, 8, 9, 20, 1000, 10**9])
def test_ceiling_is_min_of_cap_and_exponential(attempt):
    rng = RecordingRng()

    top = backoff_seconds(attempt, base=BASE, cap=CAP, rng=rng)

    expected = min(CAP, BASE * 2 ** min(attempt, 64))
    assert rng.calls == [(0, expected)]
    assert top == expected


def test_first_retries_double():
    ceilings = []
    for attempt in range(5):
        rng = RecordingRng()
        backoff_seconds(attempt, base=0.5, cap=1000, rng=rng)
        ceilings.append(rng.calls[0][1])
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0]


@pytest.mark.parametrize("attempt", [1000, 10**6, 10**9])
def test_never_above_cap_for_huge_attempts(attempt):
    rng = random.Random(0)
    values = [backoff_seconds(attempt, base=BASE, cap=CAP, rng=rng) for _ in range(1000)]

    assert max(values) <= CAP
    assert max(values) > CAP * 0.9  # and the cap, not some smaller ceiling, is the top


def test_never_above_a_small_cap():
    rng = random.Random(1)
    values = [backoff_seconds(a, base=0.2, cap=2.0, rng=rng) for a in range(50) for _ in range(20)]

    assert max(values) <= 2.0


def test_seeded_rng_gives_reproducible_values():
    first = [backoff_seconds(a, base=BASE, cap=CAP, rng=random.Random(1234)) for a in range(10)]
    second = [backoff_seconds(a, base=BASE, cap=CAP, rng=random.Random(1234)) for a in range(10)]

    assert first == second


def test_uses_the_rng_passed_in():
    attempt = 6
    expected = random.Random(99).uniform(0, min(CAP, BASE * 2**attempt))

    assert backoff_seconds(attempt, base=BASE, cap=CAP, rng=random.Random(99)) == expected


def test_different_seeds_give_different_values():
    a = backoff_seconds(8, base=BASE, cap=CAP, rng=random.Random(1))
    b = backoff_seconds(8, base=BASE, cap=CAP, rng=random.Random(2))

    assert a != b


def test_full_jitter_spreads_over_the_whole_range():
    rng = random.Random(7)
    values = [backoff_seconds(10, base=BASE, cap=CAP, rng=rng) for _ in range(2000)]

    assert min(values) < CAP * 0.05
    assert max(values) > CAP * 0.95
    assert CAP * 0.4 < sum(values) / len(values) < CAP * 0.6
