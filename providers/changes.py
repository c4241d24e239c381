"""The provider-neutral vocabulary: what an event means for our payments.

Handlers return one of these; ``tasks.apply`` hands each to the rule in
``models`` that changes rows. Adding a provider means mapping its events onto
these, not adding new rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class SignatureError(ValueError):
    """A delivery's signature is missing, malformed, stale or wrong."""


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


@dataclass(frozen=True)
class PaymentSucceeded:
    checkout: Checkout


@dataclass(frozen=True)
class PaymentProcessing:
    checkout: Checkout


@dataclass(frozen=True)
class Ignored:
    reason: str


Change = PaymentSucceeded | PaymentProcessing | Ignored
