"""Handle one provider event inside the caller's transaction. No Celery here.

Claim the inbox row (insert or find, then lock it) and stop if the event was
already settled. Translate it, lock what it is about, and apply the change in a
savepoint; then settle the inbox row:

* processed — applied; any events held for what it touched are applied now;
* ignored   — nothing to do: a type we do not handle, a stale event, or a move
              the lifecycle table does not allow (recorded with the reason);
* held      — it depends on something not seen yet (a refund before its
              payment); applied when that arrives, or by the periodic retry;
* failed    — it can never be applied as it is; the reason is recorded.

A permanent failure rolls back only the savepoint, so the reason is recorded
once instead of crash-looping. Anything else propagates and rolls the whole
transaction back for the task to retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import dead_letters, inbox
from models.enums import ErrorClass, EventStatus
from models.errors import NotReadyError, StaleEventError, UnknownPaymentError
from models.lifecycle import TransitionError
from models.rules import Rules
from models.tables import WebhookEvent
from providers import stripe
from providers.changes import InvalidEventError, ProviderEvent
from workers.apply import apply_change, lock_subjects, subject_keys

PROVIDERS = {stripe.NAME: stripe}

PERMANENT = (InvalidEventError, UnknownPaymentError)
NOTHING_TO_DO = (TransitionError, StaleEventError)


@dataclass(frozen=True)
class EventResult:
    event_id: str
    status: EventStatus
    duplicate: bool = False
    error: str | None = None
    keys: list[str] = field(default_factory=list)
    released: int = 0
    payment_id: int | None = None
    error_class: str | None = None


def claim(session: Session, event: ProviderEvent, source: str) -> WebhookEvent:
    """The event's inbox row, inserted if new, locked for this transaction."""
    return inbox.claim_event(
        session,
        provider=event.provider,
        provider_event_id=event.id,
        event_type=event.type,
        payload=event.raw,
        provider_created_at=event.created,
        source=source,
    )


def handle_event(session: Session, event: ProviderEvent, rules: Rules, source: str = "webhook") -> EventResult:
    """Record and apply one event; safe to repeat, concurrently or not."""
    row = claim(session, event, source)
    if inbox.is_settled(row):
        return EventResult(event.id, EventStatus(row.status), duplicate=True)
    result = apply_event(session, row, event, rules)
    if result.status == EventStatus.PROCESSED:
        released = release_held(session, result.keys, rules)
        return EventResult(result.event_id, result.status, keys=result.keys, released=released, payment_id=result.payment_id)
    return result


def apply_event(session: Session, row: WebhookEvent, event: ProviderEvent, rules: Rules) -> EventResult:
    """Apply an event whose inbox row this transaction holds, and settle that row."""
    try:
        change = PROVIDERS[event.provider].translate(event)
        keys = subject_keys(event.provider, change)
        lock_subjects(session, keys)
        with session.begin_nested():
            applied = apply_change(session, event, change, rules)
    except PERMANENT as exc:
        return fail(session, row, ErrorClass.PERMANENT, str(exc))
    except NOTHING_TO_DO as exc:
        return _settle(row, event, EventStatus.IGNORED, str(exc))
    except NotReadyError as exc:
        row.hold_key = exc.key
        return _settle(row, event, EventStatus.HELD, f"held: {exc}", keep_hold=True)
    if not applied.changed:
        return _settle(row, event, EventStatus.IGNORED, getattr(change, "reason", None))
    result = _settle(row, event, EventStatus.PROCESSED, None)
    return EventResult(result.event_id, result.status, keys=keys, payment_id=applied.payment_id)


def _settle(row: WebhookEvent, event: ProviderEvent, status: EventStatus, error: str | None, keep_hold: bool = False) -> EventResult:
    if not keep_hold:
        row.hold_key = None
    inbox.settle(row, status, error)
    return EventResult(event.id, status, error=error)


def fail(session: Session, row: WebhookEvent, error_class: ErrorClass, message: str, traceback: str | None = None) -> EventResult:
    """Settle an inbox row as failed and dead-letter it with its raw body, in this transaction."""
    row.hold_key = None
    inbox.settle(row, EventStatus.FAILED, message)
    dead_letters.record(session, row, error_class, message, traceback)
    return EventResult(row.provider_event_id, EventStatus.FAILED, error=message, error_class=error_class)


def release_held(session: Session, keys: list[str], rules: Rules) -> int:
    """Apply events held for any of these keys (and for what those unblock in turn)."""
    seen: set[str] = set()
    wave, released = set(keys), 0
    while wave:
        seen |= wave
        rows = session.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.hold_key.in_(sorted(wave)), WebhookEvent.status == EventStatus.HELD)
            .order_by(WebhookEvent.provider_created_at.asc().nulls_first(), WebhookEvent.id)
            .with_for_update(skip_locked=True)  # a redelivery being handled right now handles itself
        ).all()
        wave = set()
        for row in rows:
            row.attempts += 1
            result = apply_event(session, row, parse_stored(row), rules)
            if result.status == EventStatus.PROCESSED:
                released += 1
                wave |= set(result.keys) - seen
    return released


def parse_stored(row: WebhookEvent) -> ProviderEvent:
    return PROVIDERS[row.provider].parse_event(row.payload)


def retry_held(db, rules, *, hold_window: timedelta, batch_size: int = 100, now: datetime | None = None) -> dict:
    """Retry held events, one transaction each; fail those that waited longer than the window.

    Held events are normally applied the moment their predecessor is; this
    catches any the moment missed and ends the wait of those whose predecessor
    never comes, with the reason on the inbox row.
    """
    now = now or datetime.now(UTC)
    counts = {"applied": 0, "still_held": 0, "expired": 0, "other": 0}
    with db.transaction() as session:
        ids = inbox.held_event_ids(session, batch_size)
    for row_id in ids:
        with db.transaction() as session:
            row = inbox.lock_if_held(session, row_id)
            if row is None:
                continue  # another sweep or a redelivery has it
            if row.received_at < now - hold_window:
                fail(session, row, ErrorClass.NOT_READY, f"held longer than {hold_window} waiting for {row.hold_key}")
                counts["expired"] += 1
                continue
            row.attempts += 1
            result = apply_event(session, row, parse_stored(row), rules)
            if result.status == EventStatus.PROCESSED:
                release_held(session, result.keys, rules)
                counts["applied"] += 1
            elif result.status == EventStatus.HELD:
                counts["still_held"] += 1
            else:
                counts["other"] += 1
    return counts
