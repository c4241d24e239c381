"""What the host application hears of a batch: outbox messages built from its real effects.

Built from what was written, not from what was asked: a ledger entry whose key
was already used announces nothing. Written by the batch in its own
transaction (models/outbox.py). Dead letters are announced wherever they are
written, through ``dead_letter`` here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy.orm import Session

from models import dead_letters, outbox
from models.enums import DisputeStatus, LedgerKind
from models.ledger import Entry
from models.outbox import Message, MessageType
from models.payments import PaymentRow
from models.settlement import StatusChange
from models.subscriptions import SubscriptionRow

_CREDIT_MESSAGES = {
    LedgerKind.GRANT: MessageType.CREDITS_GRANTED,
    LedgerKind.CLAWBACK: MessageType.CREDITS_REVOKED,
    LedgerKind.REVERSAL: MessageType.CREDITS_RESTORED,
}


def _payment(row: PaymentRow | None) -> dict:
    if row is None:
        return {}
    return {
        "payment_id": row.id,
        "provider": row.provider,
        "provider_session_id": row.provider_session_id,
        "provider_payment_id": row.provider_payment_id,
        "amount_cents": row.paid_amount_cents if row.paid_amount_cents is not None else row.amount_cents,
        "currency": row.paid_currency or row.currency,
    }


def of_entries(entries: Iterable[Entry], payments: Mapping[int, PaymentRow]) -> list[Message]:
    messages = []
    for entry in entries:
        kind = _CREDIT_MESSAGES.get(LedgerKind(entry.kind))
        if kind is None:
            continue
        row = payments.get(entry.payment_id) if entry.payment_id is not None else None
        data = {"user_id": entry.user_id, "credits": abs(entry.amount), **_payment(row), "cause": entry.cause}
        if kind == MessageType.CREDITS_REVOKED:
            lost = row is not None and any(d["status"] == DisputeStatus.LOST for d in row.disputes.values())
            data.update(reason="dispute" if lost else "refund", shortfall=entry.shortfall)
        messages.append(Message(kind, entry.key, data, entry.user_id))
    return messages


def of_status_changes(changes: Iterable[StatusChange], payments: Mapping[int, PaymentRow]) -> list[Message]:
    messages = []
    for change in changes:
        row = payments.get(change.payment_id)
        data = {
            **_payment(row),
            "payment_id": change.payment_id,
            "user_id": row.user_id if row else None,
            "from": change.from_status,
            "to": change.to_status,
            "cause": change.cause,
        }
        key = f"{change.payment_id}:{change.from_status}:{change.to_status}:{change.cause}"
        messages.append(Message(MessageType.PAYMENT_STATUS_CHANGED, key, data, data["user_id"]))
    return messages


def of_subscriptions(rows: Iterable[SubscriptionRow]) -> list[Message]:
    return [
        Message(
            MessageType.SUBSCRIPTION_CHANGED,
            f"{row.provider}:{row.provider_subscription_id}:{row.last_event_id}",
            {
                "provider": row.provider,
                "subscription_id": row.provider_subscription_id,
                "user_id": row.user_id,
                "status": row.status,
                "price_id": row.price_id,
                "current_period_end": row.current_period_end.isoformat() if row.current_period_end else None,
            },
            row.user_id,
        )
        for row in rows
    ]


def dead_letter(session: Session, failure: dead_letters.Failure) -> int:
    """Dead-letter an event and announce it, in the caller's transaction; the dead letter's id."""
    letter_id, attempts = dead_letters.record(session, failure)
    outbox.add(session, [Message(
        MessageType.DEAD_LETTER_CREATED,
        f"{letter_id}:{attempts}",
        {
            "dead_letter_id": letter_id,
            "provider": failure.provider,
            "event_id": failure.event_id,
            "event_type": failure.event_type,
            "error_class": failure.error_class.value,
            "error": failure.message,
            "attempts": attempts,
        },
    )])
    return letter_id
