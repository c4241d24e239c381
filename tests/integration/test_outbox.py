"""The outbox: every committed change the host application cares about is one message, and nothing else is.

Messages are written in the transaction that makes the change (models/outbox.py,
application/announcements.py), so they exist if and only if the change
committed, and each has a stable id derived from what it announces.
"""

from __future__ import annotations

from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from models.outbox import MessageType, message_id
from models.rules import Rules
from models.tables import CreditLedger, OutboxMessage, PaymentStatusHistory
from tests.support.apply import apply_batch
from tests.support.stripe_events import charge, checkout_session, event
from tests.support.stripe_flows import build

CREDIT_TYPES = {"grant": MessageType.CREDITS_GRANTED, "clawback": MessageType.CREDITS_REVOKED,
                "reversal": MessageType.CREDITS_RESTORED}


def messages(database, kind: str | None = None) -> list[OutboxMessage]:
    with database.transaction() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        if kind:
            query = query.where(OutboxMessage.type == kind)
        return list(session.scalars(query))


def assert_messages_match_what_committed(database) -> None:
    """One message per ledger entry of a payment and per status move; no message without one."""
    with database.transaction() as session:
        entries = session.execute(
            select(CreditLedger.kind, CreditLedger.idempotency_key, CreditLedger.amount).where(CreditLedger.kind != "spend")
        ).all()
        moves = session.scalar(select(text("count(*)")).select_from(PaymentStatusHistory))
    expected = {message_id(CREDIT_TYPES[kind], key): abs(amount) for kind, key, amount in entries}
    found = {m.message_id: m.data["credits"] for m in messages(database) if m.type in CREDIT_TYPES.values()}
    assert found == expected
    assert len(messages(database, MessageType.PAYMENT_STATUS_CHANGED)) == moves


def test_a_purchase_and_its_refund_are_announced_once_each(database):
    session = checkout_session(user_id="user_told", credits="100", amount_total=1000, payment_intent="pi_told")
    paid = event("checkout.session.completed", session)
    refund = event("charge.refunded", charge("pi_told", 1000, 250))
    apply_batch(database, [paid, refund])
    apply_batch(database, [paid, refund])  # redelivered: duplicates announce nothing

    [granted] = messages(database, MessageType.CREDITS_GRANTED)
    [revoked] = messages(database, MessageType.CREDITS_REVOKED)
    assert granted.user_id == revoked.user_id == "user_told"
    assert (granted.data["credits"], granted.data["amount_cents"], granted.data["currency"]) == (100, 1000, "usd")
    assert (revoked.data["credits"], revoked.data["reason"], revoked.data["shortfall"]) == (25, "refund", 0)
    assert revoked.data["cause"] == refund["id"] and granted.data["cause"] == paid["id"]
    assert [m.data["to"] for m in messages(database, MessageType.PAYMENT_STATUS_CHANGED)] == [
        "completed", "partially_refunded"
    ]
    assert_messages_match_what_committed(database)


@contextmanager
def payments_refused_for(database, user: str):
    """A CHECK constraint the code does not expect: this user's payment cannot be written."""
    with database.transaction() as session:
        session.execute(text(f"ALTER TABLE payments ADD CONSTRAINT outbox_test CHECK (user_id <> '{user}') NOT VALID"))
    try:
        yield
    finally:
        with database.transaction() as session:
            session.execute(text("ALTER TABLE payments DROP CONSTRAINT IF EXISTS outbox_test"))


def test_what_rolls_back_is_never_announced(database):
    good = event("checkout.session.completed", checkout_session(user_id="user_fine", credits="10"))
    doomed = event("checkout.session.completed", checkout_session(user_id="user_doomed", credits="10"))
    with payments_refused_for(database, "user_doomed"):
        apply_batch(database, [good, doomed])  # the batch fails whole, then each event on its own

    granted = messages(database, MessageType.CREDITS_GRANTED)
    assert [m.user_id for m in granted] == ["user_fine"]
    [letter] = messages(database, MessageType.DEAD_LETTER_CREATED)
    assert (letter.data["event_id"], letter.data["error_class"]) == (doomed["id"], "unexpected")
    assert "user_doomed" not in str(letter.data)  # the event id, never the body
    assert_messages_match_what_committed(database)


CASES = ["partial_refunds_then_full", "refund_fails", "dispute_lost", "subscription_refunded", "session_intent_first"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(CASES), data=st.data())
def test_in_any_order_the_messages_are_exactly_the_committed_changes(database, name, data):
    flow = build(name)
    events = data.draw(st.permutations(flow.events)) + data.draw(st.lists(st.sampled_from(flow.events), max_size=2))
    for evt in events:
        apply_batch(database, [evt], Rules())
    assert_messages_match_what_committed(database)
