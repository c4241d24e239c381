"""SQLAlchemy 2.x tables. The schema itself is created only by migrations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.enums import (
    DeadLetterStatus,
    ErrorClass,
    EventStatus,
    JobKind,
    JobStatus,
    LedgerKind,
    PaymentStatus,
    sql_in,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_session_id"),
        Index(None, "provider", "provider_payment_id"),
        Index(None, "user_id", "created_at"),
        Index(None, "status", "created_at"),
        CheckConstraint(f"status IN ({sql_in(PaymentStatus)})", name="status"),
        CheckConstraint("credits >= 0", name="credits_not_negative"),
        CheckConstraint("amount_cents IS NULL OR amount_cents >= 0", name="amount_not_negative"),
        CheckConstraint("refunded_cents >= 0", name="refunded_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_session_id: Mapped[str | None] = mapped_column(String(255))
    provider_payment_id: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    credits: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32), default=PaymentStatus.PENDING)
    package_id: Mapped[str | None] = mapped_column(String(255))
    package_name: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict] = mapped_column(JSONB, default=dict, server_default="{}")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The facts the status is derived from (models/settlement.py). Each only ever
    # moves forward, so events applied in any order reach the same state.
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the provider actually captured, which refunds are measured against;
    # amount_mismatch records that it differs from the amount recorded beforehand.
    paid_amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    paid_currency: Mapped[str | None] = mapped_column(String(3))
    amount_mismatch: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # The largest cumulative refunded amount a charge reported.
    refunded_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Per refund, per dispute, per fraud warning: {provider id: {"status": …, …}}.
    refunds: Mapped[dict] = mapped_column(JSONB, default=dict, server_default="{}")
    disputes: Mapped[dict] = mapped_column(JSONB, default=dict, server_default="{}")
    fraud_warnings: Mapped[dict] = mapped_column(JSONB, default=dict, server_default="{}")
    # Before payment the newest event wins, by (provider `created`, status rank, event id).
    unpaid_status: Mapped[str | None] = mapped_column(String(32))
    unpaid_status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unpaid_status_event: Mapped[str | None] = mapped_column(String(255))
    # What the ledger holds for this payment (kept with the row so a batch reads one row per payment).
    credits_granted: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    credits_taken_back: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    credits_frozen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Provider `created` of the newest event applied to this payment.
    last_event_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The buyer's address from the provider's event, for e-mail receipts only: never logged,
    # never in an outbox message, a metric or an error report.
    customer_email: Mapped[str | None] = mapped_column(String(320))
    # The recovery sweep's lease: not looked up at the provider again before this.
    next_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class PaymentStatusHistory(Base):
    __tablename__ = "payment_status_history"
    __table_args__ = (Index(None, "payment_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    cause: Mapped[str] = mapped_column(String(255))
    actor: Mapped[str | None] = mapped_column(String(255))  # the provider, or the operator of a manual mark
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = _now()


class WebhookEvent(Base):
    """The inbox: one row per provider event, the dedupe record and audit trail."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "provider_event_id"),
        Index(None, "status", "received_at"),
        Index(None, "hold_key", postgresql_where=text("status = 'held'")),
        CheckConstraint(f"status IN ({sql_in(EventStatus)})", name="status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(128))
    # The body exactly as the provider signed it (text, not JSONB: JSONB would
    # reorder keys and lose the bytes an operator may need to replay).
    payload: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.RECEIVED)
    source: Mapped[str] = mapped_column(String(16), default="webhook")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    last_error: Mapped[str | None] = mapped_column(Text)
    # For a held event: what it waits for, e.g. "stripe:pi:pi_123".
    hold_key: Mapped[str | None] = mapped_column(String(255))
    dead_letter_id: Mapped[int | None] = mapped_column(ForeignKey("dead_letters.id"))
    provider_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = _now()
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CreditAccount(Base):
    __tablename__ = "credit_accounts"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    total_purchased: Mapped[int] = mapped_column(BigInteger, default=0)
    total_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    # Credits held back from the balance while a payment is under a fraud warning or dispute.
    frozen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class CreditLedger(Base):
    """Every change to a balance, with a key that makes it happen at most once."""

    __tablename__ = "credit_ledger"
    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        Index(None, "user_id", "id"),
        Index(None, "payment_id"),
        CheckConstraint(f"kind IN ({sql_in(LedgerKind)})", name="kind"),
        CheckConstraint("amount <> 0 OR shortfall > 0", name="amount_or_shortfall"),
        CheckConstraint("shortfall >= 0", name="shortfall_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("credit_accounts.user_id"))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    cause: Mapped[str] = mapped_column(String(255))
    # A clawback the balance could not cover under the floor-at-zero policy:
    # how many credits were owed but not taken.
    shortfall: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = _now()


class PaymentAttempt(Base):
    """A failed attempt to pay, with the provider's code and message."""

    __tablename__ = "payment_attempts"
    __table_args__ = (Index(None, "payment_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id", ondelete="CASCADE"))
    code: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str | None] = mapped_column(Text)
    cause: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = _now()


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("provider", "provider_subscription_id"),
        Index(None, "user_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_subscription_id: Mapped[str] = mapped_column(String(255))
    provider_customer_id: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    price_id: Mapped[str | None] = mapped_column(String(255))
    credits_per_period: Mapped[int | None] = mapped_column(BigInteger)
    current_period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_event_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_event_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class ProviderCursor(Base):
    """Reconciliation's position in a provider's events."""

    __tablename__ = "provider_cursors"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_event_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class DeadLetter(Base):
    """An event that failed for good, kept with its raw body for an operator to inspect and replay."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("provider", "provider_event_id"),
        Index(None, "status", "last_failed_at"),
        CheckConstraint(f"status IN ({sql_in(DeadLetterStatus)})", name="status"),
        CheckConstraint(f"error_class IN ({sql_in(ErrorClass)})", name="error_class"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    error_class: Mapped[str] = mapped_column(String(16))
    error_message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_failed_at: Mapped[datetime] = _now()
    last_failed_at: Mapped[datetime] = _now()
    status: Mapped[str] = mapped_column(String(16), default=DeadLetterStatus.OPEN)
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution_note: Mapped[str | None] = mapped_column(Text)


class OutboxMessage(Base):
    """A change the host application must hear of, written with the change (models/outbox.py)."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        UniqueConstraint("message_id"),
        Index("ix_outbox_messages_undispatched", "id", postgresql_where=text("dispatched_at IS NULL")),
        Index(None, "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    # When its deliveries (webhooks, e-mail, hooks) were created from it.
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Job(Base):
    """Long operator work done by a worker (a bulk replay), with its progress kept here.

    The items are fixed when the job is created, so ``done`` out of ``total`` is
    a true measure, and a worker that picks the job up again after a crash
    resumes at item ``done``.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "created_at"),
        CheckConstraint(f"status IN ({sql_in(JobStatus)})", name="status"),
        CheckConstraint(f"kind IN ({sql_in(JobKind)})", name="kind"),
        CheckConstraint("done >= 0 AND done <= total", name="progress"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    params: Mapped[dict] = mapped_column(JSONB, default=dict, server_default="{}")
    items: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    outcomes: Mapped[dict] = mapped_column(JSONB, default=dict, server_default="{}")
    error: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookEndpoint(Base):
    """Where the host application wants outbound webhooks, and which types (application/endpoints.py)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (CheckConstraint("status IN ('enabled', 'disabled')", name="status"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(255))
    # Message types it wants; ["*"] for every type.
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    status: Mapped[str] = mapped_column(String(16), default="enabled", server_default="enabled")
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Fernet tokens (OUTBOUND_SECRET_KEY), never the secret itself.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # The secret before the last rotation, also signed with until it expires.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class OutboundDelivery(Base):
    """One outbox message for one consumer (an endpoint, the e-mail receipt, an in-process hook).

    A worker leases a due delivery (``lease_until``) before it tries it, so a
    killed worker's delivery is due again once the lease runs out.
    """

    __tablename__ = "outbound_deliveries"
    __table_args__ = (
        UniqueConstraint("outbox_id", "consumer"),
        Index("ix_outbound_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        Index("ix_outbound_deliveries_failed", "endpoint_id", "id", postgresql_where=text("status = 'failed'")),
        Index(None, "endpoint_id", "created_at"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox_messages.id", ondelete="CASCADE"))
    # "webhook:<endpoint id>", "email" or "hook:<name>"
    consumer: Mapped[str] = mapped_column(String(255))
    endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Retried until then (OUTBOUND_RETRY_WINDOW_SECONDS from creation or replay), then failed.
    give_up_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboundAttempt(Base):
    """The delivery log: one row per attempt, with what the consumer answered and how long it took."""

    __tablename__ = "outbound_attempts"
    __table_args__ = (Index(None, "delivery_id", "attempt"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("outbound_deliveries.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered, retry, failed, gone
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = _now()
