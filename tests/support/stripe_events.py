"""Stripe events built from Stripe's published object shapes, signed as Stripe signs them."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

from providers.stripe import sign

FIXTURES = json.loads((Path(__file__).parent.parent / "fixtures/stripe/objects.json").read_text())


def stripe_object(kind: str, **changes) -> dict:
    """A copy of the fixture object of this kind with some fields changed."""
    obj = copy.deepcopy(FIXTURES[kind])
    obj.update(changes)
    return obj


def checkout_session(
    *,
    session_id: str | None = None,
    user_id: str | None = "user_1",
    credits: str | int | None = "100",
    paid: bool = True,
    amount_total: int = 1999,
    currency: str = "usd",
    payment_intent: str | None = None,
    client_reference_id: str | None = None,
) -> dict:
    metadata = {}
    if user_id is not None:
        metadata["user_id"] = user_id
    if credits is not None:
        metadata["credits"] = credits
    suffix = uuid.uuid4().hex[:24]
    return stripe_object(
        "checkout.session",
        id=session_id or f"cs_test_{suffix}",
        metadata=metadata,
        client_reference_id=client_reference_id,
        payment_status="paid" if paid else "unpaid",
        status="complete",
        amount_total=amount_total,
        amount_subtotal=amount_total,
        currency=currency,
        payment_intent=payment_intent or f"pi_{suffix}",
    )


def event(event_type: str, data_object: dict, *, event_id: str | None = None, created: int | None = None) -> dict:
    """An event envelope in the fixture's shape around one object."""
    envelope = copy.deepcopy(FIXTURES["event"])
    envelope.update(
        id=event_id or f"evt_{uuid.uuid4().hex[:24]}",
        type=event_type,
        created=created if created is not None else int(time.time()),
        data={"object": data_object},
        api_version="2025-10-29.clover",
    )
    return envelope


def completed_event(**session_fields) -> dict:
    return event("checkout.session.completed", checkout_session(**session_fields))


def encode(evt: dict) -> bytes:
    return json.dumps(evt, separators=(",", ":")).encode()


def signed_headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    return {
        "Stripe-Signature": sign(body, secret, timestamp if timestamp is not None else int(time.time())),
        "Content-Type": "application/json",
    }


# -- objects behind the other handled event types ------------------------------
# Each starts from the fixture of its kind (Stripe's published example object)
# and changes only the fields the scenario needs, so the shapes stay Stripe's.


def _suffix() -> str:
    return uuid.uuid4().hex[:24]


def charge(
    payment_intent: str,
    amount: int,
    amount_refunded: int,
    *,
    charge_id: str | None = None,
    currency: str = "usd",
) -> dict:
    """A captured charge of ``amount``; ``amount_refunded`` is cumulative, as Stripe sends it."""
    return stripe_object(
        "charge",
        id=charge_id or f"ch_{_suffix()}",
        payment_intent=payment_intent,
        amount=amount,
        amount_captured=amount,
        amount_refunded=amount_refunded,
        refunded=amount_refunded >= amount,
        captured=True,
        paid=True,
        currency=currency,
        status="succeeded",
    )


def dispute(
    payment_intent: str,
    dispute_id: str | None = None,
    status: str = "needs_response",
    amount: int = 1000,
    *,
    charge_id: str | None = None,
    reason: str = "fraudulent",
    currency: str = "usd",
) -> dict:
    """A dispute on the charge of a payment intent; ``status`` as Stripe names it (won, lost, …)."""
    return stripe_object(
        "dispute",
        id=dispute_id or f"dp_{_suffix()}",
        payment_intent=payment_intent,
        charge=charge_id or f"ch_{_suffix()}",
        status=status,
        amount=amount,
        reason=reason,
        currency=currency,
        is_charge_refundable=False,
    )


def payment_intent(
    pi_id: str,
    status: str,
    last_payment_error: dict | None = None,
    cancellation_reason: str | None = None,
    *,
    amount: int = 1000,
    currency: str = "usd",
) -> dict:
    return stripe_object(
        "payment_intent",
        id=pi_id,
        status=status,
        last_payment_error=last_payment_error,
        cancellation_reason=cancellation_reason,
        canceled_at=int(time.time()) if status == "canceled" else None,
        amount=amount,
        amount_received=amount if status == "succeeded" else 0,
        currency=currency,
        client_secret=f"{pi_id}_secret_test",
    )


def subscription(
    sub_id: str,
    status: str = "active",
    user_id: str | None = "user_1",
    credits: str | int | None = "500",
    price_id: str = "price_test_monthly",
    customer: str = "cus_test_1",
    *,
    current_period_end: int | None = None,
) -> dict:
    """A subscription with one item; metadata.user_id and metadata.credits when given."""
    metadata = {}
    if user_id is not None:
        metadata["user_id"] = user_id
    if credits is not None:
        metadata["credits"] = credits
    now = int(time.time())
    period_end = current_period_end if current_period_end is not None else now + 30 * 86400
    items = copy.deepcopy(FIXTURES["subscription"]["items"])
    item = items["data"][0]
    item.update(
        subscription=sub_id,
        current_period_start=period_end - 30 * 86400,
        current_period_end=period_end,
    )
    item["price"]["id"] = price_id
    item["plan"]["id"] = price_id
    items["url"] = f"/v1/subscription_items?subscription={sub_id}"
    ended = status in ("canceled", "incomplete_expired")
    return stripe_object(
        "subscription",
        id=sub_id,
        status=status,
        customer=customer,
        metadata=metadata,
        items=items,
        cancel_at_period_end=False,
        cancel_at=None,
        canceled_at=now if ended else None,
        ended_at=now if ended else None,
        start_date=period_end - 30 * 86400,
        billing_cycle_anchor=period_end - 30 * 86400,
        trial_start=None,
        trial_end=None,
    )


