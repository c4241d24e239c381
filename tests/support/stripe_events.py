"""Stripe events built from Stripe's published object shapes, signed as Stripe signs them.

Every object starts as a deep copy of the fixture of its kind
(``tests/fixtures/stripe/objects.json``, Stripe's own example objects) and
changes only the fields a scenario decides, so the shapes stay Stripe's.

Two shapes, because a webhook endpoint receives its events in the API version it
was created with and accounts on both sides of the 2025-03-31.basil breaking
changes exist (docs/STRIPE_SHAPES.md has the sources):

- ``shape="basil"`` (the default; ``providers.stripe.API_VERSION``): an invoice
  names its subscription in ``parent.subscription_details`` and has no
  ``payment_intent``/``charge``/``paid``; the link to the PaymentIntent comes as
  an ``invoice_payment`` object; invoice lines carry ``pricing`` and ``parent``;
  billing periods live on subscription items; PaymentIntents and Charges have no
  ``invoice``.
- ``shape="legacy"`` (``LEGACY_API_VERSION``, 2024-06-20): the fields as they were
  before basil — ``invoice.payment_intent``, ``invoice.charge``, ``invoice.paid``,
  ``invoice.subscription``, ``invoice.subscription_details``, line ``price``/``plan``,
  ``subscription.current_period_end`` at the top level, ``charge.invoice``.

Fields both shapes share (checkout sessions, charges' amounts, refunds, disputes,
early fraud warnings) are built the same way in both.

The shapes carry canary customer data (tests/support/canaries.py), so every
event the tests send is one whose personal data must not show up in any log
line or error report.
"""

from __future__ import annotations

import copy
import json
import time
import uuid

from providers.stripe import API_VERSION, sign
from tests.support.canaries import CANARIES, CLIENT_SECRET_SUFFIX, load_fixtures

FIXTURES = load_fixtures()

LEGACY_API_VERSION = "2024-06-20"
SHAPES = ("legacy", "basil")
_AUTO = object()  # "derive this field", where None is a meaningful value


def api_version(shape: str) -> str:
    """The ``api_version`` an event of this shape carries."""
    if shape == "basil":
        return API_VERSION
    if shape == "legacy":
        return LEGACY_API_VERSION
    raise ValueError(f"unknown shape {shape!r}: one of {SHAPES}")


def stripe_object(kind: str, **changes) -> dict:
    """A copy of the fixture object of this kind with some fields changed."""
    obj = copy.deepcopy(FIXTURES[kind])
    obj.update(changes)
    return obj


def _suffix() -> str:
    return uuid.uuid4().hex[:24]


def _metadata(user_id: str | None, credits: str | int | None) -> dict:
    metadata = {}
    if user_id is not None:
        metadata["user_id"] = user_id
    if credits is not None:
        metadata["credits"] = credits
    return metadata


# -- the envelope -----------------------------------------------------------------


def event(
    event_type: str,
    data_object: dict,
    *,
    event_id: str | None = None,
    created: int | None = None,
    shape: str = "basil",
    previous_attributes: dict | None = None,
) -> dict:
    """An event envelope in the fixture's shape around one object."""
    envelope = copy.deepcopy(FIXTURES["event"])
    data: dict = {"object": data_object}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    envelope.update(
        id=event_id or f"evt_{_suffix()}",
        type=event_type,
        created=created if created is not None else int(time.time()),
        data=data,
        api_version=api_version(shape),
    )
    return envelope


def encode(evt: dict) -> bytes:
    return json.dumps(evt, separators=(",", ":")).encode()


def signed_headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    signature = sign(body, secret, timestamp if timestamp is not None else int(time.time()))
    CANARIES.remember_signature(signature)
    return {"Stripe-Signature": signature, "Content-Type": "application/json"}


# -- checkout ---------------------------------------------------------------------


