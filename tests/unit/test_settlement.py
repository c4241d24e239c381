"""models/settlement.py: a payment's status and credits as pure functions of its facts.

No session and no database: PaymentRow values in, a Settled value (the row,
its status change, its ledger postings) out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.enums import DisputeStatus as D
from models.enums import PaymentStatus as S
from models.payments import PaymentRow
from models.settlement import (
    UNPAID,
    derive_status,
    takeback_target,
)

PAID_AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
OPEN, WON, LOST = D.OPEN.value, D.WON.value, D.LOST.value


def payment(
    disputes=(),
    *,
    credits: int = 100,
    amount: int | None = 1000,
    refunded: int = 0,
    paid: bool = True,
    unpaid_status: str | None = None,
    **fields,
) -> PaymentRow:
    """A payment's facts; ``disputes`` is a list of dispute statuses, one dispute each."""
    columns = dict(
        id=1,
        provider="stripe",
        provider_session_id="cs_test_settlement",
        provider_payment_id="pi_settlement",
        user_id="user_1",
        credits=credits,
        amount_cents=amount,
        currency="usd",
        refunded_cents=refunded,
        paid_at=PAID_AT if paid else None,
        unpaid_status=unpaid_status,
        disputes={f"dp_{i}": {"status": status} for i, status in enumerate(disputes)},
    )
    return PaymentRow(**(columns | fields))


# -- derive_status ----------------------------------------------------------------------


def test_unpaid_without_unpaid_status_is_pending():
    assert derive_status(payment(paid=False)) is S.PENDING


@pytest.mark.parametrize("status", sorted(UNPAID))
def test_unpaid_takes_its_unpaid_status(status):
    result = derive_status(payment(paid=False, unpaid_status=status.value))

    assert result == status
    assert isinstance(result, S)


@pytest.mark.parametrize("disputes", [[OPEN], [LOST], [WON]])
def test_unpaid_ignores_refunds_and_disputes(disputes):
    p = payment(disputes, paid=False, unpaid_status=S.FAILED.value, refunded=1000)

    assert derive_status(p) == S.FAILED


def test_paid_is_completed():
    assert derive_status(payment()) == S.COMPLETED


def test_paid_wins_over_an_earlier_unpaid_status():
    assert derive_status(payment(unpaid_status=S.PROCESSING.value)) == S.COMPLETED


@pytest.mark.parametrize("refunded", [1, 250, 999])
def test_partial_refund_is_partially_refunded(refunded):
    assert derive_status(payment(refunded=refunded)) == S.PARTIALLY_REFUNDED


@pytest.mark.parametrize("refunded", [1000, 1001, 5000])
def test_refund_of_the_whole_amount_is_refunded(refunded):
    assert derive_status(payment(refunded=refunded)) == S.REFUNDED


def test_open_dispute_is_disputed():
    assert derive_status(payment([OPEN])) == S.DISPUTED


def test_open_dispute_beats_a_partial_refund():
    assert derive_status(payment([OPEN], refunded=250)) == S.DISPUTED


def test_won_dispute_returns_to_completed():
    assert derive_status(payment([WON])) == S.COMPLETED


def test_won_dispute_returns_to_partially_refunded():
    assert derive_status(payment([WON], refunded=250)) == S.PARTIALLY_REFUNDED


def test_lost_dispute_is_refunded():
    assert derive_status(payment([LOST])) == S.REFUNDED


@pytest.mark.parametrize("disputes", [[OPEN, LOST], [LOST, OPEN], [WON, LOST, OPEN]])
def test_lost_dispute_beats_an_open_one(disputes):
    assert derive_status(payment(disputes, refunded=250)) == S.REFUNDED


def test_full_refund_beats_an_open_dispute():
    assert derive_status(payment([OPEN], refunded=1000)) == S.REFUNDED


def test_won_and_open_disputes_are_disputed():
    assert derive_status(payment([WON, OPEN])) == S.DISPUTED


def test_enum_members_work_as_dispute_statuses():
    # settle() reads Dispute.status from the database as plain strings; enum members compare equal.
    assert derive_status(payment([D.LOST])) == S.REFUNDED
    assert derive_status(payment([D.OPEN])) == S.DISPUTED


def test_free_paid_payment_is_completed():
    assert derive_status(payment(amount=0)) == S.COMPLETED


def test_paid_payment_with_unknown_amount_is_completed():
    assert derive_status(payment(amount=None)) == S.COMPLETED


@pytest.mark.parametrize("amount", [0, None], ids=["amount-0", "amount-None"])
def test_status_is_refunded_when_refunds_take_back_every_credit(amount):
    p = payment(amount=amount, refunded=500)
    assert takeback_target(p) == p.credits

    assert derive_status(p) == S.REFUNDED


# -- takeback_target --------------------------------------------------------------------


@pytest.mark.parametrize("disputes", [[], [OPEN], [LOST]])
def test_unpaid_takes_back_nothing(disputes):
    assert takeback_target(payment(disputes, paid=False, refunded=1000)) == 0


