"""Request bodies, query strings and path parameters of the JSON API, validated by pydantic.

The same models produce the OpenAPI document (receiver/openapi.py), so the
document cannot drift from what the routes accept.

Every value that reaches PostgreSQL is bounded here, because a value the
database refuses would otherwise surface as a 500: no NUL characters (text
columns and JSONB reject them), integers within BIGINT (and ids from 1), finite
numbers only (JSON has no NaN; JSONB refuses it), timestamps PostgreSQL and
Python can both hold, flat metadata of a bounded size. Bodies are parsed by
pydantic's own JSON parser in strict mode (receiver/api.py): it refuses
NaN/Infinity, invalid UTF-8, lone surrogates and nesting deeper than its
recursion limit, and takes `0` for neither a boolean nor a time. Query strings
and path parameters are strings, validated as such (`model_validate_strings`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from models.enums import PaymentStatus

BIGINT_MAX = 2**63 - 1
MAX_PAGE = 1_000_000  # with 100 per page, an offset of 10^8 rows: far past any listing, far inside BIGINT
NO_NUL = r"^[^\x00]*$"
# Not blank either: at least one character that is neither NUL nor whitespace as Python's
# str.strip() sees it (the layers below check reasons with strip()). Spelled as \uXXXX escapes,
# which pydantic's Rust regex, Python's re and JSON Schema's ECMA regex all read alike. Values
# are kept as sent (no stripping), so what the document allows is exactly what is accepted.
_WHITESPACE = "".join(f"\\u{code:04x}" for code in range(0x3001) if chr(code).isspace())
NOT_BLANK = rf"^[^\x00]*[^\x00{_WHITESPACE}][^\x00]*$"

Id = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NOT_BLANK)]
Text255 = Annotated[str, StringConstraints(max_length=255, pattern=NO_NUL)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")]
Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\x00]*$", max_length=2048)]
RowId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_DATETIME = TypeAdapter(datetime)


def _iso_only(value: object) -> object:
    """A time is an ISO 8601 string; pydantic alone would also take a number of seconds, which nobody means."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date-time such as 2026-11-01T00:00:00Z")
    try:
        return _DATETIME.validate_python(value)
    except ValidationError:
        raise ValueError("must be an ISO 8601 date-time such as 2026-11-01T00:00:00Z") from None


def _whole_number(value: object) -> object:
    """JSON Schema counts 685.0 as an integer; strict pydantic would not. Fractions and strings stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def Whole(ge: int, le: int, **field):  # noqa: N802  (a type, spelled like one)
    """An integer from `ge` to `le`."""
    return Annotated[int, Field(ge=ge, le=le, **field), BeforeValidator(_whole_number)]


def _moment(value: datetime) -> datetime:
    """An aware UTC time; one without a zone is taken as UTC.

    Python's datetime stops at years 1 and 9999 in UTC: a time within a day of either
    end whose offset carries it past (0001-01-01T00:00:00+05:00) is clamped to the end,
    a distinction no expiry or filter can notice, instead of refusing a valid timestamp.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


Moment = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_moment)]

# Stripe's own limits on metadata: 50 keys of up to 40 characters, values up to 500.
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=NO_NUL)]
MetadataValue = (
    Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
    | Whole(-BIGINT_MAX - 1, BIGINT_MAX)
    | float
    | bool
    | None
)
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=50)]


class Strict(BaseModel):
    # allow_inf_nan=False: floats must be finite, in JSON bodies and query strings alike
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CreatePayment(Strict):
    """Record a checkout the application created, before its webhook arrives."""

    # The document says what the validator below checks: a session id or a payment id.
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "anyOf": [
                {"properties": {"session_id": {"type": "string"}}, "required": ["session_id"]},
                {"properties": {"payment_id": {"type": "string"}}, "required": ["payment_id"]},
            ]
        },
    )

    @model_validator(mode="after")
    def _named(self):
        if not (self.session_id or self.payment_id):
            raise ValueError("a session_id or a payment_id is required")
        return self

    user_id: Id
    amount_cents: Whole(0, 10**12)
    currency: Currency
    credits: Whole(1, 10**12)
    provider: Literal["stripe", "paypal"] = "stripe"
    # A Checkout Session id (a PayPal order id), or for PaymentIntent-only integrations the PaymentIntent id (payment_id).
    session_id: Id | None = None
    payment_id: Id | None = None
    package_id: Id | None = None
    package_name: Text255 | None = None
    expires_at: Moment | None = None
    metadata: Metadata | None = None


