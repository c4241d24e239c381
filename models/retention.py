"""Retention: raw payloads are dropped after a while, inbox ids kept longer for dedupe.

A provider may redeliver an event for days (Stripe: 3) and list it for 30, so
an inbox id must outlive both or a late copy would be applied again; the row
is tiny without its payload. Failed and held events keep their payload (an
operator may replay them; a dead letter also keeps its own copy). Work is done
in batches so no statement holds many locks for long.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
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
