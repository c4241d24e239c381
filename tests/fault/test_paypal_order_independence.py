"""Any delivery order of a PayPal payment's events ends where PayPal's order does.

Hypothesis draws a PayPal history for one order: the buyer's approval, a
capture that may first be pending (and then clear or be denied), refunds whose
``total_refunded_amount`` grows up to the whole capture (the last may be a
reversal), disputes created and resolved for the buyer or the seller. The
history is applied once in PayPal's order and once in a drawn permutation with
duplicates, cut into batches, to a fresh copy of the order (its own ids),
through the real handlers on the real database. An approval is held for its
capture; as the worker does after commit, the capture is then asked of a stub
of PayPal's API that answers as PayPal did (application/lookups.py). Final
status, balance and totals must agree, nothing may be left held, and
balance = Σ ledger.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from application.lookups import look_up_session
from application.unit import UnitOfWork
from models.enums import EventStatus
from models.rules import Rules
from models.tables import CreditAccount, CreditLedger, Payment, WebhookEvent
from providers import paypal
from tests.support import paypal_events as pe
from tests.support.apply import apply_batch

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Step:
    kind: str  # approved | pending | completed | denied | refund | reversal | dispute_created | dispute_resolved
    at: int  # seconds after T0
    refund: int = 0  # this refund's amount
    total: int = 0  # refunded in all once it is done
    dispute: int = 0
    outcome: str = ""


@st.composite
def histories(draw):
    credits = draw(st.integers(1, 1000))
    amount = draw(st.integers(1, 100_000))
    steps = [Step("approved", 0)]
    pending = draw(st.booleans())
    if pending:
        steps.append(Step("pending", 5))
    if pending and draw(st.integers(0, 4)) == 0:
        return credits, amount, [*steps, Step("denied", 10)]
    steps.append(Step("completed", 10))
    totals = sorted(set(draw(st.lists(st.integers(1, amount), max_size=3))))
    if totals and draw(st.booleans()):
        totals[-1] = amount
    later, before = [], 0
    for total in totals:
        kind = "reversal" if total == amount and draw(st.booleans()) else "refund"
        later.append(Step(kind, 0, refund=total - before, total=total))
        before = total
    for n in range(draw(st.integers(0, 2))):
        later.append(Step("dispute_created", 0, dispute=n))
        outcome = draw(st.sampled_from(["", "RESOLVED_SELLER_FAVOUR", "RESOLVED_BUYER_FAVOUR"]))
        if outcome:
            later.append(Step("dispute_resolved", 0, dispute=n, outcome=outcome))
    # Refunds keep their order (PayPal's totals only grow); a dispute is created before it is resolved.
    order = draw(st.permutations(range(len(later))))
    refunds = iter([s for s in later if s.kind in ("refund", "reversal")])
    placed, opened, waiting = [], set(), []
    for s in (later[i] for i in order):
        if s.kind in ("refund", "reversal"):
            placed.append(next(refunds))
        elif s.kind == "dispute_created":
            placed += [s, *[w for w in waiting if w.dispute == s.dispute]]
            waiting = [w for w in waiting if w.dispute != s.dispute]
            opened.add(s.dispute)
        elif s.dispute in opened:
            placed.append(s)
        else:
            waiting.append(s)
    placed += waiting
    steps += [Step(s.kind, 20 + 10 * i, s.refund, s.total, s.dispute, s.outcome) for i, s in enumerate(placed)]
    return credits, amount, steps


class OneOrder:
    """PayPal as far as one order goes: its events, and the capture the worker asks for."""

    def __init__(self, credits: int, amount: int, steps: list[Step]) -> None:
        tag = uuid.uuid4().hex[:10].upper()
        self.user, self.order_id, self.capture_id = f"user_{tag}", f"ORD{tag}", f"CAP{tag}"
        self.credits, self.amount = credits, amount
        pending = any(s.kind == "pending" for s in steps)
        # what the capture answered when it was made (later news comes as events)
        self.captured = self._capture("PENDING" if pending else "COMPLETED", 0)
        self.events = [paypal.parse_event(pe.encode(self._event(s))) for s in steps]

    def _capture(self, status: str, at: int) -> dict:
        capture = pe.capture(self.capture_id, order_id=self.order_id, status=status, amount_cents=self.amount,
                             user_id=self.user, credits=self.credits)
        capture["create_time"] = capture["update_time"] = _time(at)
        return capture

    def _event(self, step: Step) -> dict:
        kind = step.kind
        if kind == "approved":
            resource = pe.order(self.order_id, amount_cents=self.amount, user_id=self.user, credits=self.credits)
            event_type = "CHECKOUT.ORDER.APPROVED"
        elif kind in ("pending", "completed", "denied"):
            resource = self._capture(kind.upper(), step.at)
            event_type = f"PAYMENT.CAPTURE.{kind.upper()}"
        elif kind in ("refund", "reversal"):
            resource = pe.refund(f"REF{self.capture_id}{step.total}", self.capture_id, amount_cents=step.refund,
                                 total_refunded_cents=step.total)
            event_type = "PAYMENT.CAPTURE.REVERSED" if kind == "reversal" else "PAYMENT.CAPTURE.REFUNDED"
        else:
            resource = pe.dispute(f"PP-D-{self.capture_id}-{step.dispute}", self.capture_id, amount_cents=self.amount,
                                  outcome=step.outcome or None)
            event_type = "CUSTOMER.DISPUTE.RESOLVED" if kind == "dispute_resolved" else "CUSTOMER.DISPUTE.CREATED"
        return pe.event(event_type, resource, create_time=_time(step.at))

    # -- the API the lookup calls ---------------------------------------------------------

    def capture_order(self, order_id: str, *, request_id: str) -> dict:
        approval = next(event.id for event in self.events if event.type == "CHECKOUT.ORDER.APPROVED")
        assert (order_id, request_id) == (self.order_id, paypal.capture_request_id(self.order_id, approval))
        order = pe.order(self.order_id, status="COMPLETED", amount_cents=self.amount, user_id=self.user,
                         credits=self.credits, captures=[self.captured])
        return copy.deepcopy(order)


def _time(at: int) -> str:
    return (T0 + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def deliver(database, paypal_order: OneOrder, events: list, cuts: list[int] = ()) -> None:
    """The events cut into batches (one transaction each), then the capture the worker would ask for."""
    edges = [0, *sorted({c % (len(events) + 1) for c in cuts}), len(events)]
    for start, end in zip(edges, edges[1:], strict=False):
        if end > start:
            apply_batch(database, events[start:end])
    look_up_session(UnitOfWork(database, Rules()), paypal_order, "paypal", paypal_order.order_id)


def outcome(database, paypal_order: OneOrder) -> dict:
    user = paypal_order.user
    with database.transaction() as session:
        payment = session.scalars(select(Payment).where(Payment.user_id == user)).one()
        account = session.get(CreditAccount, user)
        balance = account.balance if account else 0
        ledger_total = session.scalar(select(func.coalesce(func.sum(CreditLedger.amount), 0)).where(CreditLedger.user_id == user))
        statuses = set(session.scalars(select(WebhookEvent.status).where(
            WebhookEvent.provider_event_id.in_([e.id for e in paypal_order.events]))))
    assert balance == ledger_total, "balance must equal the sum of the ledger"
    assert EventStatus.HELD not in statuses, "an event was left held"
    assert EventStatus.FAILED not in statuses
    return {
        "status": payment.status,
        "refunded_cents": payment.refunded_cents,
        "balance": balance,
        "purchased": account.total_purchased if account else 0,
        "taken_back": account.total_refunded if account else 0,
    }


def paypal_says(credits: int, amount: int, steps: list[Step]) -> tuple[str, int]:
    """Where the history ends by PayPal's own account: status and balance (the oracle for the in-order run)."""
    if steps[-1].kind == "denied":
        return "failed", 0
    refunded = max((s.total for s in steps if s.kind in ("refund", "reversal")), default=0)
    outcomes = {}
    for s in steps:
        if s.kind == "dispute_created":
            outcomes.setdefault(s.dispute, "open")
        elif s.kind == "dispute_resolved":
            outcomes[s.dispute] = "won" if s.outcome == "RESOLVED_SELLER_FAVOUR" else "lost"
    if "lost" in outcomes.values() or refunded == amount:
        return "refunded", 0
    if "open" in outcomes.values():
        return "disputed", credits - credits * refunded // amount
    return ("partially_refunded" if refunded else "completed"), credits - credits * refunded // amount


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), data=st.data())
def test_any_order_of_paypal_events_ends_like_paypal_order(database, history, data):
    credits, amount, steps = history
    first = OneOrder(credits, amount, steps)
    deliver(database, first, first.events)
    expected = outcome(database, first)
    assert (expected["status"], expected["balance"]) == paypal_says(credits, amount, steps)

    again = OneOrder(credits, amount, steps)
    order = data.draw(st.permutations(again.events), label="delivery order")
    twice = data.draw(st.lists(st.sampled_from(order), max_size=3), label="duplicates")
    cuts = data.draw(st.lists(st.integers(0, len(order) + len(twice)), max_size=4), label="batch cuts")
    deliver(database, again, order + twice, cuts)

    assert outcome(database, again) == expected
    assert expected["purchased"] == (0 if steps[-1].kind == "denied" else credits)