def invoice(
    invoice_id: str,
    subscription_id: str,
    user_id: str | None = None,
    credits: str | int | None = None,
    price_id: str = "price_test_monthly",
    amount_paid: int = 2000,
    payment_intent: str | None = None,
    *,
    customer: str = "cus_test_1",
    currency: str = "usd",
) -> dict:
    """A paid subscription invoice as current API versions send it: parent.subscription_details.

    ``payment_intent`` is the field older API versions had on the invoice; it is
    set only when given.
    """
    metadata = {}
    if user_id is not None:
        metadata["user_id"] = user_id
    if credits is not None:
        metadata["credits"] = credits
    now = int(time.time())
    lines = copy.deepcopy(FIXTURES["invoice"]["lines"])
    line = lines["data"][0]
    line.update(
        id=f"il_{_suffix()}",
        invoice=invoice_id,
        amount=amount_paid,
        subtotal=amount_paid,
        currency=currency,
        description=f"1 × plan (at {amount_paid} / month)",
        pricing={"type": "price_details", "price_details": {"price": price_id, "product": "prod_x"}},
        parent={
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": f"si_{_suffix()}",
            },
        },
    )
    lines["url"] = f"/v1/invoices/{invoice_id}/lines"
    changes = {
        "id": invoice_id,
        "status": "paid",
        "customer": customer,
        "currency": currency,
        "billing_reason": "subscription_cycle",
        "amount_due": amount_paid,
        "amount_paid": amount_paid,
        "amount_remaining": 0,
        "amount_overpaid": 0,
        "subtotal": amount_paid,
        "subtotal_excluding_tax": amount_paid,
        "total": amount_paid,
        "total_excluding_tax": amount_paid,
        "attempted": True,
        "attempt_count": 1,
        "last_finalization_error": None,
        "from_invoice": None,
        "lines": lines,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"subscription": subscription_id, "metadata": metadata},
        },
        "status_transitions": {"finalized_at": now, "marked_uncollectible_at": None, "paid_at": now, "voided_at": None},
    }
    if payment_intent is not None:
        changes["payment_intent"] = payment_intent
    return stripe_object("invoice", **changes)


def refund(
    payment_intent: str | None,
    amount: int,
    status: str = "succeeded",
    *,
    refund_id: str | None = None,
    charge_id: str | None = None,
    currency: str = "usd",
) -> dict:
    """One refund of a payment intent's charge; ``status`` as Stripe names it (pending, failed, …)."""
    changes = {
        "id": refund_id or f"re_{_suffix()}",
        "payment_intent": payment_intent,
        "charge": charge_id or f"ch_{_suffix()}",
        "amount": amount,
        "status": status,
        "currency": currency,
    }
    if status == "failed":
        changes["failure_reason"] = "lost_or_stolen_card"  # present on a failed refund only
    return stripe_object("refund", **changes)


# objects.json has no example of these two; they follow the example objects of
# Stripe's API reference (radar/early_fraud_warnings, invoice_payments), field for field.


def early_fraud_warning(
    payment_intent: str | None,
    *,
    warning_id: str | None = None,
    actionable: bool = True,
    fraud_type: str = "made_with_stolen_card",
    charge_id: str | None = None,
) -> dict:
    """A Radar early fraud warning on a payment intent's charge."""
    return {
        "id": warning_id or f"issfr_{_suffix()}",
        "object": "radar.early_fraud_warning",
        "actionable": actionable,
        "charge": charge_id or f"ch_{_suffix()}",
        "created": int(time.time()),
        "fraud_type": fraud_type,
        "livemode": False,
        "payment_intent": payment_intent,
    }


def invoice_payment(
    invoice_id: str | None,
    payment_intent: str | None,
    *,
    payment_type: str = "payment_intent",
    amount_paid: int = 2000,
    currency: str = "usd",
) -> dict:
    """What paid an invoice (current API versions); ``payment.type`` names the field to read."""
    now = int(time.time())
    payment: dict = {"type": payment_type}
    if payment_type == "payment_intent":
        payment["payment_intent"] = payment_intent
    elif payment_type == "charge":
        payment["charge"] = f"ch_{_suffix()}"
    return {
        "id": f"inpay_{_suffix()}",
        "object": "invoice_payment",
        "amount_paid": amount_paid,
        "amount_requested": amount_paid,
        "created": now,
        "currency": currency,
        "invoice": invoice_id,
        "is_default": True,
        "livemode": False,
        "payment": payment,
        "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": now},
    }
