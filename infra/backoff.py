"""Retry countdowns: exponential backoff with full jitter, capped.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the
retries of many events that failed together — after a database restart, say —
instead of sending them back in one wave.
"""

from __future__ import annotations

import random


def backoff_seconds(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Countdown before retry number ``attempt`` (0 for the first retry)."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return (rng or random).uniform(0, ceiling)
