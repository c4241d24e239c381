"""PayPal recovery against a fake PayPal: the sweep through the Orders API, reconciliation through the event list.

In process (the unit of work on the real PostgreSQL); a fake PayPal of the
test's own, so the event list holds this test's events only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from application.batch import Incoming
from application.lookups import look_up_session
from application.paypal_recovery import PayPalRecovery
from application.tracker import PaymentTracker
from application.unit import UnitOfWork
from models.enums import EventStatus, PaymentStatus
from models.tables import CreditAccount, Payment, ProviderCursor, WebhookEvent
from providers import paypal
from providers.errors import ProviderRequestError, ProviderUnavailableError
from providers.paypal_api import PayPalAPI
from tests.conftest import STARTER
from tests.support import paypal_events as pe
from tests.support.fake_paypal import FakePayPal

SWEEP = {"min_age": timedelta(0), "expiry_grace": timedelta(minutes=10)}
RECONCILE = {"overlap": timedelta(minutes=10), "initial_lookback": timedelta(hours=1)}


@pytest.fixture
def fake():
    with FakePayPal() as fake_paypal:
        yield fake_paypal


@pytest.fixture
def api(fake):
    client = PayPalAPI(fake.client_id, fake.client_secret, fake.url, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def unit(database, settings):
    return UnitOfWork(database, settings.rules())


@pytest.fixture
def recovery(unit, api):
    return PayPalRecovery(unit, api)


def later() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=1)


def pending_order(unit, settings, api, user: str, *, credits: int = 100) -> str:
    """An order created and recorded pending, as POST /api/checkout does."""
    order = api.create_order(amount_cents=1000, currency="USD", user_id=user, credits=credits, request_id=str(uuid.uuid4()))
    PaymentTracker(unit, settings).create_pending_payment(
        user_id=user, amount_cents=1000, currency="usd", credits=credits, session_id=order["id"], provider="paypal"
    )
    return order["id"]


def state(database, order_id: str) -> tuple[str, int]:
    with database.transaction() as session:
        payment = session.scalars(select(Payment).where(Payment.provider_session_id == order_id)).one()
        balance = session.scalar(select(CreditAccount.balance).where(CreditAccount.user_id == payment.user_id)) or 0
        return payment.status, balance


def test_the_sweep_credits_an_order_paypal_captured_whose_webhooks_never_came(recovery, unit, settings, fake, api, database):
    order_id = pending_order(unit, settings, api, "u_sweep")
    fake.approve(order_id)
    api.capture_order(order_id)

    report = recovery.sweep_pending(**SWEEP, now=later())

    assert (report.checked, report.completed) == (1, 1)
    assert state(database, order_id) == (PaymentStatus.COMPLETED, 100)
    assert recovery.sweep_pending(**SWEEP, now=later()).checked == 0  # nothing pending any more


def test_the_sweep_follows_a_pending_capture_until_it_clears(recovery, unit, settings, fake, api, database):
    order_id = pending_order(unit, settings, api, "u_pending")
    fake.pend_capture.add(order_id)
    fake.approve(order_id)
    capture_id = api.capture_order(order_id)["purchase_units"][0]["payments"]["captures"][0]["id"]

    assert recovery.sweep_pending(**SWEEP, now=later()).still_open == 1
    assert state(database, order_id) == (PaymentStatus.PROCESSING, 0)

    fake.complete_capture(capture_id)
    assert recovery.sweep_pending(**SWEEP, now=later() + timedelta(minutes=2)).completed == 1  # past the lease
    assert state(database, order_id) == (PaymentStatus.COMPLETED, 100)


def test_an_approval_nobody_captured_is_captured_through_the_lookup(recovery, unit, settings, fake, api, database):
    order_id = pending_order(unit, settings, api, "u_approved")
    fake.approve(order_id)  # the approval's webhook is lost

    report = recovery.sweep_pending(**SWEEP, now=later())

    assert report.decisions[0][2] == "capture requested"
    with database.transaction() as session:
        held = session.scalars(select(WebhookEvent).where(WebhookEvent.status == EventStatus.HELD)).one()
        assert held.hold_key == f"paypal:lookup:{order_id}"
    look_up_session(unit, api, "paypal", order_id)  # what the worker does after the sweep's commit
    assert state(database, order_id) == (PaymentStatus.COMPLETED, 100)
    assert fake.orders[order_id]["status"] == "COMPLETED"


def test_the_sweep_stops_when_paypal_is_away_and_leaves_the_rest(recovery, unit, settings, fake, api, database):
    order_id = pending_order(unit, settings, api, "u_outage")
    fake.outage(True)
    try:
        report = recovery.sweep_pending(**SWEEP, now=later())
    finally:
        fake.outage(False)
    assert report.unavailable and report.checked == 0
    with database.transaction() as session:
        assert session.scalars(select(Payment.next_check_at)).one() is None  # claim given back
    assert state(database, order_id) == (PaymentStatus.PENDING, 0)


def test_reconciliation_applies_the_events_the_inbox_lacks_and_moves_the_cursor(recovery, fake, api, database):
    order = api.create_order(amount_cents=1000, currency="USD", user_id="u_rec", credits=100, request_id="r-rec")
    fake.approve(order["id"])
    capture_id = api.capture_order(order["id"])["purchase_units"][0]["payments"]["captures"][0]["id"]
    fake.refund(capture_id, 500)
    fake.events.append({**pe.event("PAYMENT.CAPTURE.COMPLETED"), "event_type": "PAYMENT.ORDER.CREATED"})  # not ours

    report = recovery.reconcile_events(**RECONCILE)

    assert (report["listed"], report["missing"], report["applied"]) == (4, 3, 3)
    assert state(database, order["id"]) == (PaymentStatus.PARTIALLY_REFUNDED, 50)
    with database.transaction() as session:
        cursor = session.scalar(select(ProviderCursor.last_event_created_at).where(ProviderCursor.provider == "paypal"))
        sources = set(session.scalars(select(WebhookEvent.source)))
    assert cursor is not None and sources == {"reconcile"}
    again = recovery.reconcile_events(**RECONCILE)
    assert (again["missing"], again["applied"]) == (0, 0)


def test_reconciliation_with_paypal_away_keeps_the_cursor(recovery, fake, database):
    from providers.errors import ProviderUnavailableError

    fake.outage(True)
    try:
        with pytest.raises(ProviderUnavailableError):
            recovery.reconcile_events(**RECONCILE)
    finally:
        fake.outage(False)
    with database.transaction() as session:
        assert session.scalar(select(ProviderCursor).where(ProviderCursor.provider == "paypal")) is None


def test_verify_asks_paypal_about_one_order_and_grants_once(recovery, unit, settings, fake, api, database):
    order_id = pending_order(unit, settings, api, "u_verify")
    fake.approve(order_id)
    api.capture_order(order_id)

    first = recovery.verify(order_id)
    again = recovery.verify(order_id)

    assert (first["payment_verified"], first["status"], first["credits_added"], first["balance"]) == (True, "completed", 100, 100)
    assert (first["provider_status"], first["provider_payment_status"]) == ("COMPLETED", "COMPLETED")
    assert (again["credits_added"], again["balance"]) == (0, 100)


def checkout_order(unit, settings, api, user: str) -> str:
    """An order made through POST /api/checkout's path: recorded pending with PAYPAL_ORDER_EXPIRY_SECONDS to live."""
    shop = settings.replace(credit_packages={"starter": STARTER}, checkout_success_url="https://shop.example/ok")
    return PaymentTracker(unit, shop, paypal_api=api).create_checkout(
        user_id=user, package_id="starter", provider="paypal")["session_id"]