def checkout_session(
    *,
    session_id: str | None = None,
    user_id: str | None = "user_1",
    credits: str | int | None = "100",
    paid: bool = True,
    amount_total: int = 1999,
    currency: str = "usd",
    payment_intent=_AUTO,
    client_reference_id: str | None = None,
    mode: str = "payment",
    status: str = "complete",
    payment_status: str | None = None,
    amount_subtotal: int | None = None,
    amount_discount: int = 0,
    amount_tax: int = 0,
    subscription: str | None = None,
    invoice: str | None = None,
    payment_link: str | None = None,
    payment_method_types: list[str] | None = None,
    customer: str | None = None,
    created: int | None = None,
    metadata: dict | None = None,
) -> dict:
    """A Checkout Session; ``metadata`` defaults to ``{user_id, credits}`` when those are given.

    ``payment_intent`` defaults to a fresh ``pi_…`` in payment mode and to none in
    subscription mode (the subscription's invoice has the PaymentIntent there).
    ``amount_total`` is what the customer pays; ``amount_subtotal`` (default: the
    same) is before ``amount_discount`` and ``amount_tax``.
    """
    suffix = _suffix()
    session_id = session_id or f"cs_test_{suffix}"
    if payment_intent is _AUTO:
        payment_intent = None if mode != "payment" else f"pi_{suffix}"
    now = created if created is not None else int(time.time())
    obj = stripe_object(
        "checkout.session",
        id=session_id,
        object="checkout.session",
        mode=mode,
        metadata=_metadata(user_id, credits) if metadata is None else metadata,
        client_reference_id=client_reference_id,
        payment_status=payment_status or ("paid" if paid else "unpaid"),
        status=status,
        amount_total=amount_total,
        amount_subtotal=amount_subtotal if amount_subtotal is not None else amount_total,
        total_details={
            "amount_discount": amount_discount,
            "amount_shipping": 0,
            "amount_tax": amount_tax,
        },
        currency=currency,
        payment_intent=payment_intent,
        subscription=subscription,
        invoice=invoice,
        payment_link=payment_link,
        customer=customer,
        created=now,
        expires_at=now + 24 * 3600,
        url=f"https://checkout.stripe.com/c/pay/{session_id}" if status == "open" else None,
        # the fixture's placeholders for features no flow uses, made consistent with "unused"
        currency_conversion=None,
        shipping_cost=None,
        discounts=[],
        livemode=False,
    )
    if payment_method_types is not None:
        obj["payment_method_types"] = payment_method_types
    return obj


def completed_event(**session_fields) -> dict:
    return event("checkout.session.completed", checkout_session(**session_fields))


def product(product_id: str, name: str = "Credits", *, metadata: dict | None = None) -> dict:
    return stripe_object(
        "product",
        id=product_id,
        name=name,
        description=None,
        metadata=metadata or {},
        default_price=None,
        package_dimensions=None,
        images=[],
        type="service",
        livemode=False,
    )


def price(
    price_id: str,
    unit_amount: int,
    currency: str = "usd",
    *,
    product_id: str = "prod_credits",
    metadata: dict | None = None,
    recurring: dict | None = None,
) -> dict:
    """A Price; one-time unless ``recurring`` (``{"interval": "month", ...}``) is given."""
    return stripe_object(
        "price",
        id=price_id,
        unit_amount=unit_amount,
        unit_amount_decimal=str(unit_amount),
        currency=currency,
        product=product_id,
        metadata=metadata or {},
        type="recurring" if recurring else "one_time",
        recurring=(
            {
                "interval": "month",
                "interval_count": 1,
                "meter": None,
                "trial_period_days": None,
                "usage_type": "licensed",
            }
            | recurring
            if recurring
            else None
        ),
        billing_scheme="per_unit",
        transform_quantity=None,
        custom_unit_amount=None,
        livemode=False,
    )


def line_item(
    price_obj: dict,
    quantity: int = 1,
    *,
    item_id: str | None = None,
    product_obj: dict | None = None,
    amount_discount: int = 0,
    amount_tax: int = 0,
) -> dict:
    """A Checkout Session line item (object ``item``) for a price.

    The price is embedded as the API returns it; with ``product_obj`` the price's
    ``product`` is the expanded product (``expand[]=data.price.product``).
    """
    embedded = copy.deepcopy(price_obj)
    if product_obj is not None:
        embedded["product"] = copy.deepcopy(product_obj)
    subtotal = price_obj["unit_amount"] * quantity
    return stripe_object(
        "item",
        id=item_id or f"li_{_suffix()}",
        price=embedded,
        quantity=quantity,
        currency=price_obj["currency"],
        description=product_obj["name"] if product_obj else "Credits",
        amount_subtotal=subtotal,
        amount_discount=amount_discount,
        amount_tax=amount_tax,
        amount_total=subtotal - amount_discount + amount_tax,
        adjustable_quantity=None,
        metadata={},
    )


