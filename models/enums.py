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
    IGNORED = "ignored"  # nothing to do (a type we do not handle, a stale or disallowed change); last_error says why
    HELD = "held"  # waits for an event it depends on (a refund before its payment); hold_key names it
    FAILED = "failed"  # can never be applied as it is; last_error says why


class LedgerKind(StrEnum):
    GRANT = "grant"  # credits bought: a payment completed, a subscription invoice paid
    CLAWBACK = "clawback"  # credits taken back: a refund or a lost dispute
    REVERSAL = "reversal"  # a clawback given back: the refund behind it failed or was canceled
    SPEND = "spend"  # credits used by the host application


class DisputeStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class RefundStatus(StrEnum):
    """A refund's status; it only moves to a higher rank (failed and canceled are final)."""

    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def rank(self) -> int:
        return _REFUND_RANK[self]

    @property
    def live(self) -> bool:
        """Money went (or is going) back to the customer."""
        return self not in (RefundStatus.FAILED, RefundStatus.CANCELED)


_REFUND_RANK = {
    RefundStatus.PENDING: 0,
    RefundStatus.REQUIRES_ACTION: 0,
    RefundStatus.SUCCEEDED: 1,
    RefundStatus.FAILED: 2,
    RefundStatus.CANCELED: 2,
}


class FraudPolicy(StrEnum):
    OFF = "off"  # a fraud warning or an open dispute is recorded; credits stay spendable
    FREEZE = "freeze"  # a payment under a fraud warning or open dispute has its unspent credits held (not spendable)


class ZeroAmountInvoices(StrEnum):
    SKIP = "skip"  # a $0 invoice (trial, 100% coupon) grants nothing
    GRANT = "grant"  # a $0 invoice grants its period's credits like a paid one


class ClawbackPolicy(StrEnum):
    ALLOW_NEGATIVE = "allow_negative"  # take back everything; the balance may go below zero
    FLOOR_AT_ZERO = "floor_at_zero"  # stop at zero and record the shortfall on the ledger entry


def sql_in(enum: type[StrEnum]) -> str:
    """A CHECK constraint body listing an enum's values."""
    return ", ".join(f"'{member.value}'" for member in enum)


class ErrorClass(StrEnum):
    PERMANENT = "permanent"  # the event can never be applied as it is
    TRANSIENT = "transient"  # kept failing for a passing reason past the retry limit
    NOT_READY = "not_ready"  # waited past the hold window for an event it depends on
    UNEXPECTED = "unexpected"  # a bug: an exception nobody classified


class DeadLetterStatus(StrEnum):
    OPEN = "open"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


class JobStatus(StrEnum):
    QUEUED = "queued"  # recorded, its task published, no worker has taken it yet
    RUNNING = "running"  # a worker is working through its items; done says how far
    FINISHED = "finished"  # every item was tried; outcomes say how each went
    FAILED = "failed"  # stopped early: error says why (items after done were not tried)


class JobKind(StrEnum):
    DEAD_LETTER_REPLAY = "dead_letter_replay"
