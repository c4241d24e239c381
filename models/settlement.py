"""A payment's status and credits, derived from the facts recorded about it.

Each fact only moves forward — paid once, the cumulative refunded amount only
grows, a dispute goes from open to won or lost and never back — except before
payment, where the newest event (by the provider's ``created``) wins. Because
the status and the credits are functions of those facts, applying a payment's
events in any order ends in the same state as the provider's order.

Credits. A paid payment is granted its credits once. What is taken back is a
target, not a sum of steps:

    refunds:      floor(credits × min(refunded, amount) / amount)
    lost dispute: all the credits

Rounding down means a partial refund never takes back more than its share, and
because the target is computed from the cumulative amount, a full refund always
takes back exactly what was granted, however it was split. Each step posts the
difference between the target and what was already taken back, under the key
``…:clawback-to:<target>``, so every step happens once.

Status, once paid: refunded (fully, or by a lost dispute) > disputed (a dispute
is open) > partially_refunded > completed. A won dispute therefore returns the
payment to completed or partially_refunded, whichever it was.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import ledger
from models.enums import DisputeStatus, LedgerKind
from models.enums import PaymentStatus as S
from models.lifecycle import advance
from models.rules import Rules
from models.tables import CreditLedger, Dispute, Payment

UNPAID = frozenset({S.PROCESSING, S.FAILED, S.EXPIRED, S.CANCELLED})


def derive_status(payment: Payment, disputes: list[str]) -> S:
    if payment.paid_at is None:
        return S(payment.unpaid_status) if payment.unpaid_status else S.PENDING
    # Same rule as takeback_target: with no amount on record, any refund is a full one.
    fully_refunded = payment.refunded_cents > 0 and (
        not payment.amount_cents or payment.refunded_cents >= payment.amount_cents
    )
    if DisputeStatus.LOST in disputes or fully_refunded:
        return S.REFUNDED
    if DisputeStatus.OPEN in disputes:
        return S.DISPUTED
    if payment.refunded_cents > 0:
        return S.PARTIALLY_REFUNDED
    return S.COMPLETED


def takeback_target(payment: Payment, disputes: list[str]) -> int:
    """How many of the payment's credits should have been taken back by now."""
    if payment.paid_at is None:
        return 0
    if DisputeStatus.LOST in disputes:
        return payment.credits
    if not payment.refunded_cents:
        return 0
    amount = payment.amount_cents or 0
    if amount <= 0 or payment.refunded_cents >= amount:
        return payment.credits
    return payment.credits * payment.refunded_cents // amount


def settle(session: Session, payment: Payment, cause: str, rules: Rules) -> None:
    """Bring the status, history and ledger in line with the payment's facts."""
    disputes = (
        list(session.scalars(select(Dispute.status).where(Dispute.payment_id == payment.id)))
        if payment.has_disputes
        else []
    )
    target = derive_status(payment, disputes)
    if target != payment.status:
        advance(session, payment, target, cause)
    if payment.paid_at is None:
        return
    ledger.post_entry(
        session,
        user_id=payment.user_id,
        amount=payment.credits,
        kind=LedgerKind.GRANT,
        idempotency_key=ledger.grant_key(payment.provider, payment.id),
        cause=cause,
        payment_id=payment.id,
    )
    owed = takeback_target(payment, disputes)
    taken = taken_back(session, payment.id) if owed else 0
    if owed > taken:
        ledger.post_entry(
            session,
            user_id=payment.user_id,
            amount=-(owed - taken),
            kind=LedgerKind.CLAWBACK,
            idempotency_key=f"{payment.provider}:payment:{payment.id}:clawback-to:{owed}",
            cause=cause,
            payment_id=payment.id,
            policy=rules.clawback_policy,
        )


def taken_back(session: Session, payment_id: int) -> int:
    """Credits already taken back for a payment, counting shortfalls as taken (they were owed)."""
    return int(session.scalar(
        select(func.coalesce(func.sum(-CreditLedger.amount + CreditLedger.shortfall), 0)).where(
            CreditLedger.payment_id == payment_id, CreditLedger.kind == LedgerKind.CLAWBACK
        )
    ))
