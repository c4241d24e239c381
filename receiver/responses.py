"""Response bodies of the JSON API, as pydantic models.

Every /api route answers ``reply(Model, data)``: the application's view is
validated by the model and dumped from it, and receiver/openapi.py documents the
same models (``model_json_schema`` in serialization mode). A view that gains,
loses or retypes a key fails validation, so the document cannot drift from the
answers: a test would see the 500 (``extra="forbid"``, every field required).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from models.enums import (
    DeadLetterStatus,
    DisputeStatus,
    ErrorClass,
    EventStatus,
    JobKind,
    JobStatus,
    LedgerKind,
    PaymentStatus,
)

# As the application writes times (``datetime.isoformat()``: ``…+00:00``), not pydantic's ``…Z``.
Time = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _open_to_new_keys(schema: dict[str, Any]) -> None:
    """Answers may gain keys in later versions: clients should not refuse them (the model refuses drift)."""
    schema.pop("additionalProperties", None)


class Response(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, serialize_by_alias=True, json_schema_extra=_open_to_new_keys
    )


def reply(model: type[Response], data: Any) -> dict:
    """``data`` (an application view) as the JSON the route answers, through its documented model."""
    return model.model_validate(data).model_dump(mode="json")


class Error(Response):
    """Every error: a code, a sentence, and for invalid requests what is wrong with each field."""

    error: str
    message: str
    fields: dict[str, str] | None = Field(default=None, description="field -> its problem (400 only)")


class Credits(Response):
    user_id: str
    balance: int
    total_purchased: int
    total_refunded: int
    frozen: int = Field(description="credits held while a payment is under dispute or a fraud warning")


class LedgerEntry(Response):
    id: int
    kind: LedgerKind
    amount: int
    shortfall: int
    payment_id: int | None
    cause: str
    idempotency_key: str
    created_at: Time


class Ledger(Response):
    user_id: str
    entries: list[LedgerEntry]
    total_count: int
    page: int
    page_size: int
    has_more: bool


class SpendResult(Credits):
    entry: LedgerEntry


class Checkout(Response):
    checkout_url: str | None = Field(description="where to send the buyer (PayPal: the order's approval link)")
    session_id: str = Field(description="Stripe: the Checkout Session; PayPal: the order")
    payment_id: int
    provider: str


class PaymentSummary(Response):
    """A payment as lists show it (and as POST /api/payments answers)."""

    id: int
    provider: str
    provider_session_id: str | None
    provider_payment_id: str | None
    user_id: str
    status: PaymentStatus
    credits: int
    amount_cents: int | None
    currency: str | None
    paid_amount_cents: int | None
    paid_currency: str | None
    amount_mismatch: bool
    refunded_cents: int
    credits_granted: int
    credits_taken_back: int
    credits_frozen: int
    package_id: str | None
    package_name: str | None
    metadata: dict[str, Any]
    expires_at: Time | None
    paid_at: Time | None
    created_at: Time
    updated_at: Time


class StatusChange(Response):
    from_: PaymentStatus | None = Field(alias="from")
    to: PaymentStatus
    cause: str
    actor: str | None  # who: the provider, or the operator who marked a manual payment
    reason: str | None
    at: Time


class FailedAttempt(Response):
    code: str | None
    message: str | None
    cause: str
    at: Time


class Dispute(Response):
    provider_dispute_id: str
    status: DisputeStatus
    reason: str | None
    amount_cents: int | None
    closed_at: Time | None


class Refund(Response):
    provider_refund_id: str
    status: str
    amount_cents: int


class FraudWarning(Response):
    provider_warning_id: str
    actionable: bool
    fraud_type: str | None


class Payment(PaymentSummary):
    """A payment with its status history, failed attempts, disputes, refunds and fraud warnings."""

    history: list[StatusChange]
    failed_attempts: list[FailedAttempt]
    disputes: list[Dispute]
    refunds: list[Refund]
    fraud_warnings: list[FraudWarning]
    net_credits: int


class PaymentList(Response):
    payments: list[PaymentSummary]
    total_count: int
    page: int
    page_size: int
    has_more: bool


class Verification(Response):
    session_id: str
    payment_verified: bool
    status: PaymentStatus | None
    provider_status: str | None
    provider_payment_status: str | None
    credits_added: int
    balance: int | None


class Stats(Response):
    user_id: str | None
    provider: str | None
    payment_count: int
    payments_by_status: dict[str, int]
    amount_spent_cents: dict[str, int] = Field(description="currency -> cents")
    amount_refunded_cents: dict[str, int] = Field(description="currency -> cents")
    amount_mismatches: int
    credits_purchased: int
    credits_taken_back: int
    credits_frozen: int
    credits_spent: int


class DeadLetter(Response):
    id: int
    provider: str
    event_id: str
    event_type: str
    error_class: ErrorClass
    error: str
    attempts: int
    first_failed_at: Time
    last_failed_at: Time
    status: DeadLetterStatus
    resolved_by: str | None
    resolved_at: Time | None
    resolution_note: str | None


class DeadLetterDetail(DeadLetter):
    """A dead letter with its traceback and the raw body it failed on."""

    traceback: str | None
    payload: str


class DeadLetterList(Response):
    dead_letters: list[DeadLetter]
    total_count: int
    page: int
    page_size: int


class ReplayResult(Response):
    id: int
    outcome: Literal["replayed", "already_applied", "still_held", "failed_again", "not_open"]
    event_status: EventStatus | None
    error: str | None


class DryRun(Response):
    dry_run: Literal[True]
    matched: int
    ids: list[int]


class Job(Response):
    id: int
    kind: JobKind
    status: JobStatus
    total: int
    done: int
    outcomes: dict[str, int]
    params: dict[str, Any]
    error: str | None
    requested_by: str
    created_at: Time
    updated_at: Time
    started_at: Time | None
    finished_at: Time | None


# -- outbound webhook endpoints ---------------------------------------------------------


class WebhookEndpoint(Response):
    """An endpoint of the host application (never its secret)."""

    id: int
    url: str
    description: str | None
    event_types: list[str]
    status: str
    disabled_reason: str | None
    previous_secret_expires_at: Time | None = Field(description="until then the previous secret signs too")
    created_at: Time | None
    updated_at: Time | None


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str = Field(description="whsec_…: shown this once")


class WebhookEndpointList(Response):
    endpoints: list[WebhookEndpoint]


class Delivery(Response):
    id: int
    message_id: str
    type: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: Time
    delivered_at: Time | None
    created_at: Time


class DeliveryList(Response):
    deliveries: list[Delivery]


class TestDelivery(Response):
    delivery_id: int


class Replayed(Response):
    replayed: int
    delivery_ids: list[int]
