"""Stripe: verify ``Stripe-Signature``, parse an event, translate it into changes.

Verification follows Stripe's scheme: the header carries ``t=<unix time>`` and one
or more ``v1=<hex HMAC-SHA256>`` of ``"<t>.<raw body>"``. Every configured secret
is tried (several while a secret is being rotated) and every comparison is
constant-time. ``v0`` and other schemes are ignored, as Stripe's own libraries do.

Handlers are pure functions of the event, listed in ``HANDLERS``; an event type
not listed there is stored as ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import orjson

from providers.changes import (
    ActionRequired,
    Change,
    DisputeClosed,
    DisputeOpened,
    FraudWarning,
    Ignored,
    InvalidEventError,
    InvoicePaid,
    LineItem,
    PaymentCanceled,
    PaymentExpired,
    PaymentFailed,
    PaymentLinked,
    PaymentProcessing,
    PaymentRef,
    PaymentSucceeded,
    ProviderEvent,
    Purchase,
    RefundChanged,
    Refunded,
    SignatureError,
    SubscriptionChanged,
)

NAME = "stripe"
# The Stripe API version payhooks is written and tested against. `payhooks stripe
# setup` pins webhook endpoints to it (Stripe renders each endpoint's events in the
# version it was created with), and the tests build the current event shape with it.
API_VERSION = "2025-03-31.basil"
REFUND_STATUSES = frozenset({"pending", "requires_action", "succeeded", "failed", "canceled"})
SIGNATURE_HEADER = "Stripe-Signature"
MAX_CREDITS = 10**12
_DIGITS = re.compile(r"[0-9]+")
_UNIX_TIME = re.compile(r"[0-9]{1,12}")  # far beyond any real timestamp, and safe to convert


def verify_signature(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int,
    now: float,
) -> int:
    """Check the signature over the raw body; return the index of the secret that matched."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header", "missing")
    timestamp, signatures = _parse_header(header)
    age = now - int(timestamp)
    if age > tolerance:
        raise SignatureError("timestamp is older than the tolerance", "stale")
    if -age > tolerance:
        raise SignatureError("timestamp is further in the future than the tolerance", "future")
    signed = timestamp.encode() + b"." + body
    matched = None
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        for candidate in signatures:
            # no early exit: the time taken must not depend on which secret matched
            if hmac.compare_digest(expected, candidate) and matched is None:
                matched = index
    if matched is None:
        raise SignatureError("no v1 signature matches a configured secret", "mismatch")
    return matched


