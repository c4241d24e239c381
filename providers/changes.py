"""The provider-neutral vocabulary: what an event means for our payments.

Handlers return one of these frozen dataclasses; ``workers.apply`` hands each to
the rule in ``models`` that changes rows. Adding a provider means mapping its
events onto these, not adding new rules.

Payments are found by the provider's checkout session id (``session_id``) or,
for events about money after checkout (refunds, disputes, failed attempts), by
the provider's payment id (a Stripe PaymentIntent, ``payment_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class SignatureError(ValueError):
    """A delivery's signature is missing, malformed, stale or wrong; ``reason`` says which, in one word."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class InvalidEventError(ValueError):
    """An event that can never be applied as it is; the message says which field is wrong."""


@dataclass(frozen=True)
class ProviderEvent:
    provider: str
    id: str
    type: str
    created: datetime | None
    data: dict
    raw: str


@dataclass(frozen=True)
class Checkout:
    """One checkout session as the provider describes it."""

    session_id: str
    user_id: str | None
    credits: int | None
    payment_id: str | None = None
    amount_cents: int | None = None
    currency: str | None = None
    package_id: str | None = None


# -- checkout sessions --------------------------------------------------------


@dataclass(frozen=True)
class PaymentSucceeded:
    """The session is paid: complete the payment and grant its credits."""

    checkout: Checkout


@dataclass(frozen=True)
class PaymentProcessing:
    """The session completed but its (asynchronous) payment has not cleared."""

    checkout: Checkout


@dataclass(frozen=True)
class CheckoutFailed:
    """The session's asynchronous payment failed."""

    checkout: Checkout
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class CheckoutExpired:
    checkout: Checkout


# -- the payment behind a session ----------------------------------------------


@dataclass(frozen=True)
class AttemptFailed:
    """One attempt to pay failed (a declined card); the customer may try again."""

    payment_id: str
    code: str | None
    message: str | None


@dataclass(frozen=True)
class PaymentCanceled:
    payment_id: str
    reason: str | None = None


@dataclass(frozen=True)
class Refunded:
    """Money went back to the customer. ``refunded_cents`` is cumulative, of ``amount_cents``."""

    payment_id: str
    refunded_cents: int
    amount_cents: int


@dataclass(frozen=True)
class DisputeOpened:
    payment_id: str
    dispute_id: str
    amount_cents: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DisputeClosed:
    payment_id: str
    dispute_id: str
    won: bool
    amount_cents: int | None = None
    reason: str | None = None


# -- subscriptions ----------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionChanged:
    subscription_id: str
    status: str
    customer_id: str | None = None
    user_id: str | None = None
    price_id: str | None = None
    credits: int | None = None
    current_period_end: datetime | None = None


@dataclass(frozen=True)
class InvoicePaid:
    """A subscription period was paid: grant that period's credits, once per invoice."""

    invoice_id: str
    subscription_id: str
    user_id: str | None
    credits: int | None
    price_id: str | None
    amount_cents: int | None = None
    currency: str | None = None
    payment_id: str | None = None


@dataclass(frozen=True)
class Ignored:
    reason: str


Change = (
    PaymentSucceeded
    | PaymentProcessing
    | CheckoutFailed
    | CheckoutExpired
    | AttemptFailed
    | PaymentCanceled
    | Refunded
    | DisputeOpened
    | DisputeClosed
    | SubscriptionChanged
    | InvoicePaid
    | Ignored
)