class CreateCheckout(Strict):
    """Create a provider checkout for a configured credit package."""

    user_id: Id
    package_id: Id
    # stripe: a Checkout Session; paypal: an order to approve (its approval link is checkout_url)
    provider: Literal["stripe", "paypal"] = "stripe"
    success_url: Url | None = None
    cancel_url: Url | None = None


class CheckoutHeaders(Strict):
    """An Idempotency-Key header: POST /api/checkout passes it to the provider; manual payments dedupe by it."""

    model_config = ConfigDict(extra="ignore")
    idempotency_key: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
    ] | None = Field(default=None, alias="Idempotency-Key")


class ListPayments(Strict):
    user_id: Id | None = None
    provider: Id | None = None
    status: PaymentStatus | None = None
    page: int = Field(default=1, ge=1, le=MAX_PAGE)
    page_size: int = Field(default=20, ge=1, le=100)


class Page(Strict):
    page: int = Field(default=1, ge=1, le=MAX_PAGE)
    page_size: int = Field(default=50, ge=1, le=100)


class StatsQuery(Strict):
    user_id: Id | None = None
    provider: Id | None = None


class UserPath(Strict):
    user_id: Id


class Spend(Strict):
    """Use credits; the idempotency key makes a retried request spend once."""

    credits: Whole(1, 10**12)
    idempotency_key: Id
    reason: Text255 = "spend"


class VerifyPayment(Strict):
    """Ask the provider about a checkout session (a PayPal order) now."""

    session_id: Id
    provider: Literal["stripe", "paypal"] = "stripe"


class DeadLetterFilters(Strict):
    provider: Id | None = None
    type: Id | None = None
    since: Moment | None = None
    error: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)] | None = None
    status: Literal["open", "replayed", "discarded", "all"] = "open"


class ListDeadLetters(DeadLetterFilters):
    page: int = Field(default=1, ge=1, le=MAX_PAGE)
    page_size: int = Field(default=50, ge=1, le=100)


class ReplayDeadLetters(DeadLetterFilters):
    """Replay every dead letter matching the filters (open ones by default), as a background job."""

    dry_run: bool = False


class DiscardDeadLetter(Strict):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=NOT_BLANK)]


# -- manual payments ------------------------------------------------------------------

Amount = Whole(1, 10**12)
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=NOT_BLANK)]


class CreateManualPayment(Strict):
    """Record a payment made outside any provider (a bank transfer, cash), pending until marked paid."""

    user_id: Id
    credits: Whole(1, 10**12)
    amount_cents: Amount
    currency: Currency
    method: Literal["bank_transfer", "cash", "other"]
    reference: Text255 | None = None
    reason: Reason | None = None


class MarkPaid(Strict):
    """The money arrived; an amount or currency other than the recorded one is kept as a mismatch."""

    reference: Text255 | None = None
    amount_cents: Amount | None = None
    currency: Currency | None = None
    reason: Reason | None = None


class MarkUnpaid(Strict):
    """Mark a manual payment failed or cancelled."""

    reason: Reason | None = None


class RefundManual(Strict):
    """Give back part (amount_cents) or, without an amount, all that is left of a paid manual payment."""

    amount_cents: Amount | None = None
    reason: Reason | None = None

# -- outbound webhook endpoints -----------------------------------------------------

MessageTypeName = Literal[
    "credits.granted", "credits.revoked", "credits.restored", "payment.status_changed",
    "subscription.changed", "dead_letter.created", "*",
]


class CreateEndpoint(Strict):
    """A webhook endpoint of the host application and the message types it wants ("*": all)."""

    url: Url
    event_types: Annotated[list[MessageTypeName], Field(min_length=1, max_length=16)]
    description: Text255 | None = None


class DisableEndpoint(Strict):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=NOT_BLANK)] | None = None


class ReplayDeliveries(Strict):
    """Deliver again one message (message_id, whatever became of it) or every failed one written in [since, until)."""

    message_id: Annotated[str, StringConstraints(pattern=r"^msg_[0-9a-f]{24}$")] | None = None
    since: Moment | None = None
    until: Moment | None = None