def test_paid_without_refund_takes_back_nothing():
    assert takeback_target(payment()) == 0


@pytest.mark.parametrize("disputes", [[OPEN], [WON], [OPEN, WON]])
def test_open_or_won_dispute_takes_back_nothing(disputes):
    assert takeback_target(payment(disputes)) == 0


@pytest.mark.parametrize(
    ("credits", "amount", "refunded", "expected"),
    [
        (100, 999, 333, 33),  # 33.33… rounds down
        (100, 1000, 250, 25),
        (100, 1000, 1, 0),  # less than one credit's worth takes nothing back yet
        (100, 1000, 999, 99),  # 99.9 rounds down, never up
        (3, 10, 5, 1),  # 1.5
        (7, 3, 2, 4),  # 4.66…
        (10**12, 10**9 + 7, 1, 999),
    ],
)
def test_partial_refund_takes_back_the_floor_of_its_share(credits, amount, refunded, expected):
    assert takeback_target(payment(credits=credits, amount=amount, refunded=refunded)) == expected


@pytest.mark.parametrize("refunded", [1000, 1001, 10**6])
def test_full_refund_takes_back_exactly_the_credits(refunded):
    assert takeback_target(payment(credits=97, amount=1000, refunded=refunded)) == 97


@pytest.mark.parametrize("refunded", [0, 250, 1000])
def test_lost_dispute_takes_back_all_the_credits(refunded):
    assert takeback_target(payment([LOST], credits=97, refunded=refunded)) == 97


def test_open_dispute_does_not_change_the_refund_share():
    assert takeback_target(payment([OPEN], refunded=250)) == 25


@pytest.mark.parametrize("amount", [0, None], ids=["amount-0", "amount-None"])
def test_refund_with_no_known_amount_takes_back_all_the_credits(amount):
    assert takeback_target(payment(credits=97, amount=amount, refunded=1)) == 97


@pytest.mark.parametrize("amount", [0, None], ids=["amount-0", "amount-None"])
def test_no_refund_with_no_known_amount_takes_back_nothing(amount):
    assert takeback_target(payment(credits=97, amount=amount, refunded=0)) == 0


# -- properties ---------------------------------------------------------------------------

CREDITS = st.integers(min_value=1, max_value=10**12)
AMOUNTS = st.integers(min_value=1, max_value=10**9)
DISPUTE_SETS = st.lists(st.sampled_from([OPEN, WON, LOST]), max_size=3)


@st.composite
def refund_histories(draw):
    """credits, amount and a non-decreasing list of cumulative refunds ending at amount."""
    credits = draw(CREDITS)
    amount = draw(AMOUNTS)
    steps = draw(st.lists(st.integers(min_value=0, max_value=amount), max_size=12))
    return credits, amount, [*sorted(steps), amount]


@settings(max_examples=500)
@given(refund_histories())
def test_a_full_refund_takes_back_exactly_the_credits_however_it_is_split(history):
    credits, amount, cumulative = history
    targets = [0] + [
        takeback_target(payment(credits=credits, amount=amount, refunded=r)) for r in cumulative
    ]

    taken = sum(max(after - before, 0) for before, after in pairwise(targets))

    assert taken == credits


@settings(max_examples=500)
@given(
    credits=CREDITS,
    amount=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
    refunds=st.tuples(
        st.integers(min_value=0, max_value=2 * 10**9), st.integers(min_value=0, max_value=2 * 10**9)
    ),
    disputes=DISPUTE_SETS,
)
def test_takeback_target_is_monotone_in_refunded_cents(credits, amount, refunds, disputes):
    low, high = sorted(refunds)

    before = takeback_target(payment(disputes, credits=credits, amount=amount, refunded=low))
    after = takeback_target(payment(disputes, credits=credits, amount=amount, refunded=high))

    assert before <= after


@settings(max_examples=500)
@given(
    credits=st.integers(min_value=0, max_value=10**12),
    amount=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
    refunded=st.integers(min_value=0, max_value=2 * 10**9),
    paid=st.booleans(),
    disputes=DISPUTE_SETS,
)
def test_takeback_target_stays_between_zero_and_the_credits(
    credits, amount, refunded, paid, disputes
):
    target = takeback_target(
        payment(disputes, credits=credits, amount=amount, refunded=refunded, paid=paid)
    )

    assert 0 <= target <= credits


@settings(max_examples=500)
@given(credits=CREDITS, amount=AMOUNTS, data=st.data())
def test_partial_refund_target_is_the_floor_of_the_exact_share(credits, amount, data):
    refunded = data.draw(
        st.integers(min_value=0, max_value=amount - 1) if amount > 1 else st.just(0)
    )

    target = takeback_target(payment(credits=credits, amount=amount, refunded=refunded))

    share = Fraction(credits * refunded, amount)
    assert target <= share < target + 1