def test_an_order_nobody_approves_expires_once_overdue_and_an_approval_after_all_still_pays(
    recovery, unit, settings, fake, api, database
):
    order_id = checkout_order(unit, settings, api, "u_lapse")
    expiry = timedelta(seconds=settings.paypal_order_expiry_seconds)

    at_expiry = recovery.sweep_pending(**SWEEP, now=datetime.now(UTC) + expiry)
    assert (at_expiry.checked, at_expiry.still_open, at_expiry.expired) == (1, 1, 0)  # the grace is not over
    assert state(database, order_id) == (PaymentStatus.PENDING, 0)

    overdue = recovery.sweep_pending(**SWEEP, now=datetime.now(UTC) + expiry + SWEEP["expiry_grace"] + timedelta(seconds=5))
    assert overdue.decisions == [(overdue.decisions[0][0], order_id, "expired")]
    assert state(database, order_id) == (PaymentStatus.EXPIRED, 0)
    assert recovery.sweep_pending(**SWEEP, now=datetime.now(UTC) + 2 * expiry).checked == 0  # not asked about again

    fake.approve(order_id)  # the buyer comes back after all
    api.capture_order(order_id)
    recovery.verify(order_id)
    assert state(database, order_id) == (PaymentStatus.COMPLETED, STARTER.credits)