def _parse_header(header: str) -> tuple[str, list[bytes]]:
    timestamps: list[str] = []
    signatures: list[bytes] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value.encode("utf-8", "replace"))
    if len(timestamps) != 1 or not _UNIX_TIME.fullmatch(timestamps[0]):
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: needs exactly one t=<unix time>", "malformed")
    if not signatures:
        raise SignatureError(f"{SIGNATURE_HEADER} header has no v1 signature", "malformed")
    return timestamps[0], signatures


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """A ``Stripe-Signature`` header value for a body, as Stripe makes it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def parse_event(body: bytes | str) -> ProviderEvent:
    """Decode an event body; raise InvalidEventError unless it is a JSON Stripe event."""
    raw = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        event = orjson.loads(raw)  # on the receiver's hot path: several times faster than json
    except orjson.JSONDecodeError as exc:
        reason = "nested too deeply" if "recursion" in str(exc).lower() else "not JSON"
        raise InvalidEventError(f"body is {reason}") from None
    if not isinstance(event, dict):
        raise InvalidEventError("body is not a JSON object")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEventError("event has no string id")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEventError("event has no string type")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise InvalidEventError("event has no data.object")
    return ProviderEvent(
        provider=NAME,
        id=event_id,
        type=event_type,
        created=_created(event.get("created")),
        data=data,
        raw=raw,
    )


def _created(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEventError(f"created is not a unix time: {_shape(value)}")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, ValueError, OSError):
        raise InvalidEventError(f"created is not a unix time: {_shape(value)} out of range") from None


# -- handlers: event -> change ------------------------------------------------
#
# In subscription mode a Checkout Session's credits come with each invoice.paid;
# the session's own events grant nothing, whatever its payment method (a SEPA
# subscription sends async_payment_succeeded as well as invoice.paid).


def checkout_session_completed(event: ProviderEvent) -> Change:
    session = event.data["object"]
    if ignored := _not_a_purchase(session):
        return ignored
    ref, purchase = _checkout(session)
    if session.get("payment_status") in ("paid", "no_payment_required"):
        return PaymentSucceeded(ref, purchase, *_session_paid(session))
    return PaymentProcessing(ref, purchase)


def checkout_session_async_payment_succeeded(event: ProviderEvent) -> Change:
    session = event.data["object"]
    if ignored := _not_a_purchase(session):
        return ignored
    return PaymentSucceeded(*_checkout(session), *_session_paid(session))


def checkout_session_async_payment_failed(event: ProviderEvent) -> Change:
    session = event.data["object"]
    if ignored := _not_a_purchase(session):
        return ignored
    return PaymentFailed(*_checkout(session), *_last_payment_error(session.get("payment_intent")))


def checkout_session_expired(event: ProviderEvent) -> Change:
    session = event.data["object"]
    if ignored := _not_a_purchase(session):
        return ignored
    return PaymentExpired(*_checkout(session))


def payment_intent_succeeded(event: ProviderEvent) -> Change:
    """PaymentIntent-only integrations (Elements, mobile); a Checkout Session's own intent is the same payment."""
    intent = event.data["object"]
    return PaymentSucceeded(
        PaymentRef(payment_id=_required_id(intent, "payment intent")),
        _intent_purchase(intent),
        paid_amount_cents=_amount(intent.get("amount_received"), "amount_received"),
        paid_currency=_currency(intent.get("currency")),
    )


def payment_intent_processing(event: ProviderEvent) -> Change:
    intent = event.data["object"]
    return PaymentProcessing(PaymentRef(payment_id=_required_id(intent, "payment intent")), _intent_purchase(intent))


def payment_intent_requires_action(event: ProviderEvent) -> Change:
    intent = event.data["object"]
    action = intent.get("next_action") if isinstance(intent.get("next_action"), dict) else {}
    return ActionRequired(PaymentRef(payment_id=_required_id(intent, "payment intent")), _str(action.get("type")))


def payment_intent_payment_failed(event: ProviderEvent) -> Change:
    intent = event.data["object"]
    return PaymentFailed(
        PaymentRef(payment_id=_required_id(intent, "payment intent")), Purchase(), *_last_payment_error(intent)
    )


def payment_intent_canceled(event: ProviderEvent) -> Change:
    intent = event.data["object"]
    return PaymentCanceled(
        PaymentRef(payment_id=_required_id(intent, "payment intent")), _str(intent.get("cancellation_reason"))
    )


def charge_refunded(event: ProviderEvent) -> Change:
    charge = event.data["object"]
    amount = _amount(charge.get("amount"), "charge.amount")
    refunded = _amount(charge.get("amount_refunded"), "charge.amount_refunded")
    if amount is None or refunded is None:
        raise InvalidEventError("charge.refunded needs amount and amount_refunded")
    captured = _amount(charge.get("amount_captured"), "charge.amount_captured") or amount
    return Refunded(_intent_ref(charge, "charge"), refunded_cents=min(refunded, captured), captured_cents=captured)


def refund_changed(event: ProviderEvent) -> Change:
    """refund.created/updated/failed and charge.refund.updated: one refund's status."""
    refund = event.data["object"]
    status = refund.get("status")
    if not isinstance(status, str) or status not in REFUND_STATUSES:  # a list or object is unhashable
        raise InvalidEventError("refund.status is not a known refund status")
    amount = _amount(refund.get("amount"), "refund.amount")
    if amount is None:
        raise InvalidEventError("refund has no amount")
    if not _object_id(refund.get("payment_intent")):
        return Ignored("refund of a charge without a payment intent")
    return RefundChanged(_intent_ref(refund, "refund"), _required_id(refund, "refund"), amount, status)


