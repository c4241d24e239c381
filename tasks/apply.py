"""Apply a provider-neutral change with the rule in ``models`` that owns it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from models import payments
from models.enums import EventStatus
from providers.changes import (
    Change,
    Checkout,
    Ignored,
    PaymentProcessing,
    PaymentSucceeded,
    ProviderEvent,
)


def apply_change(session: Session, event: ProviderEvent, change: Change) -> EventStatus:
    """Change rows for one event; return the status its inbox row should end with."""
    match change:
        case PaymentSucceeded(checkout=checkout):
            payments.complete_checkout(session, _facts(event, checkout), cause=event.id)
        case PaymentProcessing(checkout=checkout):
            payments.mark_processing(session, _facts(event, checkout), cause=event.id)
        case Ignored():
            return EventStatus.IGNORED
    return EventStatus.PROCESSED


def _facts(event: ProviderEvent, checkout: Checkout) -> payments.CheckoutFacts:
    return payments.CheckoutFacts(
        provider=event.provider,
        provider_session_id=checkout.session_id,
        user_id=checkout.user_id,
        credits=checkout.credits,
        provider_payment_id=checkout.payment_id,
        amount_cents=checkout.amount_cents,
        currency=checkout.currency,
        occurred_at=event.created,
    )
