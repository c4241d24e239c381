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
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from providers.changes import (
    Change,
    Checkout,
    Ignored,
    InvalidEventError,
    PaymentProcessing,
    PaymentSucceeded,
    ProviderEvent,
    SignatureError,
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
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp, signatures = _parse_header(header)
    age = now - int(timestamp)
    if age > tolerance:
        raise SignatureError("timestamp is older than the tolerance")
    if -age > tolerance:
        raise SignatureError("timestamp is further in the future than the tolerance")
    signed = timestamp.encode() + b"." + body
    matched = None
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        for candidate in signatures:
            # no early exit: the time taken must not depend on which secret matched
            if hmac.compare_digest(expected, candidate) and matched is None:
                matched = index
    if matched is None:
        raise SignatureError("no v1 signature matches a configured secret")
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
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: needs exactly one t=<unix time>")
    if not signatures:
        raise SignatureError(f"{SIGNATURE_HEADER} header has no v1 signature")
    return timestamps[0], signatures


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """A ``Stripe-Signature`` header value for a body, as Stripe makes it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def parse_event(body: bytes | str) -> ProviderEvent:
    """Decode an event body; raise InvalidEventError unless it is a JSON Stripe event."""
    raw = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        event = json.loads(raw)
    except ValueError:
        raise InvalidEventError("body is not JSON") from None
    except RecursionError:
        raise InvalidEventError("body is nested too deeply") from None
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
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, ValueError, OSError):
        raise InvalidEventError(f"created is not a unix time: {value}") from None


# -- handlers: event -> change ------------------------------------------------


def checkout_session_completed(event: ProviderEvent) -> Change:
    session = event.data["object"]
    checkout = checkout_from_session(session)
    if session.get("payment_status") in ("paid", "no_payment_required"):
        return PaymentSucceeded(checkout)
    return PaymentProcessing(checkout)


HANDLERS: dict[str, Callable[[ProviderEvent], Change]] = {
    "checkout.session.completed": checkout_session_completed,
}


def translate(event: ProviderEvent) -> Change:
    """The change an event asks for; Ignored for types we do not act on."""
    handler = HANDLERS.get(event.type)
    if handler is None:
        return Ignored(f"{event.type} is not handled")
    return handler(event)


def checkout_from_session(session: dict) -> Checkout:
    """Read a checkout.session object; metadata.user_id falls back to client_reference_id."""
    session_id = session.get("id")
    if not isinstance(session_id, str) or not session_id:
        raise InvalidEventError("checkout session has no id")
    metadata = session.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidEventError("metadata is not an object")
    user_id = metadata.get("user_id") or session.get("client_reference_id")
    if user_id is not None and (not isinstance(user_id, str) or not user_id.strip()):
        raise InvalidEventError("metadata.user_id is not a non-empty string")
    return Checkout(
        session_id=session_id,
        user_id=user_id,
        credits=_credits(metadata.get("credits")),
        payment_id=_payment_intent_id(session.get("payment_intent")),
        amount_cents=_amount(session.get("amount_total"), "amount_total"),
        currency=_currency(session.get("currency")),
    )


def _credits(value: object) -> int | None:
    if value is None:
        return None
    # Stripe metadata values are strings; accept a JSON integer too.
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _DIGITS.fullmatch(text.strip()):
        raise InvalidEventError(f"metadata.credits is not a positive integer: {value!r}")
    credits = int(text)
    if not 0 < credits <= MAX_CREDITS:
        raise InvalidEventError(f"metadata.credits must be between 1 and {MAX_CREDITS}: {value!r}")
    return credits


def _amount(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidEventError(f"{name} is not a non-negative integer: {value!r}")
    return value


def _currency(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value):
        raise InvalidEventError(f"currency is not a three-letter code: {value!r}")
    return value.lower()


def _payment_intent_id(value: object) -> str | None:
    if isinstance(value, dict):  # expanded object
        value = value.get("id")
    return value if isinstance(value, str) and value else None
