"""A payment's status and credits, derived from the facts recorded about it. No I/O.

Each fact only moves forward — paid once, the largest cumulative refund a
charge reported, each refund's status (pending → succeeded → failed or
canceled), each dispute's (open → won or lost), each fraud warning's — except
before payment, where the newest event wins. Because the status and the
credits are functions of those facts, applying a payment's events in any order
ends in the same state as the provider's order.

Refunded amount. Refunds are known two ways: a charge's cumulative
``amount_refunded`` and each refund object. A refund that fails is taken off
again, so the amount refunded is

    max(Σ live refunds, largest cumulative reported − Σ failed refunds)

which is right whichever of a charge event and its refunds' events came first
(the cumulative figure never includes a refund that had already failed when
the charge was reported, because a failure comes after its refund).

Credits. A paid payment is granted its credits once. What is taken back is a
target, not a sum of steps:

    refunds:      floor(credits × refunded / captured amount)
    lost dispute: all the credits

Rounding down means a partial refund never takes back more than its share,
and because the target is computed from the cumulative amount, a full refund
takes back exactly what was granted, however it was split.

Holds. Under the freeze policy, a payment with an actionable fraud warning or
an open dispute has what is left of its credits held (still in the balance,
not spendable) as far as the user's unheld balance covers them, until that is
resolved. A hold moves no credits, so it is not a ledger entry: it is the
payment's ``credits_frozen`` and the account's ``frozen``.

Status, once paid: refunded (fully, or by a lost dispute) > disputed (a
dispute is open) > partially_refunded > completed.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import keys, lifecycle
from models.enums import DisputeStatus, FraudPolicy, LedgerKind, RefundStatus
from models.enums import PaymentStatus as S
from models.lifecycle import TransitionError, can_advance
from models.payments import PaymentRow

UNPAID = lifecycle.UNPAID
# Ties between unpaid statuses in the same second end the same in any arrival
# order: the higher rank wins, and then the larger event id.
UNPAID_RANK = {S.PROCESSING: 0, S.FAILED: 1, S.CANCELLED: 2, S.EXPIRED: 3}


@dataclass(frozen=True)
class Posting:
    """One ledger entry to write; ``key`` makes it happen at most once."""

    user_id: str
    amount: int
    kind: LedgerKind
    key: str
    cause: str
    payment_id: int | None = None


@dataclass(frozen=True)
class StatusChange:
    payment_id: int
    from_status: str
    to_status: str
    cause: str
    actor: str | None = None  # who: the provider, or the operator behind a manual mark
    reason: str | None = None  # why, when a person said


@dataclass(frozen=True)
class Settled:
    row: PaymentRow
    status_change: StatusChange | None
    postings: tuple[Posting, ...]
    held: int = 0  # change in the credits held for this payment (the account's frozen moves by it)


def refunded_amount(row: PaymentRow) -> int:
    live = failed = 0
    for refund in row.refunds.values():
        if RefundStatus(refund["status"]).live:
            live += refund["amount_cents"]
        else:
            failed += refund["amount_cents"]
    return max(live, row.refunded_cents - failed, 0)


def captured_amount(row: PaymentRow) -> int | None:
    """What refunds are measured against: what was captured, else the price recorded."""
    return row.paid_amount_cents if row.paid_amount_cents else row.amount_cents


def _dispute_statuses(row: PaymentRow) -> set[str]:
    return {d["status"] for d in row.disputes.values()}


def derive_status(row: PaymentRow) -> S:
    if row.paid_at is None:
        return S(row.unpaid_status) if row.unpaid_status else S.PENDING
    disputes = _dispute_statuses(row)
    refunded = refunded_amount(row)
    basis = captured_amount(row)
    # With no amount on record, any refund is a full one.
    fully_refunded = refunded > 0 and (not basis or refunded >= basis)
    if DisputeStatus.LOST in disputes or fully_refunded:
        return S.REFUNDED
    if DisputeStatus.OPEN in disputes:
        return S.DISPUTED
    if refunded > 0:
        return S.PARTIALLY_REFUNDED
    return S.COMPLETED


def takeback_target(row: PaymentRow) -> int:
    """How many of the payment's credits should have been taken back by now."""
    if row.paid_at is None:
        return 0
    if DisputeStatus.LOST in _dispute_statuses(row):
        return row.credits
    refunded = refunded_amount(row)
    if not refunded:
        return 0
    basis = captured_amount(row) or 0
    if basis <= 0 or refunded >= basis:
        return row.credits
    return row.credits * refunded // basis


def under_suspicion(row: PaymentRow) -> bool:
    """An actionable fraud warning or an open dispute: what the freeze policy holds credits back for."""
    warned = any(w.get("actionable") for w in row.fraud_warnings.values())
    return warned or DisputeStatus.OPEN in _dispute_statuses(row)


def freeze_target(row: PaymentRow, policy: FraudPolicy, unheld: int | None) -> int:
    """Credits to hold: what is left of this payment's, no more than the user's balance not held for others."""
    if policy != FraudPolicy.FREEZE or row.paid_at is None or not under_suspicion(row):
        return 0
    left = row.credits_granted - row.credits_taken_back
    return max(0, min(left, unheld or 0))


def ledger_key(row: PaymentRow, kind: LedgerKind, cause: str) -> str:
    """One entry of each kind per payment and cause; the grant once per payment, whatever the cause."""
    if kind == LedgerKind.GRANT:
        return keys.grant_key(row.provider, row.id)
    return keys.entry_key(row.provider, row.id, kind.value, cause)


def settle(row: PaymentRow, cause: str, *, fraud_policy: FraudPolicy = FraudPolicy.OFF, unheld: int | None = None) -> Settled:
    """Bring the status, the credits and the hold in line with the payment's facts.

    ``unheld`` is the user's balance less what is held for other payments,
    needed only to hold unspent credits. Raises TransitionError if the
    lifecycle table does not allow the derived status.
    """
    target = derive_status(row)
    change = None
    if target != row.status:
        if not can_advance(row.status, target):
            raise TransitionError(S(row.status), target)
        change = StatusChange(row.id, row.status, target, cause)
        row = row.changed(status=target)
    if row.paid_at is None:
        return Settled(row, change, ())

    postings: list[Posting] = []

    def post(kind: LedgerKind, amount: int) -> None:
        postings.append(Posting(row.user_id, amount, kind, ledger_key(row, kind, cause), cause, row.id))

    if row.credits_granted == 0 and row.credits > 0:
        post(LedgerKind.GRANT, row.credits)
        row = row.changed(credits_granted=row.credits)
    owed = takeback_target(row)
    if owed > row.credits_taken_back:
        post(LedgerKind.CLAWBACK, -(owed - row.credits_taken_back))
        row = row.changed(credits_taken_back=owed)
    elif owed < row.credits_taken_back:
        post(LedgerKind.REVERSAL, row.credits_taken_back - owed)
        row = row.changed(credits_taken_back=owed)
    if unheld is not None:
        unheld += sum(p.amount for p in postings)  # what this settling moved counts too
    hold = freeze_target(row, fraud_policy, unheld)
    held = hold - row.credits_frozen
    if held:
        row = row.changed(credits_frozen=hold)
    return Settled(row, change, tuple(postings), held)
