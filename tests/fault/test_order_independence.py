"""Any delivery order of a payment's events ends where the provider's order does.

Hypothesis draws a provider history for one payment — completion, sometimes an
earlier failed attempt, cumulative partial refunds up to a full refund, disputes
opened and closed won or lost — with increasing ``created`` times. The history
is applied once in the provider's order and once in a drawn permutation (to a
fresh copy of the payment, with its own ids), each event in its own transaction
through the real handlers on the real database. Final status, balance and
totals must agree, nothing may be left held, and balance = Σ ledger.

The concurrent test delivers a whole history at once from many threads, which
is what exercises holding and releasing under races.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from models.enums import EventStatus
from models.rules import Rules
from models.tables import CreditAccount, CreditLedger, Payment, WebhookEvent
from providers import stripe
from tests.support.apply import apply_batch
from tests.support.stripe_events import checkout_session, encode, event, stripe_object

T0 = 1_760_000_000


@dataclass(frozen=True)
class Step:
    """One provider event, described without ids so it can be replayed on a fresh payment."""

    kind: str  # completed | attempt_failed | refund | dispute_created | dispute_closed
    at: int
    refunded: int = 0
    dispute: int = 0
    won: bool = False


@st.composite
def histories(draw):
    credits = draw(st.integers(1, 1000))
    amount = draw(st.integers(1, 100_000))
    steps = [Step("completed", T0)]
    if draw(st.booleans()):
        steps.insert(0, Step("attempt_failed", T0 - 10))
    refunds = sorted(set(draw(st.lists(st.integers(1, amount), max_size=3))))
    if refunds and draw(st.booleans()):
        refunds[-1] = amount  # end with a full refund
    later = [Step("refund", 0, refunded=r) for r in sorted(set(refunds))]
    for n in range(draw(st.integers(0, 2))):
        later.append(Step("dispute_created", 0, dispute=n))
        outcome = draw(st.sampled_from(["open", "won", "lost"]))
        if outcome != "open":
            later.append(Step("dispute_closed", 0, dispute=n, won=outcome == "won"))
    # Interleave after the completion, keeping each dispute's creation before its
    # close and refunds in increasing order (refunds are cumulative).
    order = draw(st.permutations(range(len(later))))
    ordered = _respecting_order(later, order)
    steps += [Step(s.kind, T0 + 10 * (i + 1), s.refunded, s.dispute, s.won) for i, s in enumerate(ordered)]
    return credits, amount, steps


def _respecting_order(steps: list[Step], order) -> list[Step]:
    shuffled = [steps[i] for i in order]
    refunds = iter(sorted((s for s in steps if s.kind == "refund"), key=lambda s: s.refunded))
    out, opened = [], set()
    pending_closes = []
    for s in shuffled:
        if s.kind == "refund":
            out.append(next(refunds))
        elif s.kind == "dispute_created":
            out.append(s)
            opened.add(s.dispute)
            out += [c for c in pending_closes if c.dispute == s.dispute]
            pending_closes = [c for c in pending_closes if c.dispute != s.dispute]
        elif s.dispute in opened:
            out.append(s)
        else:
            pending_closes.append(s)
    return out + pending_closes


def materialize(credits: int, amount: int, steps: list[Step]) -> tuple[str, list[stripe.ProviderEvent]]:
    """Concrete signed-shape events for a fresh payment."""
    tag = uuid.uuid4().hex[:12]
    user, pi, session_id = f"user_{tag}", f"pi_{tag}", f"cs_test_{tag}"
    events = []
    for step in steps:
        if step.kind == "completed":
            obj = checkout_session(session_id=session_id, user_id=user, credits=str(credits), amount_total=amount, payment_intent=pi)
            evt = event("checkout.session.completed", obj, created=step.at)
        elif step.kind == "attempt_failed":
            obj = stripe_object("payment_intent", id=pi, status="requires_payment_method",
                                last_payment_error={"code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."})
            evt = event("payment_intent.payment_failed", obj, created=step.at)
        elif step.kind == "refund":
            obj = stripe_object("charge", id=f"ch_{tag}", payment_intent=pi, amount=amount, amount_refunded=step.refunded, refunded=step.refunded == amount)
            evt = event("charge.refunded", obj, created=step.at)
        else:
            closed = step.kind == "dispute_closed"
            status = ("won" if step.won else "lost") if closed else "needs_response"
            obj = stripe_object("dispute", id=f"dp_{tag}_{step.dispute}", payment_intent=pi, charge=f"ch_{tag}", amount=amount, status=status)
            evt = event(f"charge.dispute.{'closed' if closed else 'created'}", obj, created=step.at)
        events.append(stripe.parse_event(encode(evt)))
    return user, events


def deliver(database, evt, rules=Rules()) -> None:
    """One event, one transaction; transient failures (deadlocks) retried as a consumer would."""
    apply_batch(database, [evt], rules)


def deliver_in_batches(database, events: list, cuts: list[int]) -> None:
    """The events in order, cut into batches at the drawn positions: one transaction per batch."""
    edges = [0, *sorted({c % (len(events) + 1) for c in cuts}), len(events)]
    for start, end in zip(edges, edges[1:], strict=False):
        if end > start:
            apply_batch(database, events[start:end])


def outcome(database, user: str) -> dict:
    with database.transaction() as session:
        payment = session.scalars(select(Payment).where(Payment.user_id == user)).one()
        account = session.get(CreditAccount, user)
        ledger_total = session.scalar(select(func.coalesce(func.sum(CreditLedger.amount), 0)).where(CreditLedger.user_id == user))
        tag = user.removeprefix("user_")  # every event of the payment names its tag in some id
        statuses = set(session.scalars(select(WebhookEvent.status).where(WebhookEvent.payload.contains(tag))))
        assert statuses, "no events found for the payment"
    assert account.balance == ledger_total, "balance must equal the sum of the ledger"
    assert EventStatus.HELD not in statuses, "an event was left held"
    assert EventStatus.FAILED not in statuses
    return {
        "status": payment.status,
        "refunded_cents": payment.refunded_cents,
        "balance": account.balance,
        "purchased": account.total_purchased,
        "taken_back": account.total_refunded,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), data=st.data())
def test_any_order_ends_like_the_provider_order(database, history, data):
    credits, amount, steps = history
    user_a, in_order = materialize(credits, amount, steps)
    for evt in in_order:
        deliver(database, evt)
    expected = outcome(database, user_a)

    user_b, events = materialize(credits, amount, steps)
    order = data.draw(st.permutations(events), label="delivery order")
    # some deliveries twice, and the whole cut into batches (one transaction each) at random places
    twice = data.draw(st.lists(st.sampled_from(order), max_size=3), label="duplicates")
    cuts = data.draw(st.lists(st.integers(0, len(order) + len(twice)), max_size=4), label="batch cuts")
    deliver_in_batches(database, order + twice, cuts)

    assert outcome(database, user_b) == expected
    assert expected["purchased"] == credits


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_concurrent_delivery_of_a_whole_history(database, history):
    credits, amount, steps = history
    user_a, in_order = materialize(credits, amount, steps)
    for evt in in_order:
        deliver(database, evt)
    expected = outcome(database, user_a)

    user_b, events = materialize(credits, amount, steps)
    with ThreadPoolExecutor(len(events)) as pool:
        list(pool.map(lambda e: deliver(database, e), events + events))  # every event twice, all at once

    assert outcome(database, user_b) == expected