def charge_dispute_created(event: ProviderEvent) -> Change:
    dispute = event.data["object"]
    return DisputeOpened(
        _intent_ref(dispute, "dispute"),
        dispute_id=_required_id(dispute, "dispute"),
        amount_cents=_amount(dispute.get("amount"), "dispute.amount"),
        reason=_str(dispute.get("reason")),
    )


def charge_dispute_closed(event: ProviderEvent) -> Change:
    dispute = event.data["object"]
    status = dispute.get("status")
    if status not in ("won", "lost"):
        # warning_closed and the like: the dispute ended without moving money
        return Ignored("dispute closed without a won or lost outcome: nothing to take back")
    return DisputeClosed(
        _intent_ref(dispute, "dispute"),
        dispute_id=_required_id(dispute, "dispute"),
        won=status == "won",
        amount_cents=_amount(dispute.get("amount"), "dispute.amount"),
        reason=_str(dispute.get("reason")),
    )


def radar_early_fraud_warning(event: ProviderEvent) -> Change:
    warning = event.data["object"]
    if not _object_id(warning.get("payment_intent")):
        return Ignored("fraud warning on a charge without a payment intent")
    return FraudWarning(
        _intent_ref(warning, "early fraud warning"),
        warning_id=_required_id(warning, "early fraud warning"),
        actionable=warning.get("actionable") is not False,
        fraud_type=_str(warning.get("fraud_type")),
    )


def customer_subscription_changed(event: ProviderEvent) -> Change:
    subscription = event.data["object"]
    item = _first((subscription.get("items") or {}).get("data"))
    price = item.get("price") if isinstance(item.get("price"), dict) else {}
    metadata = _metadata(subscription)
    period_end = item.get("current_period_end") or subscription.get("current_period_end")
    return SubscriptionChanged(
        subscription_id=_required_id(subscription, "subscription"),
        status="canceled" if event.type.endswith(".deleted") else _str(subscription.get("status")) or "unknown",
        customer_id=_object_id(subscription.get("customer")),
        user_id=_user_id(metadata.get("user_id")),
        price_id=_str(price.get("id")),
        credits=_credits(metadata.get("credits")) or _credits((price.get("metadata") or {}).get("credits")),
        current_period_end=_time(period_end, "current_period_end"),
    )


def invoice_paid(event: ProviderEvent) -> Change:
    invoice = event.data["object"]
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    # current API versions: parent.subscription_details; older ones: invoice.subscription
    subscription_id = _object_id(details.get("subscription")) or _object_id(invoice.get("subscription"))
    if not subscription_id:
        return Ignored("invoice is not for a subscription")
    metadata = details.get("metadata") or {}
    line = _first((invoice.get("lines") or {}).get("data"))
    return InvoicePaid(
        # invoice.payment_intent exists on API versions before 2025-03-31.basil only;
        # later ones link the two with invoice_payment.paid
        PaymentRef(session_id=_required_id(invoice, "invoice"), payment_id=_object_id(invoice.get("payment_intent"))),
        subscription_id=subscription_id,
        purchase=Purchase(user_id=_user_id(metadata.get("user_id")), credits=_credits(metadata.get("credits"))),
        price_id=_line_price_id(line),
        paid_amount_cents=_amount(invoice.get("amount_paid"), "amount_paid"),
        paid_currency=_currency(invoice.get("currency")),
    )


def invoice_payment_paid(event: ProviderEvent) -> Change:
    payment = event.data["object"]
    invoice_id = _object_id(payment.get("invoice"))
    if not invoice_id:
        raise InvalidEventError("invoice_payment has no invoice")
    paid_by = payment.get("payment") if isinstance(payment.get("payment"), dict) else {}
    # payment.payment_intent in 2025-03-31.basil and later; preview versions put it at the top
    intent = _object_id(paid_by.get("payment_intent")) or _object_id(payment.get("payment_intent"))
    if not intent:
        return Ignored(f"invoice paid by {_str(paid_by.get('type')) or 'something'} other than a payment intent")
    return PaymentLinked(PaymentRef(session_id=invoice_id, payment_id=intent))


