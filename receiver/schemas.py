"""Request bodies and query strings of the JSON API, validated by pydantic.

The same models produce the OpenAPI document (receiver/openapi.py), so the
document cannot drift from what the routes accept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from models.enums import PaymentStatus

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")]
Url = Annotated[str, StringConstraints(pattern=r"^https?://", max_length=2048)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreatePayment(Strict):
    """Record a checkout the application created, before its webhook arrives."""

    @model_validator(mode="after")
    def _named(self):
        if not (self.session_id or self.payment_id):
            raise ValueError("a session_id or a payment_id is required")
        return self

    user_id: Id
    amount_cents: int = Field(ge=0)
    currency: Currency
    credits: int = Field(ge=1, le=10**12)
    provider: Literal["stripe"] = "stripe"
    # A Checkout Session id, or for PaymentIntent-only integrations the PaymentIntent id (payment_id).
    session_id: Id | None = None
    payment_id: Id | None = None
    package_id: Id | None = None
    package_name: Annotated[str, StringConstraints(max_length=255)] | None = None
    expires_at: datetime | None = None
    metadata: dict[str, str | int | float | bool | None] | None = None


class CreateCheckout(Strict):
    """Create a provider checkout for a configured credit package."""

    user_id: Id
    package_id: Id
    success_url: Url | None = None
    cancel_url: Url | None = None


class ListPayments(Strict):
    user_id: Id | None = None
    status: PaymentStatus | None = None
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=20, ge=1, le=100)


class Page(Strict):
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=50, ge=1, le=100)


class Spend(Strict):
    """Use credits; the idempotency key makes a retried request spend once."""

    credits: int = Field(ge=1, le=10**12)
    idempotency_key: Id
    reason: Annotated[str, StringConstraints(max_length=255)] = "spend"


class VerifyPayment(Strict):
    """Ask the provider about a checkout session now."""

    session_id: Id


class DeadLetterFilters(Strict):
    provider: Id | None = None
    type: Id | None = None
    since: datetime | None = None
    error: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    status: Literal["open", "replayed", "discarded", "all"] = "open"


class ListDeadLetters(DeadLetterFilters):
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=50, ge=1, le=100)


class ReplayDeadLetters(DeadLetterFilters):
    """Replay every dead letter matching the filters (open ones by default)."""

    dry_run: bool = False


class DiscardDeadLetter(Strict):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
