"""The inbox: one row per provider event, so a redelivery is recognized.

Dedupe is a unique constraint and ``INSERT … ON CONFLICT DO NOTHING``, then a
``SELECT … FOR UPDATE`` of the row: concurrent deliveries of one event queue up
on that row lock, and every one after the first sees it already processed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.enums import EventStatus
from models.tables import WebhookEvent

SETTLED = frozenset({EventStatus.PROCESSED, EventStatus.IGNORED})


def claim_event(
    session: Session,
    *,
    provider: str,
    provider_event_id: str,
    event_type: str,
    payload: str,
    provider_created_at: datetime | None,
    source: str = "webhook",
) -> WebhookEvent:
    """Insert the event if new, and return its row locked for this transaction.

    One statement: ``INSERT … ON CONFLICT DO UPDATE`` counts the attempt and
    takes the row lock, so concurrent deliveries of one event queue up here and
    every one after the first sees what the first did.
    """
    return session.scalars(
        insert(WebhookEvent)
        .values(
            provider=provider,
            provider_event_id=provider_event_id,
            event_type=event_type,
            payload=payload,
            status=EventStatus.RECEIVED,
            source=source,
            attempts=1,
            provider_created_at=provider_created_at,
        )
        .on_conflict_do_update(
            constraint="uq_webhook_events_provider_provider_event_id",
            set_={"attempts": WebhookEvent.attempts + 1},
        )
        .returning(WebhookEvent),
        execution_options={"populate_existing": True},
    ).one()


def is_settled(row: WebhookEvent) -> bool:
    """True when the event was applied or deliberately ignored: nothing left to do."""
    return row.status in SETTLED


def settle(row: WebhookEvent, status: EventStatus, error: str | None = None) -> None:
    row.status = status
    row.last_error = error
    row.processed_at = datetime.now(UTC)


def held_event_ids(session: Session, limit: int) -> list[int]:
    """The oldest held events, to be retried one transaction each."""
    return list(
        session.scalars(
            select(WebhookEvent.id)
            .where(WebhookEvent.status == EventStatus.HELD)
            .order_by(WebhookEvent.received_at, WebhookEvent.id)
            .limit(limit)
        )
    )


def lock_if_held(session: Session, event_row_id: int) -> WebhookEvent | None:
    """The held event's row, locked — None if another transaction has it or it is no longer held."""
    return session.scalars(
        select(WebhookEvent)
        .where(WebhookEvent.id == event_row_id, WebhookEvent.status == EventStatus.HELD)
        .with_for_update(skip_locked=True)
    ).one_or_none()


def known_events(session: Session, events: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (provider, provider event id) pairs the inbox holds, in any status."""
    if not events:
        return set()
    return set(
        session.execute(
            select(WebhookEvent.provider, WebhookEvent.provider_event_id).where(
                tuple_(WebhookEvent.provider, WebhookEvent.provider_event_id).in_(events)
            )
        ).tuples()
    )
