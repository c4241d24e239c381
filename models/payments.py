"""Rules that move a payment: find or record it, record what happened, settle it.

Each rule records one fact about a payment (models/settlement.py explains why
facts, not transitions) and then settles the payment: status, history and
ledger follow from the facts. Callers hold one transaction; every rule locks
the payment row (``SELECT … FOR UPDATE``) before reading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.enums import DisputeStatus
from models.enums import PaymentStatus as S
from models.errors import NotReadyError, StaleEventError, UnknownPaymentError
from models.lifecycle import TransitionError
from models.rules import Rules
from models.settlement import settle
from models.tables import Dispute, Payment, PaymentAttempt


@dataclass(frozen=True)
class CheckoutFacts:
    """What a provider says about one checkout session."""

    provider: str
    provider_session_id: str
    user_id: str | None
    credits: int | None
    provider_payment_id: str | None = None
    amount_cents: int | None = None
    currency: str | None = None
    package_id: str | None = None
    occurred_at: datetime | None = None


def payment_key(provider: str, provider_payment_id: str) -> str:
    """What an event about money after checkout waits for while its payment is unknown or unpaid."""
    return f"{provider}:pi:{provider_payment_id}"


def lock_by_session(session: Session, provider: str, provider_session_id: str) -> Payment | None:
    return session.scalars(
        select(Payment)
        .where(Payment.provider == provider, Payment.provider_session_id == provider_session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def lock_by_payment_id(session: Session, provider: str, provider_payment_id: str) -> Payment | None:
    return session.scalars(
        select(Payment)
        .where(Payment.provider == provider, Payment.provider_payment_id == provider_payment_id)
        .order_by(Payment.id)
        .limit(1)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def lock_or_record(session: Session, facts: CheckoutFacts) -> Payment:
    """The payment for a checkout session, locked; recorded as pending if we had none."""
    if not facts.user_id or not facts.credits:
        payment = lock_by_session(session, facts.provider, facts.provider_session_id)
        if payment is None:
            raise UnknownPaymentError(
                f"no payment recorded for {facts.provider} session {facts.provider_session_id}, and the "
                "session carries no metadata.user_id (or client_reference_id) and metadata.credits"
            )
    else:
        # One statement: insert if new; either way the row comes back locked
        # (the no-op DO UPDATE takes the same lock a SELECT … FOR UPDATE would).
        payment = session.scalars(
            insert(Payment)
            .values(
                provider=facts.provider,
                provider_session_id=facts.provider_session_id,
                provider_payment_id=facts.provider_payment_id,
                user_id=facts.user_id,
                credits=facts.credits,
                amount_cents=facts.amount_cents,
                currency=facts.currency,
                package_id=facts.package_id,
                status=S.PENDING,
                details={},
            )
            .on_conflict_do_update(
                constraint="uq_payments_provider_provider_session_id",
                set_={"updated_at": Payment.updated_at},
            )
            .returning(Payment),
            execution_options={"populate_existing": True},
        ).one()
    _remember(payment, facts)
    return payment


def record_paid(session: Session, facts: CheckoutFacts, cause: str, rules: Rules) -> Payment:
    """The checkout is paid: complete it and grant its credits, once."""
    payment = lock_or_record(session, facts)
    if payment.paid_at is None:
        payment.paid_at = facts.occurred_at or datetime.now(UTC)
    settle(session, payment, cause, rules)
    return payment


def record_unpaid_status(
    session: Session, payment: Payment, status: S, at: datetime | None, cause: str, rules: Rules
) -> Payment:
    """Processing, failed, expired or cancelled: the newest such event wins, until paid."""
    if payment.paid_at is not None:
        # Paid wins: money taken is never un-taken by a late failure or expiry.
        raise TransitionError(S(payment.status), status)
    if at is not None and payment.unpaid_status_at is not None and at < payment.unpaid_status_at:
        raise StaleEventError(
            f"event from {at:%Y-%m-%dT%H:%M:%SZ} is older than the one that made the payment "
            f"{payment.unpaid_status}; state not moved"
        )
    payment.unpaid_status = status
    payment.unpaid_status_at = at
    settle(session, payment, cause, rules)
    return payment


def record_failed_attempt(
    session: Session, payment: Payment, code: str | None, message: str | None, at: datetime | None, cause: str, rules: Rules
) -> Payment:
    """Keep every failed attempt; it fails the payment only if it is the newest news of an unpaid one."""
    session.add(PaymentAttempt(payment_id=payment.id, code=code, message=message, cause=cause))
    superseded = at is not None and payment.unpaid_status_at is not None and at < payment.unpaid_status_at
    if payment.paid_at is not None or superseded:
        return payment  # a later attempt paid, or something newer happened: the attempt is kept for the record
    return record_unpaid_status(session, payment, S.FAILED, at, cause, rules)


def require_paid(session: Session, provider: str, provider_payment_id: str) -> Payment:
    """The paid payment behind a refund or dispute, locked; NotReadyError until it is known and paid."""
    payment = lock_by_payment_id(session, provider, provider_payment_id)
    if payment is None or payment.paid_at is None:
        state = "unknown" if payment is None else f"not paid yet ({payment.status})"
        raise NotReadyError(payment_key(provider, provider_payment_id), f"payment {provider_payment_id} is {state}")
    return payment


def require_known(session: Session, provider: str, provider_payment_id: str) -> Payment:
    payment = lock_by_payment_id(session, provider, provider_payment_id)
    if payment is None:
        raise NotReadyError(payment_key(provider, provider_payment_id), f"payment {provider_payment_id} is unknown")
    return payment


def record_refund(
    session: Session, payment: Payment, refunded_cents: int, amount_cents: int, cause: str, rules: Rules
) -> Payment:
    """Refunds are cumulative: keep the largest amount seen, so an old event changes nothing."""
    if payment.amount_cents is None:
        payment.amount_cents = amount_cents
    payment.refunded_cents = max(payment.refunded_cents, refunded_cents)
    settle(session, payment, cause, rules)
    return payment


_DISPUTE_RANK = {DisputeStatus.OPEN: 0, DisputeStatus.WON: 1, DisputeStatus.LOST: 1}


def record_dispute(
    session: Session,
    payment: Payment,
    provider_dispute_id: str,
    status: DisputeStatus,
    cause: str,
    rules: Rules,
    *,
    amount_cents: int | None = None,
    reason: str | None = None,
) -> Payment:
    """A dispute only moves forward: open, then won or lost."""
    session.execute(
        insert(Dispute)
        .values(
            provider=payment.provider,
            provider_dispute_id=provider_dispute_id,
            payment_id=payment.id,
            status=status,
            amount_cents=amount_cents,
            reason=reason,
            closed_at=None if status == DisputeStatus.OPEN else datetime.now(UTC),
        )
        .on_conflict_do_nothing(constraint="uq_disputes_provider_provider_dispute_id")
    )
    payment.has_disputes = True
    dispute = session.scalars(
        select(Dispute)
        .where(Dispute.provider == payment.provider, Dispute.provider_dispute_id == provider_dispute_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if _DISPUTE_RANK[DisputeStatus(status)] > _DISPUTE_RANK[DisputeStatus(dispute.status)]:
        dispute.status = status
        dispute.closed_at = datetime.now(UTC)
    settle(session, payment, cause, rules)
    return payment


def record_pending(session: Session, facts: CheckoutFacts, *, package_name: str | None, expires_at: datetime | None, details: dict) -> tuple[Payment, bool]:
    """Record a checkout the host application created; idempotent on (provider, session id)."""
    existing = lock_by_session(session, facts.provider, facts.provider_session_id)
    if existing is not None:
        return existing, False
    payment = lock_or_record(session, facts)
    payment.package_name = package_name
    payment.expires_at = expires_at
    payment.details = details
    session.flush()
    return payment, True


def _remember(payment: Payment, facts: CheckoutFacts) -> None:
    if facts.provider_payment_id and not payment.provider_payment_id:
        payment.provider_payment_id = facts.provider_payment_id
    if payment.amount_cents is None and facts.amount_cents is not None:
        payment.amount_cents = facts.amount_cents
    if payment.currency is None and facts.currency:
        payment.currency = facts.currency
    if facts.occurred_at and (
        payment.last_event_created_at is None or facts.occurred_at > payment.last_event_created_at
    ):
        payment.last_event_created_at = facts.occurred_at


def claim_for_check(
    session: Session, *, now: datetime, older_than: datetime, lease_until: datetime, limit: int, dry_run: bool = False
) -> list[tuple[int, str, datetime | None]]:
    """Claim up to ``limit`` pending or processing payments for a provider lookup.

    ``FOR UPDATE SKIP LOCKED`` keeps concurrent sweeps off each other's rows, and
    the lease (``next_check_at``) keeps them off for a while after this
    transaction commits, so nobody holds a transaction across the provider call.
    """
    due = (
        select(Payment.id)
        .where(
            Payment.status.in_([S.PENDING, S.PROCESSING]),
            Payment.provider_session_id.is_not(None),
            Payment.created_at < older_than,
            (Payment.next_check_at.is_(None)) | (Payment.next_check_at < now),
        )
        .order_by(Payment.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    columns = (Payment.id, Payment.provider_session_id, Payment.expires_at)
    if dry_run:
        return [tuple(row) for row in session.execute(select(*columns).where(Payment.id.in_(due.scalar_subquery())))]
    claimed = session.execute(
        update(Payment)
        .where(Payment.id.in_(due.scalar_subquery()))
        .values(next_check_at=lease_until)
        .returning(*columns)
        .execution_options(synchronize_session=False)
    )
    return sorted((tuple(row) for row in claimed), key=lambda row: row[0])


def release_claims(session: Session, payment_ids: list[int]) -> None:
    """Give back claims a sweep could not check (the provider was down), for the next sweep."""
    if payment_ids:
        session.execute(
            update(Payment).where(Payment.id.in_(payment_ids)).values(next_check_at=None).execution_options(synchronize_session=False)
        )
