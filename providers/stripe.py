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
from datetime import UTC, datetime

import orjson

from providers.changes import (
    AttemptFailed,
    Change,
    Checkout,
    CheckoutExpired,
    CheckoutFailed,
    DisputeClosed,
    DisputeOpened,
    Ignored,
    InvalidEventError,
    InvoicePaid,
    PaymentCanceled,
    PaymentProcessing,
    PaymentSucceeded,
    ProviderEvent,
    Refunded,
    SignatureError,
    SubscriptionChanged,
)

NAME = "stripe"
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


def checkout_session_completed(event: ProviderEvent) -> Change:
    session = event.data["object"]
    if session.get("mode") in ("subscription", "setup"):
        # A subscription's credits come with each invoice.paid; granting here too would double them.
        return Ignored(f"{session.get('mode')} checkout: credits come with invoice.paid")
    checkout = checkout_from_session(session)
    if session.get("payment_status") in ("paid", "no_payment_required"):
        return PaymentSucceeded(checkout)
    return PaymentProcessing(checkout)


def checkout_session_async_payment_succeeded(event: ProviderEvent) -> Change:
    return PaymentSucceeded(checkout_from_session(event.data["object"]))


def checkout_session_async_payment_failed(event: ProviderEvent) -> Change:
    session = event.data["object"]
    error = _last_payment_error(session.get("payment_intent"))
    return CheckoutFailed(checkout_from_session(session), *error)


def checkout_session_expired(event: ProviderEvent) -> Change:
    return CheckoutExpired(checkout_from_session(event.data["object"]))


def payment_intent_payment_failed(event: ProviderEvent) -> Change:
    intent = event.data["object"]
    return AttemptFailed(_required_id(intent, "payment intent"), *_last_payment_error(intent))


def payment_intent_canceled(event: ProviderEvent) -> Change:
    intent = event.data["object"]
    return PaymentCanceled(_required_id(intent, "payment intent"), _str(intent.get("cancellation_reason")))


def charge_refunded(event: ProviderEvent) -> Change:
    charge = event.data["object"]
    amount = _amount(charge.get("amount"), "charge.amount")
    refunded = _amount(charge.get("amount_refunded"), "charge.amount_refunded")
    if amount is None or refunded is None:
        raise InvalidEventError("charge.refunded needs amount and amount_refunded")
    return Refunded(_payment_intent_of(charge, "charge"), refunded_cents=min(refunded, amount), amount_cents=amount)


def charge_dispute_created(event: ProviderEvent) -> Change:
    dispute = event.data["object"]
    return DisputeOpened(
        payment_id=_payment_intent_of(dispute, "dispute"),
        dispute_id=_required_id(dispute, "dispute"),
        amount_cents=_amount(dispute.get("amount"), "dispute.amount"),
        reason=_str(dispute.get("reason")),
    )


def charge_dispute_closed(event: ProviderEvent) -> Change:
    dispute = event.data["object"]
    status = dispute.get("status")
    if status not in ("won", "lost"):
        # warning_closed and the like: the dispute ended without moving money
        return Ignored(f"dispute closed with status {status!r}: nothing to take back")
    return DisputeClosed(
        payment_id=_payment_intent_of(dispute, "dispute"),
        dispute_id=_required_id(dispute, "dispute"),
        won=status == "won",
        amount_cents=_amount(dispute.get("amount"), "dispute.amount"),
        reason=_str(dispute.get("reason")),
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
        invoice_id=_required_id(invoice, "invoice"),
        subscription_id=subscription_id,
        user_id=_user_id(metadata.get("user_id")),
        credits=_credits(metadata.get("credits")),
        price_id=_line_price_id(line),
        amount_cents=_amount(invoice.get("amount_paid"), "amount_paid"),
        currency=_currency(invoice.get("currency")),
        payment_id=_object_id(invoice.get("payment_intent")),
    )


HANDLERS: dict[str, Callable[[ProviderEvent], Change]] = {
    "checkout.session.completed": checkout_session_completed,
    "checkout.session.async_payment_succeeded": checkout_session_async_payment_succeeded,
    "checkout.session.async_payment_failed": checkout_session_async_payment_failed,
    "checkout.session.expired": checkout_session_expired,
    "payment_intent.payment_failed": payment_intent_payment_failed,
    "payment_intent.canceled": payment_intent_canceled,
    "charge.refunded": charge_refunded,
    "charge.dispute.created": charge_dispute_created,
    "charge.dispute.closed": charge_dispute_closed,
    "customer.subscription.created": customer_subscription_changed,
    "customer.subscription.updated": customer_subscription_changed,
    "customer.subscription.deleted": customer_subscription_changed,
    "invoice.paid": invoice_paid,
}

HANDLED_TYPES = tuple(HANDLERS)


def translate(event: ProviderEvent) -> Change:
    """The change an event asks for; Ignored for types we do not act on."""
    handler = HANDLERS.get(event.type)
    if handler is None:
        return Ignored(f"{event.type} is not handled")
    return handler(event)


def checkout_from_session(session: dict) -> Checkout:
    """Read a checkout.session object; metadata.user_id falls back to client_reference_id."""
    metadata = _metadata(session)
    return Checkout(
        session_id=_required_id(session, "checkout session"),
        user_id=_user_id(metadata.get("user_id") or session.get("client_reference_id")),
        credits=_credits(metadata.get("credits")),
        payment_id=_object_id(session.get("payment_intent")),
        amount_cents=_amount(session.get("amount_total"), "amount_total"),
        currency=_currency(session.get("currency")),
        package_id=_str(metadata.get("package_id")),
    )


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


def _first(items: object) -> dict:
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def _payment_intent_of(obj: dict, what: str) -> str:
    payment_id = _object_id(obj.get("payment_intent"))
    if not payment_id:
        raise InvalidEventError(f"{what} has no payment_intent to find its payment by")
    return payment_id


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
