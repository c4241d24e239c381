"""Where reconciliation got to, per provider: the newest event ``created`` it has seen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.tables import ProviderCursor


def read_cursor(session: Session, provider: str) -> datetime | None:
    return session.scalar(select(ProviderCursor.last_event_created_at).where(ProviderCursor.provider == provider))


def advance_cursor(session: Session, provider: str, seen: datetime) -> None:
    """Move the cursor forward to ``seen``; never back (two runs at once may finish in any order)."""
    statement = insert(ProviderCursor).values(provider=provider, last_event_created_at=seen)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[ProviderCursor.provider],
            set_={
                "last_event_created_at": func.greatest(ProviderCursor.last_event_created_at, statement.excluded.last_event_created_at),
                "updated_at": func.now(),
            },
        )
    )
