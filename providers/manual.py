"""Manual payments (bank transfer, cash, other): an operator's marks as events.

Nobody sends us webhooks for money handed over the counter, so an operator's
mark — paid, failed, cancelled, refunded — and the sweep's expiry become
synthetic events of this small shape, which go through the same inbox,
translation and apply path as a provider's:

    {"id": "mark_<sha256 of the caller's idempotency key>", "provider": "manual",
     "type": "payment.paid", "created": "2026-11-29T22:00:00.000001+00:00",
     "payment": "man_…", "actor": "cli:alice", "reason": "transfer arrived",
     "data": {"reference": "…", "amount_cents": 5000, "currency": "eur"}}

``payment`` is the manual payment's session id (``payments.provider_session_id``),
made when it was recorded. The id comes from the caller's key, so the same key
twice is one mark (the inbox's dedupe); ``request_of`` is what the same key
must ask again to count as the same request. No I/O here.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime

from providers.changes import (
    Change,
    InvalidEventError,
    PaymentCanceled,
    PaymentExpired,
    PaymentFailed,
    PaymentRef,
    PaymentSucceeded,
    ProviderEvent,
    Purchase,
    RefundChanged,
    Refunded,
)

NAME = "manual"
METHODS = ("bank_transfer", "cash", "other")

PAID = "payment.paid"
FAILED = "payment.failed"
CANCELLED = "payment.cancelled"
EXPIRED = "payment.expired"
REFUNDED = "payment.refunded"


def session_id(key: str | None) -> str:
    """The id a manual payment is recorded under: from the caller's key (so recording it twice is once), else fresh."""
    if key is None:
        return "man_" + uuid.uuid4().hex
    return "man_" + hashlib.sha256(f"record:{key}".encode()).hexdigest()[:32]


def event_id(key: str | None) -> str:
    """A mark's event id: a digest of the caller's key (which may be anything the caller likes), else fresh."""
    if key is None:
        return "mark_" + uuid.uuid4().hex
    return "mark_" + hashlib.sha256(f"mark:{key}".encode()).hexdigest()[:40]


def expiry_id(payment: str) -> str:
    """The one expiry a manual payment can have, whoever's sweep applies it."""
    return f"expire_{payment}"


def mark(
    event_type: str,
    payment: str,
    *,
    id: str,  # noqa: A002  (the event's, as in the body)
    actor: str,
    now: datetime,
    reason: str | None = None,
    data: dict | None = None,
) -> ProviderEvent:
    """The synthetic event for a mark on the manual payment recorded under ``payment``."""
    body = {
        "id": id,
        "provider": NAME,
        "type": event_type,
        "created": now.isoformat(),
        "payment": payment,
        "actor": actor,
        "reason": reason,
        "data": data or {},
    }
    return parse_event(json.dumps(body, separators=(",", ":"), sort_keys=True))


def request_of(event: ProviderEvent) -> dict:
    """What a caller asked for, without when or by whom: the same key must ask the same again."""
    asked = {name: value for name, value in event.data["data"].items() if name != "captured_cents"}  # derived, not asked
    return {"type": event.type, "payment": event.data["payment"], "reason": event.reason, "data": asked}


def parse_event(body: bytes | str) -> ProviderEvent:
    raw = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        event = json.loads(raw)
    except ValueError:
        raise InvalidEventError("body is not JSON") from None
    if not isinstance(event, dict):
        raise InvalidEventError("body is not a JSON object")
    for name in ("id", "type", "payment", "actor"):
        if not isinstance(event.get(name), str) or not event[name]:
            raise InvalidEventError(f"event has no string {name}")
    if event["type"] not in HANDLERS:
        raise InvalidEventError("event type is not a manual payment mark")
    if not isinstance(event.get("data"), dict):
        raise InvalidEventError("event has no data object")
    if event.get("reason") is not None and not isinstance(event["reason"], str):
        raise InvalidEventError("event reason is not a string")
    try:
        created = datetime.fromisoformat(event["created"])
    except (TypeError, ValueError):
        raise InvalidEventError("event has no ISO 8601 created time") from None
    if created.tzinfo is None:
        raise InvalidEventError("event created time has no time zone")
    return ProviderEvent(
        provider=NAME,
        id=event["id"],
        type=event["type"],
        created=created,
        data={"payment": event["payment"], "data": event["data"]},
        raw=raw,
        actor=event["actor"],
        reason=event.get("reason"),
    )


# -- translation -----------------------------------------------------------------


def payment_paid(event: ProviderEvent) -> Change:
    data = event.data["data"]
    return PaymentSucceeded(
        _ref(event),
        Purchase(line_items=()),  # the mark says all there is: no catalog or API to ask about a payment nobody recorded
        paid_amount_cents=_amount(data, "amount_cents", required=False),
        paid_currency=_str(data, "currency"),
        reference=_str(data, "reference"),
    )


def payment_failed(event: ProviderEvent) -> Change:
    return PaymentFailed(_ref(event), code="manual", message=event.reason)


def payment_cancelled(event: ProviderEvent) -> Change:
    return PaymentCanceled(_ref(event), reason=event.reason)


def payment_expired(event: ProviderEvent) -> Change:
    return PaymentExpired(_ref(event))


def payment_refunded(event: ProviderEvent) -> Change:
    """A refund of part of the money is one refund of its own; a full refund says all of it went back."""
    data = event.data["data"]
    if data.get("full") is True:
        captured = _amount(data, "captured_cents")
        return Refunded(_ref(event), refunded_cents=captured, captured_cents=captured)
    return RefundChanged(_ref(event), refund_id=event.id, amount_cents=_amount(data, "amount_cents"), status="succeeded")


HANDLERS = {
    PAID: payment_paid,
    FAILED: payment_failed,
    CANCELLED: payment_cancelled,
    EXPIRED: payment_expired,
    REFUNDED: payment_refunded,
}
HANDLED_TYPES = tuple(HANDLERS)


def translate(event: ProviderEvent) -> Change:
    return HANDLERS[event.type](event)


def _ref(event: ProviderEvent) -> PaymentRef:
    return PaymentRef(session_id=event.data["payment"])


def _amount(data: dict, name: str, *, required: bool = True) -> int | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidEventError(f"data.{name} is not a positive integer")
    return value


def _str(data: dict, name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidEventError(f"data.{name} is not a string")
    return value or None
