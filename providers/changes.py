"""The provider-neutral vocabulary: what an event means for our payments.

A provider module turns a verified event into one of these frozen dataclasses,
with no I/O; the application applies it to the payment it is about. Adding a
provider means mapping its events onto these, not adding new rules.

A payment is found by a ``PaymentRef``: the id it was created under
(``session_id``: a Stripe Checkout Session or invoice, a PayPal order, a manual
payment) and/or the id its money moves under (``payment_id``: a Stripe
PaymentIntent, a PayPal capture), which is what refunds and disputes name.
A ``Purchase`` says who bought how many credits, as far as the provider's
object tells; any field may be unknown, and a payment recorded beforehand
wins over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


class SignatureError(ValueError):
    """A delivery's signature is missing, malformed, stale or wrong; ``reason`` says which, in one word."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class InvalidEventError(ValueError):
    """An event that can never be applied as it is; the message names the field, never its value."""


@dataclass(frozen=True)
class ProviderEvent:
    provider: str
    id: str
    type: str
    created: datetime | None
    data: dict
    raw: str
    # Who made it happen and why, for the payment's history: an operator's name and
    # reason for a manual mark; None for a provider's own event (the provider is the actor).
    actor: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PaymentRef:
    session_id: str | None = None
    payment_id: str | None = None

    def __post_init__(self) -> None:
        if not (self.session_id or self.payment_id):
            raise ValueError("a payment reference needs a session id or a payment id")


@dataclass(frozen=True)
class LineItem:
    """One line of what was bought; credits per unit when the price or product says."""

    price_id: str | None
    quantity: int
    credits_per_unit: int | None = None


@dataclass(frozen=True)
class Purchase:
    user_id: str | None = None
    credits: int | None = None
    amount_cents: int | None = None  # the price asked (what a pending payment records)
    currency: str | None = None
    package_id: str | None = None
    # None: not in the event (the provider's API can list them); (): there are none.
    line_items: tuple[LineItem, ...] | None = None
    # The buyer's address, kept for e-mail receipts only (never in a repr, a log line or a message).
    email: str | None = field(default=None, repr=False, compare=False)


# -- a payment's life before the money ------------------------------------------


@dataclass(frozen=True)
class PaymentSucceeded:
    """The money is taken: complete the payment and grant its credits, once."""

    ref: PaymentRef
    purchase: Purchase
    paid_amount_cents: int | None = None  # what was actually captured
    paid_currency: str | None = None
    reference: str | None = None  # what the money arrived under, when a person says so (a bank transfer's reference)


@dataclass(frozen=True)
class PaymentProcessing:
    """Paid with a method that takes days to clear (SEPA, ACH, Bacs, a pending capture)."""

    ref: PaymentRef
    purchase: Purchase = Purchase()


@dataclass(frozen=True)
class PaymentFailed:
    """An attempt to pay failed; the customer may try again."""

    ref: PaymentRef
    purchase: Purchase = Purchase()
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class ActionRequired:
    """The customer must act (3-D Secure, a redirect): recorded on the payment, status unchanged."""

    ref: PaymentRef
    code: str | None = None


@dataclass(frozen=True)
class PaymentExpired:
    ref: PaymentRef
    purchase: Purchase = Purchase()


@dataclass(frozen=True)
class PaymentCanceled:
    ref: PaymentRef
    reason: str | None = None


@dataclass(frozen=True)
class CaptureRequested:
    """The buyer approved a payment the merchant must capture itself (a PayPal order).

    No money has moved: the purchase may be recorded as pending, nothing is
    granted. After the transaction — never inside one, like a line-item lookup —
    the application asks the provider to capture ``ref.session_id`` with
    ``request_id``, the same for every delivery of the approval so that
    duplicates and retries capture once. What the capture answers (paid,
    pending, declined) is then applied like the provider's own capture events,
    which follow anyway (``providers.paypal.with_capture`` turns the answer
    into an event to apply).
    """

    ref: PaymentRef
    request_id: str
    purchase: Purchase = Purchase()


@dataclass(frozen=True)
class PaymentLinked:
    """The money of a payment recorded under ``ref.session_id`` moves under ``ref.payment_id``.

    Current Stripe API versions say which PaymentIntent paid an invoice only in
    an ``invoice_payment``; refunds and disputes name the PaymentIntent.
    """

    ref: PaymentRef


# -- after the money ---------------------------------------------------------------


@dataclass(frozen=True)
class Refunded:
    """A charge reports ``refunded_cents`` refunded in all, of ``captured_cents``."""

    ref: PaymentRef
    refunded_cents: int
    captured_cents: int | None = None


@dataclass(frozen=True)
class RefundChanged:
    """One refund's news; a failed or canceled refund gives back what it took."""

    ref: PaymentRef
    refund_id: str
    amount_cents: int
    status: str  # models.enums.RefundStatus


@dataclass(frozen=True)
class DisputeOpened:
    ref: PaymentRef
    dispute_id: str
    amount_cents: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DisputeClosed:
    ref: PaymentRef
    dispute_id: str
    won: bool
    amount_cents: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class FraudWarning:
    """The card network flagged the payment; ``actionable`` is false once refunded or disputed."""

    ref: PaymentRef
    warning_id: str
    actionable: bool
    fraud_type: str | None = None


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
    """A subscription period was paid: a payment of its own, granted once per invoice.

    Who and how many come from the invoice, else the subscription, else the
    plan configured for the price; ``ref.payment_id`` only on older API versions.
    """

    ref: PaymentRef
    subscription_id: str
    purchase: Purchase
    price_id: str | None = None
    paid_amount_cents: int | None = None
    paid_currency: str | None = None


@dataclass(frozen=True)
class Ignored:
    reason: str


Change = (
    PaymentSucceeded
    | PaymentProcessing
    | PaymentFailed
    | ActionRequired
    | CaptureRequested
    | PaymentExpired
    | PaymentCanceled
    | PaymentLinked
    | Refunded
    | RefundChanged
    | DisputeOpened
    | DisputeClosed
    | FraudWarning
    | SubscriptionChanged
    | InvoicePaid
    | Ignored
)
