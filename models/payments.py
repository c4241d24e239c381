"""Rules that move a payment: find or record it, complete it, grant its credits.

Callers hold one transaction; every function here locks the payment row
(``SELECT … FOR UPDATE``) before reading its status, so a webhook, a sweep and a
verify racing on one checkout session apply their change one after another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import ledger
from models.enums import LedgerKind
from models.enums import PaymentStatus as S
from models.lifecycle import GRANTED, advance
from models.tables import Payment


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
    occurred_at: datetime | None = None


class UnknownPaymentError(LookupError):
    """No payment is recorded for a session, and the provider's copy cannot create one."""


@dataclass(frozen=True)
class Outcome:
    payment_id: int
    status: str
    credits_added: int


def lock_by_session(session: Session, provider: str, provider_session_id: str) -> Payment | None:
    return session.scalars(
        select(Payment)
        .where(Payment.provider == provider, Payment.provider_session_id == provider_session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def lock_or_record(session: Session, facts: CheckoutFacts) -> Payment:
    """The payment for a checkout session, locked; recorded as pending if we had none."""
    payment = lock_by_session(session, facts.provider, facts.provider_session_id)
    if payment is not None:
        return payment
    if not facts.user_id or not facts.credits:
        raise UnknownPaymentError(
            f"no payment recorded for {facts.provider} session {facts.provider_session_id}, "
            "and the session carries no metadata.user_id (or client_reference_id) and metadata.credits"
        )
    session.execute(
        insert(Payment)
        .values(
            provider=facts.provider,
            provider_session_id=facts.provider_session_id,
            provider_payment_id=facts.provider_payment_id,
            user_id=facts.user_id,
            credits=facts.credits,
            amount_cents=facts.amount_cents,
            currency=facts.currency,
            status=S.PENDING,
            details={},
        )
        .on_conflict_do_nothing(constraint="uq_payments_provider_provider_session_id")
    )
    payment = lock_by_session(session, facts.provider, facts.provider_session_id)
    assert payment is not None  # inserted above, or by a racer we waited for
    return payment


def complete_checkout(session: Session, facts: CheckoutFacts, cause: str) -> Outcome:
    """Mark a paid checkout completed and grant its credits, once."""
    payment = lock_or_record(session, facts)
    _remember(payment, facts)
    if S(payment.status) in GRANTED:
        return Outcome(payment.id, payment.status, 0)
    advance(session, payment, S.COMPLETED, cause)
    # The payment row (recorded when the checkout was created) is the authority on
    # who gets how many credits; the provider's copy only fills a row we lacked.
    granted = ledger.post_entry(
        session,
        user_id=payment.user_id,
        amount=payment.credits,
        kind=LedgerKind.GRANT,
        idempotency_key=ledger.grant_key(payment.provider, payment.id),
        cause=cause,
        payment_id=payment.id,
    )
    return Outcome(payment.id, payment.status, payment.credits if granted else 0)


def mark_processing(session: Session, facts: CheckoutFacts, cause: str) -> Outcome:
    """A completed checkout whose payment has not cleared yet (an async method)."""
    payment = lock_or_record(session, facts)
    _remember(payment, facts)
    if S(payment.status) == S.PENDING:
        advance(session, payment, S.PROCESSING, cause)
    return Outcome(payment.id, payment.status, 0)


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
