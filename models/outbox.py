"""The outbox: what the host application must hear of, written in the transaction that made it true.

Every change that matters to the application — credits granted, taken back or
given back, a payment's status, a subscription's, a dead letter — becomes a
message here in the same transaction as the change itself: nothing is
announced that was rolled back, nothing committed is left unannounced. Each
message has a stable id derived from what it announces (a ledger entry's key,
a status move and its cause), so announcing the same change twice is one
message. Consumers (outbound webhooks, e-mail receipts, in-process hooks) read
from here after commit, never inside the money transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session


class MessageType(StrEnum):
    CREDITS_GRANTED = "credits.granted"
    CREDITS_REVOKED = "credits.revoked"  # a refund or a lost dispute took credits back
    CREDITS_RESTORED = "credits.restored"  # a refund that failed gave them back
    PAYMENT_STATUS_CHANGED = "payment.status_changed"
    SUBSCRIPTION_CHANGED = "subscription.changed"
    DEAD_LETTER_CREATED = "dead_letter.created"


@dataclass(frozen=True)
class Message:
    type: MessageType
    key: str  # what it announces, unique per type: the message id is derived from it
    data: dict
    user_id: str | None = None

    @property
    def message_id(self) -> str:
        return message_id(self.type, self.key)


def message_id(kind: str, key: str) -> str:
    return "msg_" + hashlib.sha256(f"{kind}|{key}".encode()).hexdigest()[:24]


_ADD = text(
    """
    INSERT INTO outbox_messages (message_id, type, user_id, data)
    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:users AS text[]),
                         CAST(:data AS jsonb[]))
    ON CONFLICT (message_id) DO NOTHING
    """
)


def add(session: Session, messages: Sequence[Message]) -> int:
    """Write messages in the caller's transaction (one statement; an id already written is skipped); how many were new."""
    if not messages:
        return 0
    return session.execute(
            _ADD,
            {
                "ids": [m.message_id for m in messages],
                "types": [m.type.value for m in messages],
                "users": [m.user_id for m in messages],
                "data": [orjson.dumps(m.data).decode() for m in messages],
            },
        ).rowcount
