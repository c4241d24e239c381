"""The payment lifecycle table and advance(), with in-memory objects only."""

from __future__ import annotations

import pytest

from models.enums import PaymentStatus as S
from models.lifecycle import GRANTED, TRANSITIONS, TransitionError, advance, can_advance
from models.tables import Payment, PaymentStatusHistory

TERMINAL = (S.REFUNDED,)
# Ended without payment; only a payment the provider says was taken after all moves them.
ENDED_UNPAID = (S.EXPIRED, S.CANCELLED)


class FakeSession:
    """Just enough of a Session for advance(): records what is added."""

    def __init__(self) -> None:
        self.added: list[object] = []

    def add(self, obj: object) -> None:
        self.added.append(obj)


def test_every_status_is_a_key():
    assert set(TRANSITIONS) == set(S)


def test_every_target_is_a_status():
    for current, targets in TRANSITIONS.items():
        assert isinstance(targets, frozenset), current
        assert targets <= set(S), current


@pytest.mark.parametrize("status", TERMINAL)
def test_terminal_states_allow_nothing(status):
    assert TRANSITIONS[status] == frozenset()
    for to in S:
        assert not can_advance(status, to)


@pytest.mark.parametrize("status", ENDED_UNPAID)
def test_ended_unpaid_states_only_allow_a_late_payment(status):
    assert TRANSITIONS[status] == frozenset({S.COMPLETED})


def test_only_the_terminal_states_are_terminal():
    assert {status for status, targets in TRANSITIONS.items() if not targets} == set(TERMINAL)


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
        (S.REFUNDED, S.COMPLETED),
        (S.REFUNDED, S.DISPUTED),
        (S.PARTIALLY_REFUNDED, S.PARTIALLY_REFUNDED),
        (S.EXPIRED, S.FAILED),
        (S.CANCELLED, S.PROCESSING),
        ("completed", "pending"),
    ],
)
def test_can_advance_disallowed(current, to):
    assert can_advance(current, to) is False


@pytest.mark.parametrize(("current", "to"), [("bogus", "pending"), ("pending", "bogus")])
def test_can_advance_unknown_status_is_a_value_error(current, to):
    with pytest.raises(ValueError):
        can_advance(current, to)


@pytest.mark.parametrize(
    ("current", "to"),
    [
        (S.COMPLETED, S.PENDING),
        (S.REFUNDED, S.COMPLETED),
        (S.EXPIRED, S.PROCESSING),
        (S.PENDING, S.REFUNDED),
    ],
)
def test_advance_disallowed_raises_and_changes_nothing(current, to):
    session = FakeSession()
    payment = Payment(id=7, status=current.value)

    with pytest.raises(TransitionError) as excinfo:
        advance(session, payment, to, "evt_disallowed")

    assert excinfo.value.current == current
    assert excinfo.value.to == to
    assert str(current) in str(excinfo.value) and str(to) in str(excinfo.value)
    assert payment.status == current.value
    assert session.added == []


def test_transition_error_is_a_value_error():
    assert issubclass(TransitionError, ValueError)


def test_advance_allowed_sets_status_and_records_history():
    session = FakeSession()
    payment = Payment(id=7, status="pending")

    advance(session, payment, S.PROCESSING, "evt_123 checkout.session.completed")

    assert payment.status == S.PROCESSING
    assert len(session.added) == 1
    history = session.added[0]
    assert isinstance(history, PaymentStatusHistory)
    assert history.payment_id == 7
    assert history.from_status == S.PENDING
    assert history.to_status == S.PROCESSING
    assert history.cause == "evt_123 checkout.session.completed"


def test_advance_twice_records_each_step():
    session = FakeSession()
    payment = Payment(id=9, status=S.PENDING)

    advance(session, payment, S.COMPLETED, "paid")
    advance(session, payment, S.REFUNDED, "refund")

    assert payment.status == S.REFUNDED
    assert [(h.from_status, h.to_status, h.cause) for h in session.added] == [
        (S.PENDING, S.COMPLETED, "paid"),
        (S.COMPLETED, S.REFUNDED, "refund"),
    ]
    with pytest.raises(TransitionError):
        advance(session, payment, S.COMPLETED, "too late")
    assert len(session.added) == 2