# -- payments -----------------------------------------------------------------------


def payment_intent(
    pi_id: str,
    status: str,
    last_payment_error: dict | None = None,
    cancellation_reason: str | None = None,
    *,
    amount: int = 1000,
    currency: str = "usd",
    amount_received: int | None = None,
    metadata: dict | None = None,
    latest_charge: str | None = None,
    payment_method_types: list[str] | None = None,
    invoice: str | None = None,
    created: int | None = None,
    shape: str = "basil",
) -> dict:
    """A PaymentIntent in ``status``; ``amount_received`` defaults to ``amount`` once succeeded.

    ``invoice`` exists only in the legacy shape (basil removed it).
    """
    now = created if created is not None else int(time.time())
    next_action = (
        {"type": "use_stripe_sdk", "use_stripe_sdk": {}} if status == "requires_action" else None
    )
    obj = stripe_object(
        "payment_intent",
        id=pi_id,
        status=status,
        last_payment_error=last_payment_error,
        cancellation_reason=cancellation_reason,
        canceled_at=now if status == "canceled" else None,
        amount=amount,
        amount_capturable=0,
        amount_received=amount_received
        if amount_received is not None
        else (amount if status == "succeeded" else 0),
        currency=currency,
        client_secret=f"{pi_id}{CLIENT_SECRET_SUFFIX}",
        metadata=metadata or {},
        latest_charge=latest_charge,
        next_action=next_action,
        processing={"type": (payment_method_types or ["card"])[0]}
        if status == "processing"
        else None,
        created=now,
        transfer_data=None,
        livemode=False,
    )
    if payment_method_types is not None:
        obj["payment_method_types"] = payment_method_types
    if shape == "legacy":
        obj["invoice"] = invoice
    return obj


def charge(
    payment_intent: str,
    amount: int,
    amount_refunded: int,
    *,
    charge_id: str | None = None,
    currency: str = "usd",
    amount_captured: int | None = None,
    disputed: bool = False,
    invoice: str | None = None,
    created: int | None = None,
    shape: str = "basil",
) -> dict:
    """A captured charge of ``amount``; ``amount_refunded`` is cumulative, as Stripe sends it.

    ``refunds`` is left out: Stripe stopped including it in 2022-11-15, before both
    shapes. ``invoice`` exists only in the legacy shape.
    """
    captured = amount if amount_captured is None else amount_captured
    obj = stripe_object(
        "charge",
        id=charge_id or f"ch_{_suffix()}",
        payment_intent=payment_intent,
        amount=amount,
        amount_captured=captured,
        amount_refunded=amount_refunded,
        refunded=amount_refunded >= captured,
        captured=True,
        paid=True,
        disputed=disputed,
        currency=currency,
        status="succeeded",
        created=created if created is not None else int(time.time()),
        transfer_data=None,
        livemode=False,
    )
    obj.pop("refunds", None)
    if shape == "legacy":
        obj["invoice"] = invoice
    return obj


def refund(
    charge_id: str,
    payment_intent: str,
    amount: int,
    status: str = "succeeded",
    *,
    refund_id: str | None = None,
    currency: str = "usd",
    failure_reason: str | None = None,
    failure_balance_transaction: str | None = None,
    created: int | None = None,
) -> dict:
    """A Refund of ``amount`` on a charge.

    ``status``: pending, requires_action, succeeded, failed or canceled.
    """
    obj = stripe_object(
        "refund",
        id=refund_id or f"re_{_suffix()}",
        charge=charge_id,
        payment_intent=payment_intent,
        amount=amount,
        currency=currency,
        status=status,
        reason="requested_by_customer",
        created=created if created is not None else int(time.time()),
    )
    if status == "failed":
        obj["failure_reason"] = failure_reason or "expired_or_canceled_card"
        obj["failure_balance_transaction"] = failure_balance_transaction or f"txn_{_suffix()}"
    return obj


