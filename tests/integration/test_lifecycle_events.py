"""Every handled Stripe event type, end to end: signed HTTP → Redis → the real worker → PostgreSQL.

Each test delivers its events one at a time, waiting for each to be settled in
the inbox (processed, ignored, failed, or held — held is settled for now), then
asserts on the rows the events produced and on the credits API. Every test
ends by checking that each account's balance is the sum of its ledger.

Events are built in the provider's order and stamped with increasing
``created`` times as they are built (``Clock``); out-of-order tests build in
that order and deliver in another.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from application.tracker import PaymentTracker
from application.unit import UnitOfWork
from infra.settings import Settings
from models.enums import EventStatus, PaymentStatus
from models.rules import Rules
from models.tables import (
    CreditAccount,
    CreditLedger,
    Payment,
    PaymentAttempt,
    PaymentStatusHistory,
    Subscription,
    WebhookEvent,
)
from tests.conftest import API_TOKEN, PRIMARY_SECRET
from tests.support.processes import wait_until
from tests.support.stripe_events import (
    charge,
    checkout_session,
    dispute,
    encode,
    event,
    invoice,
    payment_intent,
    signed_headers,
    subscription,
)

PROCESSED, IGNORED, HELD, FAILED = (
    EventStatus.PROCESSED,
    EventStatus.IGNORED,
    EventStatus.HELD,
    EventStatus.FAILED,
)


# -- fixtures and helpers ---------------------------------------------------------


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def user() -> str:
    return uid("user")


class Clock:
    """Increasing provider ``created`` times, one per event built."""

    def __init__(self) -> None:
        self._ticks = itertools.count(int(time.time()) - 3600)

    def __call__(self) -> int:
        return next(self._ticks)


@dataclass(frozen=True)
class Inbox:
    status: str
    attempts: int
    last_error: str | None
    hold_key: str | None


@dataclass(frozen=True)
class Entry:
    kind: str
    amount: int
    idempotency_key: str
    cause: str


class Stripe:
    """Builds events, delivers them through the receiver, and reads what they changed."""

    def __init__(self, client, database) -> None:
        self.client = client
        self.database = database
        self.clock = Clock()

    # -- events -------------------------------------------------------------

    def event(self, event_type: str, obj: dict) -> dict:
        return event(event_type, obj, created=self.clock())

    def completed(
        self,
        user_id: str,
        *,
        paid: bool = True,
        credits="100",
        amount_total: int = 1000,
        pi=None,
        session_id=None,
    ) -> dict:
        return self.event(
            "checkout.session.completed",
            checkout_session(
                session_id=session_id,
                user_id=user_id,
                credits=credits,
                paid=paid,
                amount_total=amount_total,
                payment_intent=pi,
            ),
        )

    def refunded(self, pi: str, amount: int, amount_refunded: int) -> dict:
        return self.event("charge.refunded", charge(pi, amount, amount_refunded))

    def again(self, evt: dict) -> dict:
        """The same object in a new event (a new id and a later created time)."""
        return self.event(evt["type"], evt["data"]["object"])

    # -- delivery -----------------------------------------------------------

    def post(self, evt: dict) -> None:
        body = encode(evt)
        response = self.client.post(
            "/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET)
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"received": True, "id": evt["id"]}

    def deliver(self, *events: dict) -> list[Inbox]:
        """Post each event and wait until the worker has settled it (held counts as settled for now)."""
        rows = []
        for evt in events:
            before = self.inbox(evt)
            seen = before.attempts if before else 0
            self.post(evt)

            def settled(evt=evt, seen=seen):
                row = self.inbox(evt)
                return (
                    row
                    if row and row.attempts > seen and row.status != EventStatus.RECEIVED
                    else None
                )

            rows.append(wait_until(settled, timeout=20, what=f"{evt['type']} {evt['id']} settled"))
        return rows

    def deliver_one(self, evt: dict) -> Inbox:
        [row] = self.deliver(evt)
        return row

    # -- reading ------------------------------------------------------------

    def inbox(self, evt: dict) -> Inbox | None:
        with self.database.transaction() as session:
            row = session.scalars(
                select(WebhookEvent).where(WebhookEvent.provider_event_id == evt["id"])
            ).one_or_none()
            if row is None:
                return None
            return Inbox(row.status, row.attempts, row.last_error, row.hold_key)

    def payment(self, session_id: str) -> Payment | None:
        with self.database.transaction() as session:
            payment = session.scalars(
                select(Payment).where(Payment.provider_session_id == session_id)
            ).one_or_none()
            if payment is not None:
                session.expunge(payment)
            return payment

    def status(self, session_id: str) -> str:
        return self.payment(session_id).status

    def history(self, session_id: str) -> list[tuple[str, str, str]]:
        with self.database.transaction() as session:
            return [
                (h.from_status, h.to_status, h.cause)
                for h in session.scalars(
                    select(PaymentStatusHistory)
                    .join(Payment, Payment.id == PaymentStatusHistory.payment_id)
                    .where(Payment.provider_session_id == session_id)
                    .order_by(PaymentStatusHistory.id)
                )
            ]

    def ledger(self, user_id: str) -> list[Entry]:
        with self.database.transaction() as session:
            return [
                Entry(e.kind, e.amount, e.idempotency_key, e.cause)
                for e in session.scalars(
                    select(CreditLedger)
                    .where(CreditLedger.user_id == user_id)
                    .order_by(CreditLedger.id)
                )
            ]

    def attempts(self, session_id: str) -> list[tuple[str | None, str | None, str]]:
        with self.database.transaction() as session:
            return [
                (a.code, a.message, a.cause)
                for a in session.scalars(
                    select(PaymentAttempt)
                    .join(Payment, Payment.id == PaymentAttempt.payment_id)
                    .where(Payment.provider_session_id == session_id)
                    .order_by(PaymentAttempt.id)
                )
            ]

    def disputes(self, session_id: str) -> list[tuple[str, str, int | None, str | None, bool]]:
        disputes = self.payment(session_id).disputes
        return [
            (dispute_id, d["status"], d["amount_cents"], d["reason"], d["closed_at"] is not None)
            for dispute_id, d in sorted(disputes.items())
        ]

    def subscription(self, sub_id: str) -> Subscription | None:
        with self.database.transaction() as session:
            row = session.scalars(
                select(Subscription).where(Subscription.provider_subscription_id == sub_id)
            ).one_or_none()
            if row is not None:
                session.expunge(row)
            return row

    def count(self, table) -> int:
        with self.database.transaction() as session:
            return session.scalar(select(func.count()).select_from(table))

    def credits(self, user_id: str) -> dict:
        response = self.client.get(
            f"/api/users/{user_id}/credits", headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        assert response.status_code == 200
        return response.get_json()

    def balance(self, user_id: str) -> int:
        return self.credits(user_id)["balance"]

    def assert_balances_match_ledger(self) -> None:
        """For every account: balance = Σ ledger, and the totals = Σ grants and −Σ clawbacks."""
        grants = func.coalesce(
            func.sum(CreditLedger.amount).filter(CreditLedger.kind == "grant"), 0
        )
        clawbacks = func.coalesce(
            func.sum(-CreditLedger.amount).filter(CreditLedger.kind == "clawback"), 0
        )
        with self.database.transaction() as session:
            rows = session.execute(
                select(
                    CreditAccount.user_id,
                    CreditAccount.balance,
                    func.coalesce(func.sum(CreditLedger.amount), 0),
                    CreditAccount.total_purchased,
                    grants,
                    CreditAccount.total_refunded,
                    clawbacks,
                )
                .outerjoin(CreditLedger, CreditLedger.user_id == CreditAccount.user_id)
                .group_by(CreditAccount.user_id)
            ).all()
        wrong = [r for r in rows if r[1] != r[2] or r[3] != r[4] or r[5] != r[6]]
        assert not wrong, (
            f"(user, balance, Σ ledger, purchased, Σ grants, refunded, Σ clawbacks): {wrong}"
        )


@pytest.fixture
def stripe(client, worker, database) -> Stripe:
    return Stripe(client, database)


def grant_key(payment: Payment) -> str:
    return f"stripe:payment:{payment.id}:grant"


def clawback_key(payment: Payment, cause: str) -> str:
    """One clawback per payment and event that caused it."""
    return f"stripe:payment:{payment.id}:clawback:{cause}"


def settle_paid(
    stripe: Stripe, user: str, *, credits="100", amount_total: int = 1000
) -> tuple[dict, str, str]:
    """A completed, paid checkout: (event, session id, payment intent id)."""
    pi = uid("pi")
    evt = stripe.completed(user, credits=credits, amount_total=amount_total, pi=pi)
    assert stripe.deliver_one(evt).status == PROCESSED
    return evt, evt["data"]["object"]["id"], pi


# -- 1. paid checkout ------------------------------------------------------------


def test_paid_checkout_completes_and_grants_once(stripe, user):
    pi = uid("pi")
    evt = stripe.completed(user, credits="100", amount_total=1000, pi=pi)
    cs = evt["data"]["object"]["id"]

    row = stripe.deliver_one(evt)

    assert (row.status, row.last_error, row.hold_key) == (PROCESSED, None, None)
    payment = stripe.payment(cs)
    assert (payment.status, payment.user_id, payment.credits) == (
        PaymentStatus.COMPLETED,
        user,
        100,
    )
    assert (payment.amount_cents, payment.provider_payment_id, payment.refunded_cents) == (
        1000,
        pi,
        0,
    )
    assert payment.paid_at is not None
    assert stripe.history(cs) == [("pending", "completed", evt["id"])]
    assert stripe.ledger(user) == [Entry("grant", 100, grant_key(payment), evt["id"])]
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 100,
        "total_purchased": 100,
        "total_refunded": 0, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


# -- 2. asynchronous payment succeeds ----------------------------------------------


def test_unpaid_checkout_processes_then_async_success_grants_once(stripe, user):
    pi = uid("pi")
    completed = stripe.completed(user, paid=False, pi=pi)
    cs = completed["data"]["object"]["id"]

    assert stripe.deliver_one(completed).status == PROCESSED
    assert stripe.status(cs) == PaymentStatus.PROCESSING
    assert stripe.ledger(user) == []
    assert stripe.balance(user) == 0

    paid_session = dict(completed["data"]["object"], payment_status="paid")
    succeeded = stripe.event("checkout.session.async_payment_succeeded", paid_session)
    assert stripe.deliver_one(succeeded).status == PROCESSED

    payment = stripe.payment(cs)
    assert payment.status == PaymentStatus.COMPLETED
    assert stripe.history(cs) == [
        ("pending", "processing", completed["id"]),
        ("processing", "completed", succeeded["id"]),
    ]
    granted = [Entry("grant", 100, grant_key(payment), succeeded["id"])]
    assert stripe.ledger(user) == granted

    # Stripe redelivers the same event, and (as a separate event) says the same thing again.
    redelivered = stripe.deliver_one(succeeded)
    assert (redelivered.status, redelivered.attempts) == (PROCESSED, 2)
    assert stripe.deliver_one(stripe.again(succeeded)).status == PROCESSED

    assert stripe.status(cs) == PaymentStatus.COMPLETED
    assert len(stripe.history(cs)) == 2
    assert stripe.ledger(user) == granted
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 100,
        "total_purchased": 100,
        "total_refunded": 0, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


# -- 3. asynchronous payment fails -------------------------------------------------


def test_async_payment_failure_records_the_attempt_and_grants_nothing(stripe, user):
    pi = uid("pi")
    completed = stripe.completed(user, paid=False, pi=pi)
    cs = completed["data"]["object"]["id"]
    assert stripe.deliver_one(completed).status == PROCESSED

    error = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    }
    failed_session = dict(
        completed["data"]["object"],
        payment_intent=payment_intent(pi, "requires_payment_method", last_payment_error=error),
    )
    failed = stripe.event("checkout.session.async_payment_failed", failed_session)
    row = stripe.deliver_one(failed)

    assert (row.status, row.last_error) == (PROCESSED, None)
    payment = stripe.payment(cs)
    assert (payment.status, payment.paid_at) == (PaymentStatus.FAILED, None)
    assert stripe.history(cs) == [
        ("pending", "processing", completed["id"]),
        ("processing", "failed", failed["id"]),
    ]
    # decline_code is the most specific reason Stripe gives
    assert stripe.attempts(cs) == [
        ("insufficient_funds", "Your card has insufficient funds.", failed["id"])
    ]
    assert stripe.ledger(user) == []
    assert stripe.credits(user)["balance"] == 0
    stripe.assert_balances_match_ledger()


# -- 4. a declined attempt, then payment -------------------------------------------


def test_failed_attempt_then_later_payment_completes(stripe, user):
    pi = uid("pi")
    completed_unpaid = stripe.completed(user, paid=False, pi=pi)
    cs = completed_unpaid["data"]["object"]["id"]
    assert stripe.deliver_one(completed_unpaid).status == PROCESSED

    declined = stripe.event(
        "payment_intent.payment_failed",
        payment_intent(
            pi,
            "requires_payment_method",
            {"type": "card_error", "code": "card_declined", "message": "Your card was declined."},
        ),
    )
    assert stripe.deliver_one(declined).status == PROCESSED
    assert stripe.status(cs) == PaymentStatus.FAILED
    assert stripe.attempts(cs) == [("card_declined", "Your card was declined.", declined["id"])]
    assert stripe.balance(user) == 0

    paid = stripe.completed(user, paid=True, pi=pi, session_id=cs)
    assert stripe.deliver_one(paid).status == PROCESSED

    payment = stripe.payment(cs)
    assert payment.status == PaymentStatus.COMPLETED
    assert stripe.history(cs) == [
        ("pending", "processing", completed_unpaid["id"]),
        ("processing", "failed", declined["id"]),
        ("failed", "completed", paid["id"]),
    ]
    assert stripe.ledger(user) == [Entry("grant", 100, grant_key(payment), paid["id"])]
    assert stripe.attempts(cs) == [("card_declined", "Your card was declined.", declined["id"])]
    assert stripe.balance(user) == 100
    stripe.assert_balances_match_ledger()


def test_failed_attempt_before_the_checkout_is_known_is_held_then_kept_for_the_record(stripe, user):
    pi = uid("pi")
    declined = stripe.event(
        "payment_intent.payment_failed",
        payment_intent(
            pi,
            "requires_payment_method",
            {"type": "card_error", "code": "expired_card", "message": "Your card has expired."},
        ),
    )
    paid = stripe.completed(user, pi=pi)
    cs = paid["data"]["object"]["id"]

    row = stripe.deliver_one(declined)
    assert (row.status, row.hold_key) == (HELD, f"stripe:payment:{pi}")
    assert stripe.count(Payment) == 0

    assert stripe.deliver_one(paid).status == PROCESSED

    released = stripe.inbox(declined)
    assert (released.status, released.hold_key, released.last_error) == (PROCESSED, None, None)
    payment = stripe.payment(cs)
    assert payment.status == PaymentStatus.COMPLETED
    assert stripe.history(cs) == [("pending", "completed", paid["id"])]
    assert stripe.attempts(cs) == [("expired_card", "Your card has expired.", declined["id"])]
    assert stripe.ledger(user) == [Entry("grant", 100, grant_key(payment), paid["id"])]
    stripe.assert_balances_match_ledger()


# -- 5. expiry --------------------------------------------------------------------


def test_expired_unpaid_checkout_is_expired(stripe, user):
    session = checkout_session(
        user_id=user, credits="100", paid=False, amount_total=1000, payment_intent=None
    )
    session.update(status="expired", payment_intent=None)
    expired = stripe.event("checkout.session.expired", session)

    assert stripe.deliver_one(expired).status == PROCESSED

    payment = stripe.payment(session["id"])
    assert (payment.status, payment.paid_at, payment.user_id) == (PaymentStatus.EXPIRED, None, user)
    assert stripe.history(session["id"]) == [("pending", "expired", expired["id"])]
    assert stripe.ledger(user) == []
    assert stripe.balance(user) == 0
    stripe.assert_balances_match_ledger()


def test_expiry_of_a_paid_checkout_is_ignored_with_a_reason(stripe, user):
    paid, cs, _pi = settle_paid(stripe, user)
    session = dict(paid["data"]["object"], status="expired")
    expired = stripe.event("checkout.session.expired", session)

    row = stripe.deliver_one(expired)

    assert row.status == IGNORED
    assert row.last_error == "payment cannot go from completed to expired"
    assert stripe.status(cs) == PaymentStatus.COMPLETED
    assert stripe.history(cs) == [("pending", "completed", paid["id"])]
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 100,
        "total_purchased": 100,
        "total_refunded": 0, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


# -- 6. cancellation ---------------------------------------------------------------


@pytest.mark.parametrize("recorded_by", ["host_application", "unpaid_checkout"])
def test_canceled_payment_intent_cancels_an_unpaid_payment(stripe, database, user, recorded_by):
    pi = uid("pi")
    causes = []
    if recorded_by == "host_application":
        cs = uid("cs_test")
        PaymentTracker(UnitOfWork(database, Rules()), Settings()).create_pending_payment(
            user_id=user, amount_cents=1000, currency="usd", credits=100, session_id=cs, payment_id=pi,
            package_name="100 credits",
        )
        before = "pending"
    else:
        completed = stripe.completed(user, paid=False, pi=pi)
        cs = completed["data"]["object"]["id"]
        assert stripe.deliver_one(completed).status == PROCESSED
        causes.append(("pending", "processing", completed["id"]))
        before = "processing"
    assert stripe.status(cs) == before

    canceled = stripe.event(
        "payment_intent.canceled", payment_intent(pi, "canceled", cancellation_reason="abandoned")
    )
    assert stripe.deliver_one(canceled).status == PROCESSED

    payment = stripe.payment(cs)
    assert (payment.status, payment.paid_at) == (PaymentStatus.CANCELLED, None)
    assert stripe.history(cs) == [*causes, (before, "cancelled", canceled["id"])]
    assert stripe.ledger(user) == []
    assert stripe.balance(user) == 0
    stripe.assert_balances_match_ledger()


def test_cancellation_of_a_paid_payment_is_ignored_with_a_reason(stripe, user):
    _paid, cs, pi = settle_paid(stripe, user)
    canceled = stripe.event(
        "payment_intent.canceled", payment_intent(pi, "canceled", cancellation_reason="abandoned")
    )

    row = stripe.deliver_one(canceled)

    assert (row.status, row.last_error) == (
        IGNORED,
        "payment cannot go from completed to cancelled",
    )
    assert stripe.status(cs) == PaymentStatus.COMPLETED
    assert stripe.balance(user) == 100
    stripe.assert_balances_match_ledger()


# -- 7. refunds in steps -------------------------------------------------------------


def test_partial_then_full_refund_takes_back_what_was_granted(stripe, user):
    paid, cs, pi = settle_paid(stripe, user, credits="100", amount_total=1000)
    payment = stripe.payment(cs)

    quarter = stripe.refunded(pi, 1000, 250)
    assert stripe.deliver_one(quarter).status == PROCESSED
    assert stripe.status(cs) == PaymentStatus.PARTIALLY_REFUNDED
    assert stripe.payment(cs).refunded_cents == 250
    assert stripe.ledger(user)[1:] == [
        Entry("clawback", -25, clawback_key(payment, quarter["id"]), quarter["id"])
    ]
    assert stripe.balance(user) == 75

    full = stripe.refunded(pi, 1000, 1000)
    assert stripe.deliver_one(full).status == PROCESSED

    expected_ledger = [
        Entry("grant", 100, grant_key(payment), paid["id"]),
        Entry("clawback", -25, clawback_key(payment, quarter["id"]), quarter["id"]),
        Entry("clawback", -75, clawback_key(payment, full["id"]), full["id"]),
    ]
    expected_history = [
        ("pending", "completed", paid["id"]),
        ("completed", "partially_refunded", quarter["id"]),
        ("partially_refunded", "refunded", full["id"]),
    ]
    assert (stripe.status(cs), stripe.payment(cs).refunded_cents) == (PaymentStatus.REFUNDED, 1000)
    assert stripe.ledger(user) == expected_ledger
    assert stripe.history(cs) == expected_history
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 0,
        "total_purchased": 100,
        "total_refunded": 100, "frozen": 0
    }

    # the first refund event again: nothing changes
    redelivered = stripe.deliver_one(quarter)
    assert (redelivered.status, redelivered.attempts) == (PROCESSED, 2)
    assert (stripe.status(cs), stripe.payment(cs).refunded_cents) == (PaymentStatus.REFUNDED, 1000)
    assert stripe.ledger(user) == expected_ledger
    assert stripe.history(cs) == expected_history
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 0,
        "total_purchased": 100,
        "total_refunded": 100, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


def test_older_refund_event_delivered_late_does_not_lower_the_refunded_amount(stripe, user):
    """Refunds are cumulative: a charge.refunded saying 250 that arrives after one saying 500 changes nothing."""
    _paid, cs, pi = settle_paid(stripe, user, credits="100", amount_total=1000)
    payment = stripe.payment(cs)
    first = stripe.refunded(pi, 1000, 250)
    second = stripe.refunded(pi, 1000, 500)
    third = stripe.refunded(pi, 1000, 750)

    assert [r.status for r in stripe.deliver(second, first)] == [PROCESSED, PROCESSED]
    assert stripe.payment(cs).refunded_cents == 500
    assert stripe.deliver_one(third).status == PROCESSED

    assert stripe.payment(cs).refunded_cents == 750
    assert stripe.status(cs) == PaymentStatus.PARTIALLY_REFUNDED
    assert stripe.ledger(user)[1:] == [
        Entry("clawback", -50, clawback_key(payment, second["id"]), second["id"]),
        Entry("clawback", -25, clawback_key(payment, third["id"]), third["id"]),
    ]
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 25,
        "total_purchased": 100,
        "total_refunded": 75, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


# -- 8. rounding ------------------------------------------------------------------


def test_refund_rounding_takes_back_floor_of_the_target_and_exactly_all_at_the_end(stripe, user):
    paid, cs, pi = settle_paid(stripe, user, credits="10", amount_total=999)
    payment = stripe.payment(cs)
    refunds = [stripe.refunded(pi, 999, cumulative) for cumulative in (333, 666, 999)]

    assert [r.status for r in stripe.deliver(*refunds)] == [PROCESSED] * 3

    assert stripe.ledger(user) == [
        Entry("grant", 10, grant_key(payment), paid["id"]),
        Entry("clawback", -3, clawback_key(payment, refunds[0]["id"]), refunds[0]["id"]),
        Entry("clawback", -3, clawback_key(payment, refunds[1]["id"]), refunds[1]["id"]),
        Entry("clawback", -4, clawback_key(payment, refunds[2]["id"]), refunds[2]["id"]),
    ]
    assert stripe.status(cs) == PaymentStatus.REFUNDED
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 0,
        "total_purchased": 10,
        "total_refunded": 10, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


# -- 9. refund before the payment is known -------------------------------------------


def test_refund_before_completion_is_held_then_applied_with_the_completion(stripe, user):
    pi = uid("pi_Y")
    paid = stripe.completed(user, credits="100", amount_total=1000, pi=pi)
    cs = paid["data"]["object"]["id"]
    refund = stripe.refunded(pi, 1000, 1000)

    row = stripe.deliver_one(refund)

    assert (row.status, row.hold_key) == (HELD, f"stripe:payment:{pi}")
    assert row.last_error.startswith("held: ")
    assert stripe.count(Payment) == 0
    assert stripe.credits(user)["balance"] == 0

    assert stripe.deliver_one(paid).status == PROCESSED

    payment = stripe.payment(cs)
    assert (payment.status, payment.refunded_cents) == (PaymentStatus.REFUNDED, 1000)
    assert stripe.ledger(user) == [
        Entry("grant", 100, grant_key(payment), paid["id"]),
        Entry("clawback", -100, clawback_key(payment, refund["id"]), refund["id"]),
    ]
    assert stripe.history(cs) == [
        ("pending", "completed", paid["id"]),
        ("completed", "refunded", refund["id"]),
    ]
    released = stripe.inbox(refund)
    assert (released.status, released.hold_key, released.last_error) == (PROCESSED, None, None)
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 0,
        "total_purchased": 100,
        "total_refunded": 100, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


# -- 10. disputes ------------------------------------------------------------------


def test_won_dispute_returns_to_completed_and_lost_dispute_takes_all_credits(stripe, user):
    paid, cs, pi = settle_paid(stripe, user)
    dp = uid("dp")
    opened = stripe.event("charge.dispute.created", dispute(pi, dp, "needs_response", 1000))

    assert stripe.deliver_one(opened).status == PROCESSED
    assert stripe.status(cs) == PaymentStatus.DISPUTED
    assert stripe.disputes(cs) == [(dp, "open", 1000, "fraudulent", False)]
    assert stripe.balance(user) == 100  # credits are kept while the dispute is open

    won = stripe.event("charge.dispute.closed", dispute(pi, dp, "won", 1000))
    assert stripe.deliver_one(won).status == PROCESSED
    assert stripe.status(cs) == PaymentStatus.COMPLETED
    assert stripe.disputes(cs) == [(dp, "won", 1000, "fraudulent", True)]
    assert stripe.history(cs) == [
        ("pending", "completed", paid["id"]),
        ("completed", "disputed", opened["id"]),
        ("disputed", "completed", won["id"]),
    ]
    assert stripe.balance(user) == 100

    # another payment of the same user, whose dispute is lost
    paid2, cs2, pi2 = settle_paid(stripe, user)
    payment2 = stripe.payment(cs2)
    dp2 = uid("dp")
    opened2 = stripe.event("charge.dispute.created", dispute(pi2, dp2, "needs_response", 1000))
    lost2 = stripe.event("charge.dispute.closed", dispute(pi2, dp2, "lost", 1000))
    assert [r.status for r in stripe.deliver(opened2, lost2)] == [PROCESSED, PROCESSED]

    assert stripe.status(cs2) == PaymentStatus.REFUNDED
    assert stripe.disputes(cs2) == [(dp2, "lost", 1000, "fraudulent", True)]
    assert stripe.history(cs2) == [
        ("pending", "completed", paid2["id"]),
        ("completed", "disputed", opened2["id"]),
        ("disputed", "refunded", lost2["id"]),
    ]
    assert [e for e in stripe.ledger(user) if e.kind == "clawback"] == [
        Entry("clawback", -100, clawback_key(payment2, lost2["id"]), lost2["id"])
    ]
    assert stripe.status(cs) == PaymentStatus.COMPLETED  # the first payment is untouched
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 100,
        "total_purchased": 200,
        "total_refunded": 100, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


def test_lost_dispute_after_a_partial_refund_takes_back_only_the_rest(stripe, user):
    paid, cs, pi = settle_paid(stripe, user, credits="100", amount_total=1000)
    payment = stripe.payment(cs)
    dp = uid("dp")
    refund = stripe.refunded(pi, 1000, 250)
    opened = stripe.event("charge.dispute.created", dispute(pi, dp, "needs_response", 750))
    lost = stripe.event("charge.dispute.closed", dispute(pi, dp, "lost", 750))

    assert [r.status for r in stripe.deliver(refund, opened, lost)] == [PROCESSED] * 3

    assert stripe.status(cs) == PaymentStatus.REFUNDED
    assert stripe.history(cs) == [
        ("pending", "completed", paid["id"]),
        ("completed", "partially_refunded", refund["id"]),
        ("partially_refunded", "disputed", opened["id"]),
        ("disputed", "refunded", lost["id"]),
    ]
    assert stripe.ledger(user) == [
        Entry("grant", 100, grant_key(payment), paid["id"]),
        Entry("clawback", -25, clawback_key(payment, refund["id"]), refund["id"]),
        Entry("clawback", -75, clawback_key(payment, lost["id"]), lost["id"]),
    ]
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 0,
        "total_purchased": 100,
        "total_refunded": 100, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


# -- 11. dispute events out of order ------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "final", "balance"),
    [("lost", PaymentStatus.REFUNDED, 0), ("won", PaymentStatus.COMPLETED, 100)],
)
def test_dispute_closed_before_created_ends_closed(stripe, user, outcome, final, balance):
    paid, cs, pi = settle_paid(stripe, user)
    dp = uid("dp")
    opened = stripe.event("charge.dispute.created", dispute(pi, dp, "needs_response", 1000))
    closed = stripe.event("charge.dispute.closed", dispute(pi, dp, outcome, 1000))

    rows = stripe.deliver(closed, opened)

    assert [(r.status, r.last_error) for r in rows] == [(PROCESSED, None), (PROCESSED, None)]
    assert stripe.status(cs) == final
    assert [d[:4] for d in stripe.disputes(cs)] == [(dp, outcome, 1000, "fraudulent")]
    moved = [("completed", "refunded", closed["id"])] if outcome == "lost" else []
    assert stripe.history(cs) == [("pending", "completed", paid["id"]), *moved]
    assert stripe.balance(user) == balance
    stripe.assert_balances_match_ledger()


def test_dispute_first_seen_closed_records_when_it_closed(stripe, user):
    _paid, cs, pi = settle_paid(stripe, user)
    dp = uid("dp")
    closed = stripe.event("charge.dispute.closed", dispute(pi, dp, "lost", 1000))

    assert stripe.deliver_one(closed).status == PROCESSED

    assert stripe.disputes(cs) == [(dp, "lost", 1000, "fraudulent", True)]


# -- 12. subscriptions ----------------------------------------------------------------


def test_subscription_lifecycle_grants_per_paid_invoice(stripe, user):
    sub_id, price = uid("sub"), uid("price")
    period_end = int(time.time()) + 30 * 86400
    created = stripe.event(
        "customer.subscription.created",
        subscription(
            sub_id,
            "active",
            user_id=user,
            credits="500",
            price_id=price,
            customer="cus_life",
            current_period_end=period_end,
        ),
    )

    assert stripe.deliver_one(created).status == PROCESSED
    row = stripe.subscription(sub_id)
    assert (
        row.status,
        row.user_id,
        row.credits_per_period,
        row.price_id,
        row.provider_customer_id,
    ) == ("active", user, 500, price, "cus_life")
    assert row.current_period_end == datetime.fromtimestamp(period_end, UTC)
    assert stripe.balance(user) == 0

    in1 = stripe.event("invoice.paid", invoice(uid("in"), sub_id, price_id=price, amount_paid=2000))
    assert stripe.deliver_one(in1).status == PROCESSED
    payment1 = stripe.payment(in1["data"]["object"]["id"])
    assert (payment1.status, payment1.user_id, payment1.credits, payment1.amount_cents) == (
        PaymentStatus.COMPLETED,
        user,
        500,
        2000,
    )
    assert payment1.details == {"subscription_id": sub_id, "price_id": price}
    assert stripe.history(in1["data"]["object"]["id"]) == [("pending", "completed", in1["id"])]
    assert stripe.ledger(user) == [Entry("grant", 500, grant_key(payment1), in1["id"])]

    # the same invoice again: as a redelivery and as a new event
    assert stripe.deliver_one(in1).attempts == 2
    assert stripe.deliver_one(stripe.again(in1)).status == PROCESSED
    assert stripe.count(Payment) == 1
    assert stripe.balance(user) == 500

    # the next period
    renewed_end = period_end + 30 * 86400
    updated = stripe.event(
        "customer.subscription.updated",
        subscription(
            sub_id,
            "active",
            user_id=user,
            credits="500",
            price_id=price,
            customer="cus_life",
            current_period_end=renewed_end,
        ),
    )
    assert stripe.deliver_one(updated).status == PROCESSED
    assert stripe.subscription(sub_id).current_period_end == datetime.fromtimestamp(
        renewed_end, UTC
    )

    in2 = stripe.event("invoice.paid", invoice(uid("in"), sub_id, price_id=price, amount_paid=2000))
    assert stripe.deliver_one(in2).status == PROCESSED
    payment2 = stripe.payment(in2["data"]["object"]["id"])
    assert payment2.status == PaymentStatus.COMPLETED
    assert stripe.ledger(user) == [
        Entry("grant", 500, grant_key(payment1), in1["id"]),
        Entry("grant", 500, grant_key(payment2), in2["id"]),
    ]
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 1000,
        "total_purchased": 1000,
        "total_refunded": 0, "frozen": 0
    }

    deleted = stripe.event(
        "customer.subscription.deleted",
        subscription(
            sub_id,
            "canceled",
            user_id=user,
            credits="500",
            price_id=price,
            customer="cus_life",
            current_period_end=renewed_end,
        ),
    )
    assert stripe.deliver_one(deleted).status == PROCESSED
    assert stripe.subscription(sub_id).status == "canceled"
    assert stripe.balance(user) == 1000  # paid periods stay paid
    stripe.assert_balances_match_ledger()


def test_invoice_metadata_alone_is_enough_to_grant(stripe, user):
    sub_id = uid("sub")
    paid = stripe.event("invoice.paid", invoice(uid("in"), sub_id, user_id=user, credits="300"))

    assert stripe.deliver_one(paid).status == PROCESSED

    assert stripe.payment(paid["data"]["object"]["id"]).status == PaymentStatus.COMPLETED
    assert stripe.credits(user)["balance"] == 300
    stripe.assert_balances_match_ledger()


# -- 13. invoice before its subscription ---------------------------------------------


def test_invoice_before_its_subscription_is_held_then_granted(stripe, user):
    sub_id, price = uid("sub"), uid("price")
    created = stripe.event(
        "customer.subscription.created",
        subscription(sub_id, user_id=user, credits="500", price_id=price),
    )
    paid = stripe.event("invoice.paid", invoice(uid("in"), sub_id, price_id=price))
    invoice_id = paid["data"]["object"]["id"]

    row = stripe.deliver_one(paid)

    assert (row.status, row.hold_key) == (HELD, f"stripe:subscription:{sub_id}")
    assert stripe.count(Payment) == 0
    assert stripe.balance(user) == 0

    assert stripe.deliver_one(created).status == PROCESSED

    released = stripe.inbox(paid)
    assert (released.status, released.hold_key, released.last_error) == (PROCESSED, None, None)
    payment = stripe.payment(invoice_id)
    assert (payment.status, payment.user_id, payment.credits) == (
        PaymentStatus.COMPLETED,
        user,
        500,
    )
    assert stripe.ledger(user) == [Entry("grant", 500, grant_key(payment), paid["id"])]
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 500,
        "total_purchased": 500,
        "total_refunded": 0, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


def test_refund_and_invoice_before_the_subscription_are_released_in_a_chain(stripe, user):
    """Older API versions carry invoice.payment_intent: a refund of that payment waits for the invoice, which waits for the subscription."""
    sub_id, pi = uid("sub"), uid("pi")
    created = stripe.event(
        "customer.subscription.created", subscription(sub_id, user_id=user, credits="500")
    )
    paid = stripe.event(
        "invoice.paid", invoice(uid("in"), sub_id, amount_paid=2000, payment_intent=pi)
    )
    refund = stripe.refunded(pi, 2000, 2000)

    assert [(r.status, r.hold_key) for r in stripe.deliver(refund, paid)] == [
        (HELD, f"stripe:payment:{pi}"),
        (HELD, f"stripe:subscription:{sub_id}"),
    ]
    assert stripe.deliver_one(created).status == PROCESSED

    assert [stripe.inbox(e).status for e in (paid, refund)] == [PROCESSED, PROCESSED]
    invoice_id = paid["data"]["object"]["id"]
    payment = stripe.payment(invoice_id)
    assert (payment.status, payment.provider_payment_id) == (PaymentStatus.REFUNDED, pi)
    assert stripe.ledger(user) == [
        Entry("grant", 500, grant_key(payment), paid["id"]),
        Entry("clawback", -500, clawback_key(payment, refund["id"]), refund["id"]),
    ]
    assert stripe.credits(user) == {
        "user_id": user,
        "balance": 0,
        "total_purchased": 500,
        "total_refunded": 500, "frozen": 0
    }
    stripe.assert_balances_match_ledger()


def test_late_subscription_created_does_not_revive_a_deleted_subscription(stripe, user):
    sub_id = uid("sub")
    created = stripe.event(
        "customer.subscription.created", subscription(sub_id, user_id=user, credits="500")
    )
    deleted = stripe.event(
        "customer.subscription.deleted",
        subscription(sub_id, "canceled", user_id=user, credits="500"),
    )

    rows = stripe.deliver(deleted, created)

    assert rows[0].status == PROCESSED
    assert rows[1].status == IGNORED
    assert "older than the last subscription event applied" in rows[1].last_error
    assert stripe.subscription(sub_id).status == "canceled"
    stripe.assert_balances_match_ledger()


# -- 14. events that cannot be applied, or need nothing ---------------------------------


def test_invalid_metadata_fails_with_the_reason(stripe, user):
    bad = stripe.completed(user, credits="ten")

    row = stripe.deliver_one(bad)

    assert row.status == FAILED
    assert row.last_error == "metadata.credits is not a positive integer: a string of 3 characters"
    assert stripe.count(Payment) == 0
    assert stripe.credits(user)["balance"] == 0
    stripe.assert_balances_match_ledger()


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (
            lambda s: s.event("customer.created", s.completed("user_x")["data"]["object"]),
            "customer.created is not handled",
        ),
        (
            lambda s: s.event("charge.dispute.closed", dispute(uid("pi"), status="warning_closed")),
            "dispute closed without a won or lost outcome: nothing to take back",
        ),
        (
            lambda s: s.event("invoice.paid", dict(invoice(uid("in"), "sub_x"), parent=None)),
            "invoice is not for a subscription",
        ),
    ],
    ids=["unknown_type", "dispute_warning_closed", "invoice_without_subscription"],
)
def test_events_with_nothing_to_do_are_ignored_with_a_reason(stripe, build, reason):
    evt = build(stripe)

    row = stripe.deliver_one(evt)

    assert (row.status, row.last_error) == (IGNORED, reason)
    assert stripe.count(Payment) == 0
    assert stripe.count(CreditLedger) == 0
    stripe.assert_balances_match_ledger()
