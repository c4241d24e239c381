"""Dead letters: events that failed for good, with their raw body, for an operator.

One row per provider event. It is written in the same transaction that settles
the inbox row as failed, and the inbox row points at it. Failing again after a
replay reopens the same row and counts the attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, case, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.enums import DeadLetterStatus, ErrorClass
from models.tables import DeadLetter


@dataclass(frozen=True)
class Failure:
    """An event that failed for good, as the dead letter records it."""

    provider: str
    event_id: str
    event_type: str
    payload: str
    error_class: ErrorClass
    message: str
    traceback: str | None = None


def record(session: Session, failure: Failure) -> tuple[int, int]:
    """Dead-letter an event (or count another failure of it); the dead letter's id and its attempts."""
    now = datetime.now(UTC)
    statement = insert(DeadLetter).values(
        provider=failure.provider,
        provider_event_id=failure.event_id,
        event_type=failure.event_type,
        payload=failure.payload or "",
        error_class=failure.error_class,
        error_message=failure.message,
        traceback=failure.traceback,
        attempts=1,
        first_failed_at=now,
        last_failed_at=now,
        status=DeadLetterStatus.OPEN,
    )
    discarded = DeadLetter.status == DeadLetterStatus.DISCARDED
    return session.execute(
        statement.on_conflict_do_update(
            constraint="uq_dead_letters_provider_provider_event_id",
            set_={
                "error_class": statement.excluded.error_class,
                "error_message": statement.excluded.error_message,
                "traceback": statement.excluded.traceback,
                "attempts": DeadLetter.attempts + 1,
                "last_failed_at": statement.excluded.last_failed_at,
                # An operator's discard stands when the provider redelivers the same event;
                # a replayed letter that fails again is open again.
                "status": case((discarded, DeadLetter.status), else_=DeadLetterStatus.OPEN.value),
                "resolved_by": case((discarded, DeadLetter.resolved_by), else_=None),
                "resolved_at": case((discarded, DeadLetter.resolved_at), else_=None),
                "resolution_note": case((discarded, DeadLetter.resolution_note), else_=None),
            },
        ).returning(DeadLetter.id, DeadLetter.attempts)
    ).one()


@dataclass(frozen=True)
class Filters:
    status: DeadLetterStatus | None = DeadLetterStatus.OPEN
    provider: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    error: str | None = None  # a substring of the error message, case-insensitive

    def apply(self, query: Select) -> Select:
        if self.status is not None:
            query = query.where(DeadLetter.status == self.status)
        if self.provider:
            query = query.where(DeadLetter.provider == self.provider)
        if self.event_type:
            query = query.where(DeadLetter.event_type == self.event_type)
        if self.since:
            query = query.where(DeadLetter.last_failed_at >= self.since)
        if self.error:
            query = query.where(DeadLetter.error_message.icontains(self.error, autoescape=True))
        return query


def find(session: Session, filters: Filters, *, limit: int | None = None, offset: int = 0) -> tuple[list[DeadLetter], int]:
    total = session.scalar(filters.apply(select(func.count()).select_from(DeadLetter)))
    query = filters.apply(select(DeadLetter)).order_by(DeadLetter.last_failed_at.desc(), DeadLetter.id.desc()).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query)), total


def ids_matching(session: Session, filters: Filters) -> list[int]:
    return list(session.scalars(filters.apply(select(DeadLetter.id)).order_by(DeadLetter.id)))


def lock(session: Session, dead_letter_id: int) -> DeadLetter | None:
    return session.scalars(
        select(DeadLetter).where(DeadLetter.id == dead_letter_id).with_for_update().execution_options(populate_existing=True)
    ).one_or_none()


def resolve(letter: DeadLetter, status: DeadLetterStatus, actor: str, note: str | None = None) -> None:
    letter.status = status
    letter.resolved_by = actor
    letter.resolved_at = datetime.now(UTC)
    letter.resolution_note = note