def test_an_overdue_order_paypal_no_longer_knows_expires(recovery, unit, settings, fake, api, database):
    order_id = checkout_order(unit, settings, api, "u_gone")
    with fake.lock:
        del fake.orders[order_id]
    expiry = timedelta(seconds=settings.paypal_order_expiry_seconds)

    early = recovery.sweep_pending(**SWEEP, now=later())
    assert (early.checked, len(early.errors)) == (0, 1)  # not overdue: an unknown id is asked about again
    assert state(database, order_id) == (PaymentStatus.PENDING, 0)

    overdue = recovery.sweep_pending(**SWEEP, now=datetime.now(UTC) + expiry + SWEEP["expiry_grace"] + timedelta(seconds=5))
    assert (overdue.checked, overdue.expired, overdue.errors) == (1, 1, [])
    assert state(database, order_id) == (PaymentStatus.EXPIRED, 0)
    with database.transaction() as session:
        [event_id] = session.scalars(select(WebhookEvent.provider_event_id).where(WebhookEvent.provider == "paypal",
                                                                                   WebhookEvent.event_type == "PAYHOOKS.ORDER.EXPIRED"))
    assert event_id == f"sweep:{order_id}:GONE:expired"


def test_verify_of_an_approved_order_captures_it_before_answering(recovery, unit, settings, fake, api, database):
    order_id = checkout_order(unit, settings, api, "u_return_page")
    fake.approve(order_id)  # the buyer is back on the return page before any webhook

    answer = recovery.verify(order_id)

    assert (answer["payment_verified"], answer["status"], answer["credits_added"], answer["balance"]) == (
        True, "completed", STARTER.credits, STARTER.credits)
    assert [path for method, path, _ in fake.requests if method == "POST" and path.endswith("/capture")] == [
        f"/v2/checkout/orders/{order_id}/capture"]
    assert recovery.verify(order_id)["credits_added"] == 0  # once


class _CaptureFails(PayPalAPI):
    failure: Exception

    def capture_order(self, order_id, *, request_id=None):
        raise self.failure


@pytest.mark.parametrize("failure", [ProviderUnavailableError("PayPal is away (test)"), RuntimeError("a bug (test)")],
                         ids=["paypal-away", "unexpected"])
