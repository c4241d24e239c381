"""Retention: raw payloads are dropped after a while, inbox ids kept longer for dedupe.

A provider may redeliver an event for days (Stripe: 3) and list it for 30, so
an inbox id must outlive both or a late copy would be applied again; the row
is tiny without its payload. Failed and held events keep their payload (an
operator may replay them; a dead letter also keeps its own copy). Outbox
messages go with their deliveries and attempt log once none of them is
pending: every event writes a few, so they would otherwise outgrow the rest.
Work is done in batches so no statement holds many locks for long.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from models.enums import EventStatus
from models.tables import WebhookEvent

MIN_INBOX_RETENTION_DAYS = 35
SETTLED = (EventStatus.PROCESSED, EventStatus.IGNORED)


def prune_payloads(session: Session, *, older_than: datetime, batch_size: int) -> int:
    ids = (
        select(WebhookEvent.id)
        .where(WebhookEvent.status.in_(SETTLED), WebhookEvent.payload.is_not(None), WebhookEvent.received_at < older_than)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    return session.execute(
        update(WebhookEvent).where(WebhookEvent.id.in_(ids.scalar_subquery())).values(payload=None)
        .execution_options(synchronize_session=False)
    ).rowcount


def delete_old_rows(session: Session, *, older_than: datetime, batch_size: int) -> int:
    ids = (
        select(WebhookEvent.id)
        .where(WebhookEvent.status.in_(SETTLED), WebhookEvent.received_at < older_than)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    return session.execute(
        delete(WebhookEvent).where(WebhookEvent.id.in_(ids.scalar_subquery())).execution_options(synchronize_session=False)
    ).rowcount


# Oldest first along the primary key, and only below the first message young enough
# to keep: ids grow with time, so this reads the expired rows and not the whole
# table (outbox_messages has no index on created_at, and the hot path writes it).
_OLD_OUTBOX = text(
    """
    DELETE FROM outbox_messages WHERE id IN (
        SELECT m.id FROM outbox_messages m
        WHERE m.id < COALESCE(
                (SELECT k.id FROM outbox_messages k WHERE k.created_at >= :older_than ORDER BY k.id LIMIT 1),
                9223372036854775807)
          AND m.created_at < :older_than
          AND m.dispatched_at IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM outbound_deliveries d WHERE d.outbox_id = m.id AND d.status = 'pending')
        ORDER BY m.id LIMIT :batch_size
        FOR UPDATE OF m SKIP LOCKED)
    """
)


def delete_old_outbox(session: Session, *, older_than: datetime, batch_size: int) -> int:
    """Settled outbox messages written before ``older_than``; their deliveries and attempts cascade."""
    return session.execute(_OLD_OUTBOX, {"older_than": older_than, "batch_size": batch_size}).rowcount
