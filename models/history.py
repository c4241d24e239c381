"""What happened to payments, in bulk: status moves and failed attempts, insert-only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from models.settlement import StatusChange


@dataclass(frozen=True)
class Attempt:
    """An attempt to pay that failed or needs the customer, with the provider's code and message."""

    payment_id: int
    code: str | None
    message: str | None
    cause: str


_HISTORY = text(
    """
    INSERT INTO payment_status_history (payment_id, from_status, to_status, cause, actor, reason)
    SELECT * FROM unnest(CAST(:payment_ids AS bigint[]), CAST(:from_statuses AS text[]),
                         CAST(:to_statuses AS text[]), CAST(:causes AS text[]),
                         CAST(:actors AS text[]), CAST(:reasons AS text[]))
    """
)

_ATTEMPTS = text(
    """
    INSERT INTO payment_attempts (payment_id, code, message, cause)
    SELECT * FROM unnest(CAST(:payment_ids AS bigint[]), CAST(:codes AS text[]),
                         CAST(:messages AS text[]), CAST(:causes AS text[]))
    """
)


def record_status_changes(session: Session, changes: Sequence[StatusChange]) -> None:
    if changes:
        session.execute(
            _HISTORY,
            {
                "payment_ids": [c.payment_id for c in changes],
                "from_statuses": [c.from_status for c in changes],
                "to_statuses": [c.to_status for c in changes],
                "causes": [c.cause for c in changes],
                "actors": [c.actor for c in changes],
                "reasons": [c.reason for c in changes],
            },
        )


def record_attempts(session: Session, attempts: Sequence[Attempt]) -> None:
    if attempts:
        session.execute(
            _ATTEMPTS,
            {
                "payment_ids": [a.payment_id for a in attempts],
                "codes": [a.code for a in attempts],
                "messages": [a.message for a in attempts],
                "causes": [a.cause for a in attempts],
            },
        )
