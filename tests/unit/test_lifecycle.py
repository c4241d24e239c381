"""The payment lifecycle table, and settle() as the one place that checks it. No I/O.

advance() and the history row it wrote are gone: a status change is now an
effect that settle() returns (models/settlement.py) and the batch writes.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from models.enums import PaymentStatus as S
from models.lifecycle import GRANTED, TRANSITIONS, UNPAID, TransitionError, can_advance
from models.payments import PaymentRow
from models.settlement import StatusChange, settle

# Ended without payment; only a payment the provider says was taken after all moves them.
ENDED_UNPAID = (S.EXPIRED, S.CANCELLED)
PAID_AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_every_status_is_a_key():
    assert set(TRANSITIONS) == set(S)


def test_every_target_is_a_status():
    for current, targets in TRANSITIONS.items():
        assert isinstance(targets, frozenset), current
        assert targets <= set(S), current


def test_refunded_is_not_terminal_a_failed_refund_gives_back():
    # A refund that fails (or a won dispute after a full refund) returns the payment to what it was.
    assert TRANSITIONS[S.REFUNDED] == frozenset({S.COMPLETED, S.PARTIALLY_REFUNDED, S.DISPUTED})


def test_partially_refunded_may_return_to_completed():
    assert S.COMPLETED in TRANSITIONS[S.PARTIALLY_REFUNDED]


@pytest.mark.parametrize("status", sorted(UNPAID))
def test_before_payment_any_unpaid_status_may_follow_another_and_payment_ends_it(status):
    # The newest unpaid news wins (by time, then rank); the table must not decide by arrival order.
    assert TRANSITIONS[status] == (UNPAID - {status}) | {S.COMPLETED}


def test_no_status_is_terminal():
    assert all(TRANSITIONS[status] for status in S)


def test_every_status_is_reachable_from_pending():
    seen, frontier = {S.PENDING}, [S.PENDING]
    while frontier:
        for to in TRANSITIONS[frontier.pop()]:
            if to not in seen:
                seen.add(to)
                frontier.append(to)
    assert seen == set(S)


def test_granted_states_never_lead_out_of_granted():
    # once credits are granted, no status change may silently forget that
    for status in GRANTED:
        assert TRANSITIONS[status] <= GRANTED, status


def test_nothing_goes_back_to_pending():
    assert all(S.PENDING not in targets for targets in TRANSITIONS.values())


@pytest.mark.parametrize(
    ("current", "to"),
    [
        (S.PENDING, S.PROCESSING),
        (S.PENDING, S.COMPLETED),
        (S.PENDING, S.EXPIRED),
        (S.PROCESSING, S.COMPLETED),
        (S.PROCESSING, S.FAILED),
        (S.FAILED, S.PROCESSING),
        (S.FAILED, S.COMPLETED),
        (S.COMPLETED, S.REFUNDED),
        (S.COMPLETED, S.DISPUTED),
        (S.PARTIALLY_REFUNDED, S.REFUNDED),
        (S.DISPUTED, S.COMPLETED),
        (S.DISPUTED, S.PARTIALLY_REFUNDED),
        (S.PARTIALLY_REFUNDED, S.COMPLETED),
        (S.REFUNDED, S.COMPLETED),
        (S.REFUNDED, S.PARTIALLY_REFUNDED),
        (S.REFUNDED, S.DISPUTED),
        (S.EXPIRED, S.COMPLETED),
        ("pending", "completed"),  # values as read from the database
    ],
)
def test_can_advance_allowed(current, to):
    assert can_advance(current, to) is True


@pytest.mark.parametrize(
    ("current", "to"),
    [
        (S.PENDING, S.PENDING),
        (S.PENDING, S.REFUNDED),
        (S.PENDING, S.DISPUTED),
        (S.PROCESSING, S.PENDING),
        (S.COMPLETED, S.COMPLETED),
        (S.COMPLETED, S.PENDING),
        (S.COMPLETED, S.FAILED),
        (S.COMPLETED, S.EXPIRED),
        (S.DISPUTED, S.FAILED),
        (S.REFUNDED, S.REFUNDED),
        (S.REFUNDED, S.PENDING),
        (S.REFUNDED, S.FAILED),
        (S.REFUNDED, S.EXPIRED),
        (S.PARTIALLY_REFUNDED, S.PARTIALLY_REFUNDED),
        (S.EXPIRED, S.PENDING),
        (S.CANCELLED, S.REFUNDED),
        ("completed", "pending"),
    ],
)
def test_can_advance_disallowed(current, to):
    assert can_advance(current, to) is False


@pytest.mark.parametrize(("current", "to"), [("bogus", "pending"), ("pending", "bogus")])
def test_can_advance_unknown_status_is_a_value_error(current, to):
    with pytest.raises(ValueError):
        can_advance(current, to)


def test_transition_error_is_a_value_error():
    assert issubclass(TransitionError, ValueError)


# -- settle() is where a status changes, and it checks the table -------------------------


def row(status: S, *, paid: bool, unpaid_status: S | None = None) -> PaymentRow:
    return PaymentRow(
        id=7,
        provider="stripe",
        user_id="user_1",
        credits=100,
        provider_session_id="cs_test_lifecycle",
        amount_cents=1000,
        status=status,
        paid_at=PAID_AT if paid else None,
        unpaid_status=unpaid_status,
        # a paid row in these tests was granted already: only the status is in question
        credits_granted=100 if paid else 0,
    )


@pytest.mark.parametrize(
    ("current", "facts", "derived"),
    [
        # a paid payment whose facts say unpaid (events never un-pay; the guard holds anyway)
        (S.COMPLETED, {"paid": False}, S.PENDING),
        (S.REFUNDED, {"paid": False, "unpaid_status": S.PROCESSING}, S.PROCESSING),
        # an unpaid payment never goes back to pending
        (S.EXPIRED, {"paid": False}, S.PENDING),
    ],
)
def test_settle_refuses_a_move_the_table_does_not_allow(current, facts, derived):
    payment = row(current, **facts)

    with pytest.raises(TransitionError) as excinfo:
        settle(payment, "evt_disallowed")

    assert excinfo.value.current == current
    assert excinfo.value.to == derived
    assert str(current) in str(excinfo.value) and str(derived) in str(excinfo.value)


def test_settle_allowed_move_returns_the_status_change_for_history():
    payment = row(S.PENDING, paid=False, unpaid_status=S.PROCESSING)

    settled = settle(payment, "evt_123 checkout.session.completed")

    assert settled.row.status == S.PROCESSING
    assert settled.status_change == StatusChange(
        7, S.PENDING, S.PROCESSING, "evt_123 checkout.session.completed"
    )
    assert payment.status == S.PENDING  # rows are values: the old one is unchanged


def test_settle_without_a_move_returns_no_status_change():
    payment = row(S.COMPLETED, paid=True)

    settled = settle(payment, "evt_again")

    assert settled.status_change is None
    assert settled.row == payment
    assert settled.postings == ()


def test_settle_twice_records_each_step():
    paid = replace(row(S.PENDING, paid=True), credits_granted=0)

    first = settle(paid, "paid")
    refunded = settle(replace(first.row, refunded_cents=1000), "refund")

    assert [
        (c.from_status, c.to_status, c.cause) for c in (first.status_change, refunded.status_change)
    ] == [
        (S.PENDING, S.COMPLETED, "paid"),
        (S.COMPLETED, S.REFUNDED, "refund"),
    ]
    assert refunded.row.status == S.REFUNDED
