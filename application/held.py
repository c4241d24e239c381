"""The periodic retry of held events.

Held events are normally applied the moment an event touching what they wait
for is applied (application/batch.py). This catches any that moment missed,
retries those waiting for a provider lookup (a session's line items), and
ends the wait of those whose predecessor never comes: past the hold window
they are dead-lettered with the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from application import announcements
from application.batch import Incoming
from application.unit import UnitOfWork
from models import dead_letters, inbox
from models.enums import ErrorClass, EventStatus
from models.tables import WebhookEvent
from providers import registry
from providers.changes import InvalidEventError


def retry_held(unit: UnitOfWork, *, hold_window: timedelta, batch_size: int = 100, now: datetime | None = None) -> dict[str, int]:
    now = now or datetime.now(UTC)
    counts = {"applied": 0, "still_held": 0, "expired": 0, "other": 0}
    with unit.database.transaction() as session:
        rows = inbox.held(session, batch_size)
    retry = []
    for row in rows:
        if row.received_at is not None and row.received_at < now - hold_window:
            counts["expired"] += _expire(unit, row.row_id, f"held longer than {hold_window}")
            continue
        try:
            retry.append(Incoming(registry.get(row.provider).parse_event(row.payload), "retry"))
        except (InvalidEventError, LookupError, TypeError, UnicodeDecodeError):
            counts["other"] += _expire(unit, row.row_id, "its stored body can no longer be read")
    report = unit.apply(retry)
    for result in report.results:
        if result.status == EventStatus.PROCESSED:
            counts["applied"] += 1
        elif result.status == EventStatus.HELD:
            counts["still_held"] += 1
        else:
            counts["other"] += 1
    return counts


def _expire(unit: UnitOfWork, row_id: int, why: str) -> int:
    """Dead-letter a held event that waited too long; 0 if someone else has it or it is no longer held."""
    with unit.database.transaction() as session:
        row: WebhookEvent | None = inbox.lock_row(session, row_id, skip_locked=True)
        if row is None or row.status != EventStatus.HELD:
            return 0
        message = f"{why} waiting for {row.hold_key}"
        letter = announcements.dead_letter(
            session,
            dead_letters.Failure(row.provider, row.provider_event_id, row.event_type, row.payload or "",
                                 ErrorClass.NOT_READY, message),
        )
        inbox.mark(session, row.id, EventStatus.FAILED, message, letter)
    return 1
