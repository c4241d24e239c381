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


# The first message young enough to keep. Ids grow with time, so everything
# expired lies below it; found once per run by walking the primary key from the
# oldest row (outbox_messages has no index on created_at: the hot path writes it).
_FIRST_KEPT = text(
    "SELECT id FROM outbox_messages WHERE created_at >= :older_than ORDER BY id LIMIT 1"
)

# A batch after the last one, below the first kept: each batch reads only its own
# rows, not again those the batches before it deleted or had to leave.
_OLD_OUTBOX = text(
    """
    DELETE FROM outbox_messages WHERE id IN (
        SELECT m.id FROM outbox_messages m
        WHERE m.id > :after AND m.id < :below
          AND m.created_at < :older_than
          AND m.dispatched_at IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM outbound_deliveries d WHERE d.outbox_id = m.id AND d.status = 'pending')
        ORDER BY m.id LIMIT :batch_size
        FOR UPDATE OF m SKIP LOCKED)
    RETURNING id
    """
)


class OutboxPruner:
    """Deletes settled outbox messages written before ``older_than``, a batch per call, oldest first.

    Their deliveries and attempts cascade. A message with a pending delivery
    stays (a replay holds its message with ``FOR SHARE``, models/outbound.py,
    so one being replayed is skipped, not deleted under it).
    """

    def __init__(self, older_than: datetime) -> None:
        self.older_than = older_than
        self._after = 0
        self._below: int | None = None

    def __call__(self, session: Session, *, batch_size: int) -> int:
        if self._below is None:
            first_kept = session.scalar(_FIRST_KEPT, {"older_than": self.older_than})
            self._below = first_kept if first_kept is not None else 2**63 - 1
        deleted = list(session.scalars(_OLD_OUTBOX, {
            "after": self._after, "below": self._below, "older_than": self.older_than, "batch_size": batch_size,
        }))
        if deleted:
            self._after = max(deleted)
        return len(deleted)
