"""Scheduled work on the ``maintenance`` queue. Every task is safe to run twice at once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from celery import shared_task

from models import inbox
from models.enums import EventStatus
from tasks.base import PayhooksTask
from tasks.errors import is_transient
from tasks.handling import apply_event, parse_stored, release_held
from workers.queues import RETRY_HELD_EVENTS

log = logging.getLogger("payhooks.maintenance")


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
                inbox.settle(row, EventStatus.FAILED, f"held longer than {hold_window} waiting for {row.hold_key}")
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


@shared_task(bind=True, base=PayhooksTask, name=RETRY_HELD_EVENTS)
def retry_held_events(self: PayhooksTask) -> dict:
    settings = self.runtime.settings
    try:
        counts = retry_held(
            self.runtime.db, self.runtime.rules, hold_window=timedelta(seconds=settings.hold_window_seconds)
        )
    except Exception as exc:
        if is_transient(exc):
            log.warning("held-event retry skipped: %s (the next run will try again)", exc.__class__.__name__)
            return {"skipped": 1}
        raise
    if any(counts.values()):
        log.info("held events: %s", counts)
    return counts