def test_verify_that_cannot_capture_now_answers_pending_and_leaves_the_approval_held(
    unit, settings, fake, api, database, failure
):
    order_id = checkout_order(unit, settings, api, f"u_capture_{type(failure).__name__}")
    fake.approve(order_id)
    away = _CaptureFails(fake.client_id, fake.client_secret, fake.url, max_retries=0)
    away.failure = failure
    try:
        answer = PayPalRecovery(unit, away).verify(order_id)
    finally:
        away.close()

    assert (answer["payment_verified"], answer["status"], answer["credits_added"]) == (False, "pending", 0)
    with database.transaction() as session:
        held = session.scalars(select(WebhookEvent.status).where(WebhookEvent.provider_event_id.like(f"verify:{order_id}:%")))
        assert list(held) == [EventStatus.HELD]  # the periodic retry of held events captures it later
    look_up_session(unit, api, "paypal", order_id)
    assert state(database, order_id) == (PaymentStatus.COMPLETED, STARTER.credits)


def test_an_overdue_order_with_a_capture_on_its_way_is_never_expired(recovery, unit, settings, fake, api, database):
    order_id = checkout_order(unit, settings, api, "u_echeck")
    fake.approve(order_id)
    fake.pend_capture.add(order_id)  # an eCheck: the capture clears days later
    api.capture_order(order_id)
    recovery.verify(order_id)
    assert state(database, order_id) == (PaymentStatus.PROCESSING, 0)
    with fake.lock:
        del fake.orders[order_id]  # PayPal answers 404 (new REST credentials, say)

    overdue = recovery.sweep_pending(
        **SWEEP, now=datetime.now(UTC) + timedelta(seconds=settings.paypal_order_expiry_seconds, minutes=11))

    assert (overdue.checked, overdue.expired, len(overdue.errors)) == (0, 0, 1)
    assert state(database, order_id) == (PaymentStatus.PROCESSING, 0)


def test_an_order_the_host_recorded_without_an_expiry_gets_paypals(recovery, unit, settings, fake, api, database):
    order_id = pending_order(unit, settings, api, "u_recorded")  # POST /api/payments with no expires_at

    overdue = recovery.sweep_pending(
        **SWEEP, now=datetime.now(UTC) + timedelta(seconds=settings.paypal_order_expiry_seconds, minutes=11))

    assert overdue.expired == 1
    assert state(database, order_id) == (PaymentStatus.EXPIRED, 0)


def test_a_declined_card_is_tried_once_per_approval_and_a_new_approval_is_captured(
    recovery, unit, settings, fake, api, database
):
    order_id = checkout_order(unit, settings, api, "u_declined")
    fake.approve(order_id)
    fake.declines.add(order_id)  # the buyer's card is refused at capture (INSTRUMENT_DECLINED)

    declined = recovery.verify(order_id)
    assert (declined["status"], declined["credits_added"]) == ("pending", 0)  # the approval waits, held
    for _ in range(2):  # the periodic retry of held events
        with pytest.raises(ProviderRequestError, match="no capture yet"):
            look_up_session(unit, api, "paypal", order_id)

    captures = [h.get("PayPal-Request-Id") or h.get("Paypal-Request-Id")
                for method, path, h in fake.requests if method == "POST" and path.endswith(f"{order_id}/capture")]
    assert len(captures) == 3 and len(set(captures)) == 1  # one request id: PayPal answers it with the decline
    assert order_id not in fake.declines  # and the card itself was tried once
    assert state(database, order_id) == (PaymentStatus.PENDING, 0)

    # Sent back to PayPal (PayPal's advice after a decline), the buyer approves with another funding
    # source; PayPal's new CHECKOUT.ORDER.APPROVED is held like the first, and its capture has an id of its own.
    approved_again = paypal.parse_event(pe.encode(fake.reapprove(order_id)))
    assert unit.apply_one(Incoming(approved_again, "webhook")).status == EventStatus.HELD
    look_up_session(unit, api, "paypal", order_id)  # what the worker does after that commit

    assert state(database, order_id) == (PaymentStatus.COMPLETED, STARTER.credits)
    captures = [h.get("PayPal-Request-Id") or h.get("Paypal-Request-Id")
                for method, path, h in fake.requests if method == "POST" and path.endswith(f"{order_id}/capture")]
    assert captures[-1] == paypal.capture_request_id(order_id, approved_again.id) != captures[0]
