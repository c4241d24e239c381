"""Status vocabularies shared by the tables and the rules that change them."""

from enum import StrEnum


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    DISPUTED = "disputed"


class EventStatus(StrEnum):
    RECEIVED = "received"  # in the inbox, not yet applied (only visible mid-transaction)
    PROCESSED = "processed"  # applied
    IGNORED = "ignored"  # a type we do not act on; kept for dedupe and audit
    FAILED = "failed"  # can never be applied as it is; last_error says why


class LedgerKind(StrEnum):
    GRANT = "grant"
    CLAWBACK = "clawback"


def sql_in(enum: type[StrEnum]) -> str:
    """A CHECK constraint body listing an enum's values."""
    return ", ".join(f"'{member.value}'" for member in enum)
