"""Operating on dead letters: list, show, replay (one or many), discard.

Replay goes through the same path as a delivery (``apply_event`` on the
event's inbox row, then releasing what it unblocks), one transaction per dead
letter. Replaying an event that was applied meanwhile changes nothing but the
dead letter's status; replaying a dead letter that is no longer open changes
nothing at all. If the event fails again, the dead letter stays open with one
more attempt and the new reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from application.batch import BatchReport, Incoming
from application.unit import UnitOfWork, result_of
from models import dead_letters, inbox
from models.dead_letters import Filters
from models.enums import DeadLetterStatus, EventStatus
from models.tables import DeadLetter
from providers import registry
from providers.changes import InvalidEventError
from providers.registry import UnknownProviderError


class DeadLetterNotFoundError(LookupError):
    pass


@dataclass(frozen=True)
class ReplayResult:
    dead_letter_id: int
    outcome: str  # replayed | already_applied | failed_again | still_held | not_open
    event_status: str | None = None
    error: str | None = None


class DeadLetters:
    def __init__(self, unit: UnitOfWork) -> None:
        self.unit = unit
        self.database = unit.database

    def list(self, filters: Filters, *, limit: int | None = 100, offset: int = 0) -> tuple[list[dict], int]:
        with self.database.transaction() as session:
            letters, total = dead_letters.find(session, filters, limit=limit, offset=offset)
            return [view(letter) for letter in letters], total

    def show(self, dead_letter_id: int) -> dict:
        with self.database.transaction() as session:
            letter = session.get(DeadLetter, dead_letter_id)
            if letter is None:
                raise DeadLetterNotFoundError(f"no dead letter {dead_letter_id}")
            return view(letter, full=True)

    def matching(self, filters: Filters) -> list[int]:
        with self.database.transaction() as session:
            return dead_letters.ids_matching(session, filters)

    def replay(self, dead_letter_id: int, actor: str) -> ReplayResult:
        """Apply a dead letter's event again, through the same path as a delivery."""
        with self.database.transaction() as session:
            letter = dead_letters.lock(session, dead_letter_id)
            if letter is None:
                raise DeadLetterNotFoundError(f"no dead letter {dead_letter_id}")
            if letter.status != DeadLetterStatus.OPEN:
                return ReplayResult(dead_letter_id, "not_open", error=f"dead letter is {letter.status}")
            row = inbox.stored(session, letter.provider, letter.provider_event_id)
            if row is None or row.status in inbox.SETTLED:
                # Retention deletes only settled inbox rows: the event was applied long ago.
                note = "already applied" if row is not None else "already applied (inbox row pruned)"
                dead_letters.resolve(letter, DeadLetterStatus.REPLAYED, actor, note)
                return ReplayResult(dead_letter_id, "already_applied", row.status if row is not None else None)
            provider, payload = letter.provider, row.payload or letter.payload
        try:
            event = registry.get(provider).parse_event(payload)
        except (InvalidEventError, UnknownProviderError, UnicodeDecodeError) as exc:
            return ReplayResult(dead_letter_id, "failed_again", EventStatus.FAILED, f"not an event: {exc}")

        def resolve(session: Session, report: BatchReport) -> None:
            result = result_of(report, incoming)
            again = dead_letters.lock(session, dead_letter_id)
            if again is not None and again.status == DeadLetterStatus.OPEN and result.status in inbox.SETTLED:
                dead_letters.resolve(again, DeadLetterStatus.REPLAYED, actor)

        incoming = Incoming(event, "replay")
        result = self.unit.apply_one(incoming, also=resolve)
        if result.status == EventStatus.FAILED:
            return ReplayResult(dead_letter_id, "failed_again", result.status, result.error)
        if result.status == EventStatus.HELD:
            # What it waits for has still not come: nothing was applied, so the letter stays open.
            return ReplayResult(dead_letter_id, "still_held", result.status, result.error)
        if result.duplicate:
            return ReplayResult(dead_letter_id, "already_applied", result.status)
        return ReplayResult(dead_letter_id, "replayed", result.status)

    def discard(self, dead_letter_id: int, actor: str, reason: str) -> dict:
        if not reason.strip():
            raise ValueError("a reason is required to discard a dead letter")
        with self.database.transaction() as session:
            letter = dead_letters.lock(session, dead_letter_id)
            if letter is None:
                raise DeadLetterNotFoundError(f"no dead letter {dead_letter_id}")
            if letter.status == DeadLetterStatus.OPEN:
                dead_letters.resolve(letter, DeadLetterStatus.DISCARDED, actor, reason)
            return view(letter)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def view(letter: DeadLetter, full: bool = False) -> dict:
    data = {
        "id": letter.id,
        "provider": letter.provider,
        "event_id": letter.provider_event_id,
        "event_type": letter.event_type,
        "error_class": letter.error_class,
        "error": letter.error_message,
        "attempts": letter.attempts,
        "first_failed_at": _time(letter.first_failed_at),
        "last_failed_at": _time(letter.last_failed_at),
        "status": letter.status,
        "resolved_by": letter.resolved_by,
        "resolved_at": _time(letter.resolved_at),
        "resolution_note": letter.resolution_note,
    }
    if full:
        data["traceback"] = letter.traceback
        data["payload"] = letter.payload
    return data
