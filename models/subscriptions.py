"""Subscriptions and their paid invoices.

A subscription row follows the provider's object (newest event wins). A paid
invoice becomes a payment of its own — recorded, paid and settled like a
checkout — so its credits are granted once per invoice and a refund of it is
handled like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.errors import NotReadyError, StaleEventError, UnknownPaymentError
from models.payments import CheckoutFacts, record_paid
from models.rules import Rules
from models.tables import Payment, Subscription


def subscription_key(provider: str, provider_subscription_id: str) -> str:
    return f"{provider}:sub:{provider_subscription_id}"


@dataclass(frozen=True)
class SubscriptionFacts:
    provider: str
    provider_subscription_id: str
    status: str
    provider_customer_id: str | None = None
    user_id: str | None = None
    price_id: str | None = None
    credits_per_period: int | None = None
    current_period_end: datetime | None = None
    occurred_at: datetime | None = None


def lock_subscription(session: Session, provider: str, provider_subscription_id: str) -> Subscription | None:
    return session.scalars(
        select(Subscription)
        .where(Subscription.provider == provider, Subscription.provider_subscription_id == provider_subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def record_subscription(session: Session, facts: SubscriptionFacts) -> Subscription:
    session.execute(
        insert(Subscription)
        .values(provider=facts.provider, provider_subscription_id=facts.provider_subscription_id, status=facts.status)
        .on_conflict_do_nothing(constraint="uq_subscriptions_provider_provider_subscription_id")
    )
    row = lock_subscription(session, facts.provider, facts.provider_subscription_id)
    if facts.occurred_at and row.last_event_created_at and facts.occurred_at < row.last_event_created_at:
        raise StaleEventError("subscription event is older than the last one applied; state not moved")
    row.status = facts.status
    row.last_event_created_at = facts.occurred_at or row.last_event_created_at
    for name in ("provider_customer_id", "user_id", "price_id", "credits_per_period", "current_period_end"):
        value = getattr(facts, name)
        if value is not None:
            setattr(row, name, value)
    return row


@dataclass(frozen=True)
class InvoiceFacts:
    provider: str
    invoice_id: str
    subscription_id: str
    user_id: str | None
    credits: int | None
    price_id: str | None
    amount_cents: int | None = None
    currency: str | None = None
    provider_payment_id: str | None = None
    occurred_at: datetime | None = None


def record_invoice_paid(session: Session, facts: InvoiceFacts, cause: str, rules: Rules) -> Payment:
    """Grant a paid period's credits, once per invoice."""
    subscription = lock_subscription(session, facts.provider, facts.subscription_id)
    user_id = facts.user_id or (subscription.user_id if subscription else None)
    credits = (
        facts.credits
        or (rules.subscription_plans.get(facts.price_id) if facts.price_id else None)
        or (subscription.credits_per_period if subscription else None)
    )
    if not user_id or not credits:
        missing = " and ".join(n for n, v in (("user", user_id), ("credits", credits)) if not v)
        if subscription is None:
            raise NotReadyError(
                subscription_key(facts.provider, facts.subscription_id),
                f"invoice {facts.invoice_id}: {missing} unknown until subscription {facts.subscription_id} is seen",
            )
        raise UnknownPaymentError(
            f"invoice {facts.invoice_id}: subscription {facts.subscription_id} gives no {missing} "
            "(set metadata.user_id / metadata.credits on the subscription, or configure subscription_plans)"
        )
    payment = record_paid(
        session,
        CheckoutFacts(
            provider=facts.provider,
            provider_session_id=facts.invoice_id,
            user_id=user_id,
            credits=credits,
            provider_payment_id=facts.provider_payment_id,
            amount_cents=facts.amount_cents,
            currency=facts.currency,
            occurred_at=facts.occurred_at,
        ),
        cause,
        rules,
    )
    if not payment.details:
        payment.details = {"subscription_id": facts.subscription_id, "price_id": facts.price_id}
    return payment
