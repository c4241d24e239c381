"""PayPal end to end: signed deliveries → /webhooks/paypal → Redis → the real worker → PostgreSQL.

The run's fake PayPal (tests/conftest.py ``paypal_fake``) plays PayPal: it
records and signs each event as PayPal would, and the workers capture
approved orders there. Every flow of issue 11 ends in the right status and
balance whatever order its events arrive in, each delivered twice.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from models.enums import EventStatus, PaymentStatus
from models.tables import CreditAccount, Payment, WebhookEvent
from providers import paypal
from providers.paypal_api import PayPalAPI
from tests.support.processes import wait_until, wait_worker_idle


@pytest.fixture
def api(paypal_fake):
    client = PayPalAPI(paypal_fake.client_id, paypal_fake.client_secret, paypal_fake.url)
    yield client
    client.close()


def deliver(client, paypal_fake, event_id: str) -> None:
    body, headers = paypal_fake.delivery(event_id)
    response = client.post("/webhooks/paypal", data=body, headers=headers)
    assert response.status_code == 200, response.get_json()


def new_order(api, user_id: str, *, amount_cents: int = 1000, credits: int = 100) -> str:
    order = api.create_order(amount_cents=amount_cents, currency="USD", user_id=user_id, credits=credits,
                             request_id=f"test-{uuid.uuid4()}")
    return order["id"]


def outcome(database, user_id: str) -> tuple[str | None, int, int]:
    """(payment status, balance, events not yet settled) of a user's one PayPal payment."""
    with database.transaction() as session:
        status = session.scalar(select(Payment.status).where(Payment.user_id == user_id, Payment.provider == "paypal"))
        balance = session.scalar(select(CreditAccount.balance).where(CreditAccount.user_id == user_id)) or 0
        unsettled = session.scalar(
            select(func.count()).select_from(WebhookEvent).where(
                WebhookEvent.provider == "paypal",
                WebhookEvent.status.in_([EventStatus.RECEIVED, EventStatus.HELD]),
            )
        )
    return status, balance, unsettled


def test_an_approved_order_is_captured_by_the_worker_once(client, worker, database, paypal_fake, api, redis_client):
    user = f"pp_capture_{uuid.uuid4().hex[:6]}"
    order_id = new_order(api, user)
    approved = paypal_fake.approve(order_id)

    with ThreadPoolExecutor(3) as pool:  # the same approval, three times at once
        list(pool.map(lambda _: deliver(client, paypal_fake, approved["id"]), range(3)))

    wait_until(lambda: outcome(database, user)[:2] == (PaymentStatus.COMPLETED, 100), what="order captured and granted")
    captures = [h for method, path, h in paypal_fake.requests if path.endswith(f"/v2/checkout/orders/{order_id}/capture")]
    assert captures and {h.get("Paypal-Request-Id") or h.get("PayPal-Request-Id") for h in captures} == {
        paypal.capture_request_id(order_id, approved["id"])  # three deliveries of one approval: one id
    }
    assert len(paypal_fake.orders[order_id]["purchase_units"][0]["payments"]["captures"]) == 1
    # PayPal's own PAYMENT.CAPTURE.COMPLETED follows: nothing more is granted
    completed = next(e for e in paypal_fake.events if e["event_type"] == "PAYMENT.CAPTURE.COMPLETED"
                     and e["resource"].get("supplementary_data", {}).get("related_ids", {}).get("order_id") == order_id)
    deliver(client, paypal_fake, completed["id"])
    wait_until(lambda: outcome(database, user)[2] == 0, what="capture event settled")
    assert outcome(database, user)[:2] == (PaymentStatus.COMPLETED, 100)
    wait_worker_idle(redis_client)


# -- every flow, in any order, duplicated --------------------------------------------------


def _captured(paypal_fake, api, user: str, *, pending: bool = False) -> tuple[list[str], str]:
    """Approve and capture an order at the fake; the ids of the events that recorded, and the capture id."""
    order_id = new_order(api, user)
    if pending:
        paypal_fake.pend_capture.add(order_id)
    start = len(paypal_fake.events)
    paypal_fake.approve(order_id)
    order = api.capture_order(order_id)
    capture_id = order["purchase_units"][0]["payments"]["captures"][0]["id"]
    return [e["id"] for e in paypal_fake.events[start:]], capture_id


