"""Apply a provider-neutral change with the rule in ``models`` that owns it.

``subject_keys`` names what a change touches (its checkout session, payment,
subscription). Processing takes a transaction-scoped advisory lock on each, in
a fixed order, before touching rows: events about one payment then apply one
after another, so an event held for want of its payment and the event that
records that payment cannot miss each other. The same keys name the held
events an applied change may unblock.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from models import payments, subscriptions
from models.enums import DisputeStatus
from models.enums import PaymentStatus as S
from models.payments import payment_key
from models.rules import Rules
from models.subscriptions import subscription_key
from providers.changes import (
    AttemptFailed,
    Change,
    Checkout,
    CheckoutExpired,
    CheckoutFailed,
    DisputeClosed,
    DisputeOpened,
    Ignored,
    InvoicePaid,
    PaymentCanceled,
    PaymentProcessing,
    PaymentSucceeded,
    ProviderEvent,
    Refunded,
    SubscriptionChanged,
)


@dataclass(frozen=True)
class Applied:
    changed: bool
    payment_id: int | None = None


CHECKOUT_CHANGES = (PaymentSucceeded, PaymentProcessing, CheckoutFailed, CheckoutExpired)
PAYMENT_CHANGES = (AttemptFailed, PaymentCanceled, Refunded, DisputeOpened, DisputeClosed)


def subject_keys(provider: str, change: Change) -> list[str]:
    keys: set[str] = set()
    if isinstance(change, CHECKOUT_CHANGES):
        keys.add(f"{provider}:cs:{change.checkout.session_id}")
        if change.checkout.payment_id:
            keys.add(payment_key(provider, change.checkout.payment_id))
    elif isinstance(change, PAYMENT_CHANGES):
        keys.add(payment_key(provider, change.payment_id))
    elif isinstance(change, SubscriptionChanged):
        keys.add(subscription_key(provider, change.subscription_id))
    elif isinstance(change, InvoicePaid):
        keys.add(subscription_key(provider, change.subscription_id))
        keys.add(f"{provider}:in:{change.invoice_id}")
        if change.payment_id:
            keys.add(payment_key(provider, change.payment_id))
    return sorted(keys)


_LOCK_KEYS = text(
    # Volatile functions in the select list run after ORDER BY, so the locks are
    # taken in key order: two transactions never wait on each other in a cycle.
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"
)


def lock_subjects(session: Session, keys: list[str]) -> None:
    if keys:
        session.execute(_LOCK_KEYS, {"keys": keys})


def apply_change(session: Session, event: ProviderEvent, change: Change, rules: Rules) -> Applied:
    """Change rows for one event; Applied(False) when there was nothing to do (Ignored)."""
    cause, at, provider = event.id, event.created, event.provider
    payment = None
    match change:
        case Ignored():
            return Applied(False)
        case PaymentSucceeded(checkout=checkout):
            payment = payments.record_paid(session, _facts(event, checkout), cause, rules)
        case PaymentProcessing(checkout=checkout):
            payment = payments.lock_or_record(session, _facts(event, checkout))
            payments.record_unpaid_status(session, payment, S.PROCESSING, at, cause, rules)
        case CheckoutFailed(checkout=checkout, code=code, message=message):
            payment = payments.lock_or_record(session, _facts(event, checkout))
            payments.record_failed_attempt(session, payment, code, message, at, cause, rules)
        case CheckoutExpired(checkout=checkout):
            payment = payments.lock_or_record(session, _facts(event, checkout))
            payments.record_unpaid_status(session, payment, S.EXPIRED, at, cause, rules)
        case AttemptFailed(payment_id=payment_id, code=code, message=message):
            payment = payments.require_known(session, provider, payment_id)
            payments.record_failed_attempt(session, payment, code, message, at, cause, rules)
        case PaymentCanceled(payment_id=payment_id):
            payment = payments.require_known(session, provider, payment_id)
            payments.record_unpaid_status(session, payment, S.CANCELLED, at, cause, rules)
        case Refunded(payment_id=payment_id, refunded_cents=refunded, amount_cents=amount):
            payment = payments.require_paid(session, provider, payment_id)
            payments.record_refund(session, payment, refunded, amount, cause, rules)
        case DisputeOpened(payment_id=payment_id, dispute_id=dispute_id, amount_cents=amount, reason=reason):
            payment = payments.require_paid(session, provider, payment_id)
            payments.record_dispute(
                session, payment, dispute_id, DisputeStatus.OPEN, cause, rules, amount_cents=amount, reason=reason
            )
        case DisputeClosed(payment_id=payment_id, dispute_id=dispute_id, won=won, amount_cents=amount, reason=reason):
            payment = payments.require_paid(session, provider, payment_id)
            outcome = DisputeStatus.WON if won else DisputeStatus.LOST
            payments.record_dispute(session, payment, dispute_id, outcome, cause, rules, amount_cents=amount, reason=reason)
        case SubscriptionChanged():
            subscriptions.record_subscription(
                session,
                subscriptions.SubscriptionFacts(
                    provider=provider,
                    provider_subscription_id=change.subscription_id,
                    status=change.status,
                    provider_customer_id=change.customer_id,
                    user_id=change.user_id,
                    price_id=change.price_id,
                    credits_per_period=change.credits,
                    current_period_end=change.current_period_end,
                    occurred_at=at,
                ),
            )
        case InvoicePaid():
            payment = subscriptions.record_invoice_paid(
                session,
                subscriptions.InvoiceFacts(
                    provider=provider,
                    invoice_id=change.invoice_id,
                    subscription_id=change.subscription_id,
                    user_id=change.user_id,
                    credits=change.credits,
                    price_id=change.price_id,
                    amount_cents=change.amount_cents,
                    currency=change.currency,
                    provider_payment_id=change.payment_id,
                    occurred_at=at,
                ),
                cause,
                rules,
            )
    return Applied(True, payment.id if payment is not None else None)


def _facts(event: ProviderEvent, checkout: Checkout) -> payments.CheckoutFacts:
    return payments.CheckoutFacts(
        provider=event.provider,
        provider_session_id=checkout.session_id,
        user_id=checkout.user_id,
        credits=checkout.credits,
        provider_payment_id=checkout.payment_id,
        amount_cents=checkout.amount_cents,
        currency=checkout.currency,
        package_id=checkout.package_id,
        occurred_at=event.created,
    )