def dispute(
    payment_intent: str,
    dispute_id: str | None = None,
    status: str = "needs_response",
    amount: int = 1000,
    *,
    charge_id: str | None = None,
    reason: str = "fraudulent",
    currency: str = "usd",
    created: int | None = None,
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
        created=created if created is not None else int(time.time()),
    )


def early_fraud_warning(
    charge_id: str,
    payment_intent: str | None,
    *,
    efw_id: str | None = None,
    actionable: bool = True,
    fraud_type: str = "made_with_stolen_card",
    created: int | None = None,
) -> dict:
    """A Radar early fraud warning on a charge (``actionable`` until refunded or disputed)."""
    return stripe_object(
        "radar.early_fraud_warning",
        id=efw_id or f"issfr_{_suffix()}",
        charge=charge_id,
        payment_intent=payment_intent,
        actionable=actionable,
        fraud_type=fraud_type,
        created=created if created is not None else int(time.time()),
    )


# -- subscriptions and invoices ------------------------------------------------------


def subscription(
    sub_id: str,
    status: str = "active",
    user_id: str | None = "user_1",
    credits: str | int | None = "500",
    price_id: str = "price_test_monthly",
    customer: str = "cus_test_1",
    *,
    current_period_end: int | None = None,
    unit_amount: int = 2000,
    trial_end: int | None = None,
    cancel_at_period_end: bool = False,
    latest_invoice: str | None = None,
    created: int | None = None,
    item_id: str | None = None,
    shape: str = "basil",
) -> dict:
    """A subscription with one item; metadata.user_id and metadata.credits when given.

    Basil puts the billing period on the item; legacy on the subscription.
    """
    now = created if created is not None else int(time.time())
    period_end = current_period_end if current_period_end is not None else now + 30 * 86400
    period_start = period_end - 30 * 86400
    items = copy.deepcopy(FIXTURES["subscription"]["items"])
    item = items["data"][0]
    item.update(
        subscription=sub_id, current_period_start=period_start, current_period_end=period_end
    )
    if item_id:
        item["id"] = item_id
    item["price"] = price(
        price_id, unit_amount, product_id="prod_credits", recurring={"interval": "month"}
    )
    item["plan"].update(
        id=price_id,
        amount=unit_amount,
        amount_decimal=str(unit_amount),
        currency="usd",
        product="prod_credits",
        billing_scheme="per_unit",
        transform_usage=None,
        interval_count=1,
        livemode=False,
        metadata={},
    )
    items["url"] = f"/v1/subscription_items?subscription={sub_id}"
    ended = status in ("canceled", "incomplete_expired")
    obj = stripe_object(
        "subscription",
        id=sub_id,
        status=status,
        customer=customer,
        metadata=_metadata(user_id, credits),
        items=items,
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=period_end if cancel_at_period_end else None,
        canceled_at=now if ended or cancel_at_period_end else None,
        ended_at=now if ended else None,
        start_date=period_start,
        billing_cycle_anchor=period_start,
        trial_start=period_start if trial_end else None,
        trial_end=trial_end,
        latest_invoice=latest_invoice,
        created=now,
        livemode=False,
    )
    if shape == "legacy":
        item.pop("current_period_start")
        item.pop("current_period_end")
        obj.update(current_period_start=period_start, current_period_end=period_end)
    return obj


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
    charge_id: str | None = None,
    billing_reason: str = "subscription_cycle",
    created: int | None = None,
    period_start: int | None = None,
    line_id: str | None = None,
    subscription_item: str | None = None,
    shape: str = "basil",
) -> dict:
    """A paid subscription invoice.

    Basil: ``parent.subscription_details`` (with the subscription's metadata
    snapshot) and line ``pricing``/``parent``; no ``payment_intent`` (an
    ``invoice_payment`` links it), except that ``payment_intent`` is still set
    when given, for tests of a handler's fallback. Legacy: ``subscription``,
    ``subscription_details``, ``payment_intent``, ``charge``, ``paid`` and line
    ``price``/``plan``/``type``.
    """
    metadata = _metadata(user_id, credits)
    now = created if created is not None else int(time.time())
    start = period_start if period_start is not None else now
    subscription_item = subscription_item or f"si_{_suffix()}"
    lines = copy.deepcopy(FIXTURES["invoice"]["lines"])
    line = lines["data"][0]
    line.update(
        id=line_id or f"il_{_suffix()}",
        invoice=invoice_id,
        amount=amount_paid,
        subtotal=amount_paid,
        currency=currency,
        description=f"1 × plan (at {amount_paid} / month)",
        period={"start": start, "end": start + 30 * 86400},
        quantity=1,
        livemode=False,
    )
    lines["url"] = f"/v1/invoices/{invoice_id}/lines"
    changes = {
        "id": invoice_id,
        "status": "paid",
        "customer": customer,
        "currency": currency,
        "billing_reason": billing_reason,
        "amount_due": amount_paid,
        "amount_paid": amount_paid,
        "amount_remaining": 0,
        "subtotal": amount_paid,
        "subtotal_excluding_tax": amount_paid,
        "total": amount_paid,
        "total_excluding_tax": amount_paid,
        "attempted": True,
        "attempt_count": 1 if amount_paid else 0,
        "last_finalization_error": None,
        "from_invoice": None,
        "lines": lines,
        "created": now,
        "period_start": start,
        "period_end": start,
        "livemode": False,
        "status_transitions": {
            "finalized_at": now,
            "marked_uncollectible_at": None,
            "paid_at": now,
            "voided_at": None,
        },
    }
    if shape == "basil":
        line.update(
            pricing={
                "type": "price_details",
                "price_details": {"price": price_id, "product": "prod_credits"},
                "unit_amount_decimal": str(amount_paid),
            },
            parent={
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": subscription_id,
                    "subscription_item": subscription_item,
                },
            },
            subscription=subscription_id,
        )
        changes.update(
            amount_overpaid=0,
            parent={
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "subscription": subscription_id,
                    "metadata": metadata,
                    "subscription_proration_date": None,
                },
            },
        )
        obj = stripe_object("invoice", **changes)
        obj.pop("subscription", None)  # the fixture's leftover: basil invoices have no such field
        if payment_intent is not None:
            obj["payment_intent"] = payment_intent
        return obj

    for name in ("parent", "pricing"):
        line.pop(name, None)
    plan_price = price(
        price_id, amount_paid, currency, product_id="prod_credits", recurring={"interval": "month"}
    )
    plan = copy.deepcopy(FIXTURES["subscription"]["items"]["data"][0]["plan"])
    plan.update(
        id=price_id,
        amount=amount_paid,
        amount_decimal=str(amount_paid),
        currency=currency,
        product="prod_credits",
        billing_scheme="per_unit",
        transform_usage=None,
        interval_count=1,
        livemode=False,
        metadata={},
    )
    line.update(
        type="subscription",
        price=plan_price,
        plan=plan,
        subscription=subscription_id,
        subscription_item=subscription_item,
        invoice_item=None,
        proration=False,
        proration_details={"credited_items": None},
    )
    changes.update(
        subscription=subscription_id,
        subscription_details={"metadata": metadata},
        subscription_proration_date=None,
        quote=None,
        payment_intent=payment_intent,
        charge=charge_id,
        paid=True,
        paid_out_of_band=False,
    )
    obj = stripe_object("invoice", **changes)
    obj.pop("parent", None)
    obj.pop("amount_overpaid", None)
    return obj


def invoice_payment(
    invoice_id: str,
    payment_intent: str,
    amount_paid: int,
    *,
    inpay_id: str | None = None,
    currency: str = "usd",
    status: str = "paid",
    created: int | None = None,
) -> dict:
    """The InvoicePayment linking an invoice to the PaymentIntent that paid it (basil and later)."""
    now = created if created is not None else int(time.time())
    return stripe_object(
        "invoice_payment",
        id=inpay_id or f"inpay_{_suffix()}",
        invoice=invoice_id,
        amount_paid=amount_paid if status == "paid" else None,
        amount_requested=amount_paid,
        currency=currency,
        is_default=True,
        livemode=False,
        payment={"type": "payment_intent", "payment_intent": payment_intent},
        status=status,
        created=now,
        status_transitions={"canceled_at": None, "paid_at": now if status == "paid" else None},
    )