def purchase(fake, api, user):
    events, _ = _captured(fake, api, user)
    return events, (PaymentStatus.COMPLETED, 100)


def pending_then_completed(fake, api, user):
    events, capture_id = _captured(fake, api, user, pending=True)
    return events + [fake.complete_capture(capture_id)["id"]], (PaymentStatus.COMPLETED, 100)


def pending_then_denied(fake, api, user):
    events, capture_id = _captured(fake, api, user, pending=True)
    return events + [fake.deny_capture(capture_id)["id"]], (PaymentStatus.FAILED, 0)


def partial_refund(fake, api, user):
    events, capture_id = _captured(fake, api, user)
    return events + [fake.refund(capture_id, 250)["id"]], (PaymentStatus.PARTIALLY_REFUNDED, 75)


def two_partial_refunds_make_a_full_one(fake, api, user):
    events, capture_id = _captured(fake, api, user)
    refunds = [fake.refund(capture_id, 400)["id"], fake.refund(capture_id, 600)["id"]]
    return events + refunds, (PaymentStatus.REFUNDED, 0)


def full_refund(fake, api, user):
    events, capture_id = _captured(fake, api, user)
    return events + [fake.refund(capture_id)["id"]], (PaymentStatus.REFUNDED, 0)


def reversal(fake, api, user):
    events, capture_id = _captured(fake, api, user)
    return events + [fake.refund(capture_id, reversal=True)["id"]], (PaymentStatus.REFUNDED, 0)


def dispute_open(fake, api, user):
    events, capture_id = _captured(fake, api, user)
    return events + [fake.open_dispute(capture_id)["id"]], (PaymentStatus.DISPUTED, 100)


def dispute_lost(fake, api, user):
    events, capture_id = _captured(fake, api, user)
    created = fake.open_dispute(capture_id)
    resolved = fake.resolve_dispute(created, "RESOLVED_BUYER_FAVOUR")
    return events + [created["id"], resolved["id"]], (PaymentStatus.REFUNDED, 0)


def dispute_won(fake, api, user):
    events, capture_id = _captured(fake, api, user)
    created = fake.open_dispute(capture_id)
    resolved = fake.resolve_dispute(created, "RESOLVED_SELLER_FAVOUR")
    return events + [created["id"], resolved["id"]], (PaymentStatus.COMPLETED, 100)


def approval_reversed(fake, api, user):
    """Approved, never captured in time: PayPal voids the order (the worker's capture finds it voided)."""
    order_id = new_order(api, user)
    approved = fake.approve(order_id)["id"]
    time.sleep(0.005)  # hours apart at PayPal; in the same millisecond the tie would go to "cancelled"
    return [approved, fake.reverse_approval(order_id)["id"]], (PaymentStatus.FAILED, 0)


FLOWS: list[Callable] = [
    purchase, approval_reversed, pending_then_completed, pending_then_denied, partial_refund, two_partial_refunds_make_a_full_one,
    full_refund, reversal, dispute_open, dispute_lost, dispute_won,
]


@pytest.mark.parametrize("order", ["as_sent", "reversed", "shuffled"])
def test_every_flow_ends_right_in_any_order_and_duplicated(client, worker, database, paypal_fake, api, order, redis_client):
    rng = random.Random(order)
    expected, deliveries = {}, []
    for flow in FLOWS:
        user = f"pp_{flow.__name__}_{uuid.uuid4().hex[:6]}"
        events, expected[user] = flow(paypal_fake, api, user)
        if order == "reversed":
            events = events[::-1]
        elif order == "shuffled":
            rng.shuffle(events)
        deliveries.append(events + events)  # every event twice

    # Interleave the flows; each flow's events keep the order chosen above.
    while any(deliveries):
        for events in deliveries:
            if events:
                deliver(client, paypal_fake, events.pop(0))

    got: dict = {}

    def finished():
        got.update({user: outcome(database, user)[:2] for user in expected})
        return got == expected and outcome(database, next(iter(expected)))[2] == 0

    try:
        wait_until(finished, timeout=60, what="every PayPal flow settled")
    except AssertionError:
        assert got == expected  # says which flow
        raise
    with database.transaction() as session:
        failed = session.scalar(select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == EventStatus.FAILED))
    assert failed == 0
    wait_worker_idle(redis_client)