HANDLERS: dict[str, Callable[[ProviderEvent], Change]] = {
    "checkout.session.completed": checkout_session_completed,
    "checkout.session.async_payment_succeeded": checkout_session_async_payment_succeeded,
    "checkout.session.async_payment_failed": checkout_session_async_payment_failed,
    "checkout.session.expired": checkout_session_expired,
    "payment_intent.succeeded": payment_intent_succeeded,
    "payment_intent.processing": payment_intent_processing,
    "payment_intent.requires_action": payment_intent_requires_action,
    "payment_intent.payment_failed": payment_intent_payment_failed,
    "payment_intent.canceled": payment_intent_canceled,
    "charge.refunded": charge_refunded,
    "refund.created": refund_changed,
    "refund.updated": refund_changed,
    "refund.failed": refund_changed,
    "charge.refund.updated": refund_changed,
    "charge.dispute.created": charge_dispute_created,
    "charge.dispute.closed": charge_dispute_closed,
    "radar.early_fraud_warning.created": radar_early_fraud_warning,
    "radar.early_fraud_warning.updated": radar_early_fraud_warning,
    "customer.subscription.created": customer_subscription_changed,
    "customer.subscription.updated": customer_subscription_changed,
    "customer.subscription.deleted": customer_subscription_changed,
    "invoice.paid": invoice_paid,
    "invoice_payment.paid": invoice_payment_paid,
}

HANDLED_TYPES = tuple(HANDLERS)


def translate(event: ProviderEvent) -> Change:
    """The change an event asks for; Ignored for types we do not act on."""
    handler = HANDLERS.get(event.type)
    if handler is None:
        return Ignored(f"{event.type} is not handled")
    return handler(event)


def _not_a_purchase(session: dict) -> Ignored | None:
    mode = session.get("mode")
    if mode in ("subscription", "setup"):
        return Ignored(f"{mode} checkout: credits come with invoice.paid")
    return None


def _checkout(session: dict) -> tuple[PaymentRef, Purchase]:
    """A checkout.session object; metadata.user_id falls back to client_reference_id."""
    metadata = _metadata(session)
    ref = PaymentRef(
        session_id=_required_id(session, "checkout session"),
        payment_id=_object_id(session.get("payment_intent")),
    )
    return ref, Purchase(
        user_id=_user_id(metadata.get("user_id") or session.get("client_reference_id")),
        credits=_credits(metadata.get("credits")),
        amount_cents=_amount(session.get("amount_total"), "amount_total"),
        currency=_currency(session.get("currency")),
        package_id=_str(metadata.get("package_id")),
        line_items=_line_items(session.get("line_items")),
        email=_email(session.get("customer_details")),
    )


def checkout_from_session(session: dict) -> tuple[PaymentRef, Purchase]:
    """The reference and purchase a checkout.session object describes (recovery builds events from these)."""
    return _checkout(session)


def _session_paid(session: dict) -> tuple[int | None, str | None]:
    return _amount(session.get("amount_total"), "amount_total"), _currency(session.get("currency"))


def _intent_purchase(intent: dict) -> Purchase:
    metadata = _metadata(intent)
    return Purchase(
        user_id=_user_id(metadata.get("user_id")),
        credits=_credits(metadata.get("credits")),
        amount_cents=_amount(intent.get("amount"), "amount"),
        currency=_currency(intent.get("currency")),
        package_id=_str(metadata.get("package_id")),
        line_items=(),  # a PaymentIntent has no line items: nothing to look up
        email=_str(intent.get("receipt_email")),
    )


