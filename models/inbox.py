"""The inbox: one row per provider event, so a redelivery is recognized.

Dedupe is a unique constraint and ``INSERT … ON CONFLICT``: a batch claims all
its events in one statement, which inserts the new ones and locks every row,
so concurrent deliveries of one event queue up on that row lock and every one
after the first sees what the first did. Rows are claimed in key order, so
two batches never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from models.enums import EventStatus
from models.tables import WebhookEvent

SETTLED = frozenset({EventStatus.PROCESSED, EventStatus.IGNORED})


@dataclass(frozen=True)
class Arrival:
    """An event as it reaches the inbox."""

    provider: str
    event_id: str
    event_type: str
    payload: str
    created: datetime | None
    source: str = "webhook"
    copies: int = 1  # deliveries of it in this batch


@dataclass(frozen=True)
class Claimed:
    row_id: int
    status: EventStatus
    attempts: int

    @property
    def settled(self) -> bool:
        """Applied or deliberately ignored: nothing left to do."""
        return self.status in SETTLED


@dataclass(frozen=True)
class Outcome:
    row_id: int
    status: EventStatus
    error: str | None = None
    hold_key: str | None = None
    dead_letter_id: int | None = None


_CLAIM = text(
    """
    INSERT INTO webhook_events AS w
        (provider, provider_event_id, event_type, payload, status, source, attempts, provider_created_at)
    SELECT i.provider, i.event_id, i.event_type, i.payload, 'received', i.source, i.copies, i.created
    FROM unnest(CAST(:providers AS text[]), CAST(:event_ids AS text[]), CAST(:event_types AS text[]),
                CAST(:payloads AS text[]), CAST(:sources AS text[]), CAST(:created AS timestamptz[]),
                CAST(:copies AS integer[]))
         AS i(provider, event_id, event_type, payload, source, created, copies)
    ORDER BY i.provider, i.event_id
    ON CONFLICT ON CONSTRAINT uq_webhook_events_provider_provider_event_id
        DO UPDATE SET attempts = w.attempts + EXCLUDED.attempts
    RETURNING w.id, w.provider, w.provider_event_id, w.status, w.attempts
    """
)

_SETTLE = text(
    """
    UPDATE webhook_events AS w SET
        status = o.status, last_error = o.error, hold_key = o.hold_key,
        dead_letter_id = coalesce(o.dead_letter_id, w.dead_letter_id), processed_at = now()
    FROM unnest(CAST(:row_ids AS bigint[]), CAST(:statuses AS text[]), CAST(:errors AS text[]),
                CAST(:hold_keys AS text[]), CAST(:dead_letter_ids AS bigint[]))
         AS o(row_id, status, error, hold_key, dead_letter_id)
    WHERE w.id = o.row_id
    """
)


def claim(session: Session, arrivals: Sequence[Arrival]) -> list[Claimed]:
    """Insert the new events and lock every row; one Claimed per arrival, in order.

    The arrivals must be distinct (an upsert cannot touch one row twice).
    """
    if not arrivals:
        return []
    rows = session.execute(
        _CLAIM,
        {
            "providers": [a.provider for a in arrivals],
            "event_ids": [a.event_id for a in arrivals],
            "event_types": [a.event_type for a in arrivals],
            "payloads": [a.payload for a in arrivals],
            "sources": [a.source for a in arrivals],
            "created": [a.created for a in arrivals],
            "copies": [a.copies for a in arrivals],
        },
    ).all()
    by_key = {(provider, event_id): Claimed(row_id, EventStatus(status), attempts) for row_id, provider, event_id, status, attempts in rows}
    return [by_key[(a.provider, a.event_id)] for a in arrivals]


def settle(session: Session, outcomes: Sequence[Outcome]) -> None:
    if outcomes:
        session.execute(
            _SETTLE,
            {
                "row_ids": [o.row_id for o in outcomes],
                "statuses": [o.status.value for o in outcomes],
                "errors": [o.error for o in outcomes],
                "hold_keys": [o.hold_key for o in outcomes],
                "dead_letter_ids": [o.dead_letter_id for o in outcomes],
            },
        )


@dataclass(frozen=True)
class Stored:
    """An event kept in the inbox, to be applied again (held, or replayed)."""

    row_id: int
    provider: str
    event_id: str
    payload: str | None
    status: EventStatus
    received_at: datetime | None = None


# The partial index on hold_key (WHERE status = 'held') answers this; one array per list.
_HELD_FOR = text(
    """
    SELECT id, provider, provider_event_id, payload, status, received_at FROM webhook_events
    WHERE status = 'held' AND hold_key = ANY(CAST(:keys AS text[])) AND id <> ALL(CAST(:exclude AS bigint[]))
    ORDER BY provider_created_at ASC NULLS FIRST, id
    FOR UPDATE SKIP LOCKED
    """
)


def held_for(session: Session, keys: Sequence[str], exclude: Sequence[int] = ()) -> list[Stored]:
    """Events held for any of these keys, oldest first, locked; rows another transaction has are skipped.

    A row skipped here is being handled right now by whoever has it (a
    redelivery, the periodic retry), which applies it or holds it again.
    """
    if not keys:
        return []
    rows = session.execute(_HELD_FOR, {"keys": sorted(set(keys)), "exclude": sorted(exclude)})
    return [Stored(*row) for row in rows]


def held(session: Session, limit: int, *, received_before: datetime | None = None) -> list[Stored]:
    """The oldest held events (optionally only those received before a time)."""
    query = (
        select(WebhookEvent.id, WebhookEvent.provider, WebhookEvent.provider_event_id, WebhookEvent.payload, WebhookEvent.status, WebhookEvent.received_at)
        .where(WebhookEvent.status == EventStatus.HELD)
        .order_by(WebhookEvent.received_at, WebhookEvent.id)
        .limit(limit)
    )
    if received_before is not None:
        query = query.where(WebhookEvent.received_at < received_before)
    return [Stored(*row) for row in session.execute(query)]


def stored(session: Session, provider: str, event_id: str) -> Stored | None:
    row = session.execute(
        select(WebhookEvent.id, WebhookEvent.provider, WebhookEvent.provider_event_id, WebhookEvent.payload, WebhookEvent.status, WebhookEvent.received_at)
        .where(WebhookEvent.provider == provider, WebhookEvent.provider_event_id == event_id)
    ).one_or_none()
    return Stored(*row) if row is not None else None


def lock_row(session: Session, row_id: int, *, skip_locked: bool = False) -> WebhookEvent | None:
    return session.scalars(
        select(WebhookEvent).where(WebhookEvent.id == row_id).with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    ).one_or_none()


def mark(session: Session, row_id: int, status: EventStatus, error: str | None, dead_letter_id: int | None = None) -> None:
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == row_id)
        .values(status=status, last_error=error, hold_key=None, processed_at=text("now()"),
                dead_letter_id=dead_letter_id if dead_letter_id is not None else WebhookEvent.dead_letter_id)
        .execution_options(synchronize_session=False)
    )