def with_line_items(event: ProviderEvent, items: list[dict]) -> ProviderEvent:
    """The event as if its session carried its line items (webhooks never do; the API lists them)."""
    session = {**event.data["object"], "line_items": {"object": "list", "data": list(items)}}
    return replace(event, data={**event.data, "object": session})


def look_up(api, session_id: str, waiting: Sequence[ProviderEvent] = ()) -> list[dict]:
    """What an event held under the session's lookup key waits for (application/lookups.py): its line items."""
    return api.list_line_items(session_id)


with_lookup = with_line_items


def _line_items(listing: object) -> tuple[LineItem, ...] | None:
    """Line items, when the object carries them (webhooks never do; the API lists them)."""
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        return None
    items = []
    for item in listing["data"]:
        if not isinstance(item, dict):
            continue
        price = item.get("price") if isinstance(item.get("price"), dict) else {}
        product = price.get("product") if isinstance(price.get("product"), dict) else {}
        per_unit = _credits((price.get("metadata") or {}).get("credits")) or _credits(
            (product.get("metadata") or {}).get("credits")
        )
        quantity = item.get("quantity")
        items.append(
            LineItem(
                price_id=_object_id(item.get("price")),
                quantity=quantity if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 0 else 1,
                credits_per_unit=per_unit,
            )
        )
    return tuple(items)


# -- field readers: each raises InvalidEventError naming the field ---------------


def _required_id(obj: dict, what: str) -> str:
    value = obj.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidEventError(f"{what} has no id")
    return value


def _metadata(obj: dict) -> dict:
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidEventError("metadata is not an object")
    return metadata


def _user_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidEventError("metadata.user_id is not a non-empty string")
    return value


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _email(details: object) -> str | None:
    """``customer_details.email``: what the buyer typed at checkout."""
    return _str(details.get("email")) if isinstance(details, dict) else None


def _first(items: object) -> dict:
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def _intent_ref(obj: dict, what: str) -> PaymentRef:
    payment_id = _object_id(obj.get("payment_intent"))
    if not payment_id:
        raise InvalidEventError(f"{what} has no payment_intent to find its payment by")
    return PaymentRef(payment_id=payment_id)


def _last_payment_error(intent: object) -> tuple[str | None, str | None]:
    error = intent.get("last_payment_error") if isinstance(intent, dict) else None
    if not isinstance(error, dict):
        return None, None
    return _str(error.get("decline_code") or error.get("code") or error.get("type")), _str(error.get("message"))


def _line_price_id(line: dict) -> str | None:
    pricing = line.get("pricing") or {}
    price = (pricing.get("price_details") or {}).get("price") if isinstance(pricing, dict) else None
    if price is None:  # older API versions
        price = line.get("price") or line.get("plan")
    return _object_id(price)


def _time(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEventError(f"{name} is not a unix time: {_shape(value)}")
    return _created(value)


def _credits(value: object) -> int | None:
    if value is None:
        return None
    # Stripe metadata values are strings; accept a JSON integer too.
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _DIGITS.fullmatch(text.strip()):
        raise InvalidEventError(f"metadata.credits is not a positive integer: {_shape(value)}")
    credits = int(text)
    if not 0 < credits <= MAX_CREDITS:
        raise InvalidEventError(f"metadata.credits must be between 1 and {MAX_CREDITS}: {_shape(credits)}")
    return credits


def _amount(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidEventError(f"{name} is not a non-negative integer: {_shape(value)}")
    return value


def _currency(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value):
        raise InvalidEventError(f"currency is not a three-letter code: {_shape(value)}")
    return value.lower()


def _shape(value: object) -> str:
    """What a bad value is, never the value: the sender may have put anything there, an e-mail too."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "a boolean"
    if isinstance(value, int):
        digits = len(str(abs(value)))
        return f"{'a negative' if value < 0 else 'an'} integer of {digits} digit{'s' if digits > 1 else ''}"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return {"dict": "an object", "list": "an array", "float": "a decimal number"}.get(type(value).__name__, "a value")


def _object_id(value: object) -> str | None:
    """An id, whether the field holds the id or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None

