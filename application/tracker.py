"""PaymentTracker: the Python API for the application that sells credits.

The same rules as the workers, without HTTP: record a pending checkout, create a
provider checkout for a configured package, read payments with their history,
balances, ledgers and stats, spend credits. Every call is its own transaction.
Results are plain JSON-ready dicts; errors are exceptions that say what is wrong.

    tracker = PaymentTracker.from_settings(Settings.from_env())
    tracker.create_pending_payment(user_id="u1", amount_cents=999, currency="usd",
                                   credits=100, session_id="cs_test_…")
    tracker.balance("u1")
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, literal_column, select

from application.batch import lock_keys
from application.recovery import Recovery
from application.unit import UnitOfWork
from infra.settings import Settings
from models import keys, ledger, payments
from models.enums import LedgerKind, PaymentStatus
from models.payments import PaymentRow, row_of
from models.settlement import refunded_amount
from models.tables import CreditLedger, Payment, PaymentAttempt, PaymentStatusHistory
from providers.stripe_api import StripeAPI

MAX_PAGE_SIZE = 100

# models/settlement.refunded_amount in SQL: a failed refund no longer counts.
REFUNDED = literal_column(
    """greatest(
        coalesce((SELECT sum((r.value->>'amount_cents')::bigint) FROM jsonb_each(payments.refunds) r
                  WHERE r.value->>'status' NOT IN ('failed', 'canceled')), 0),
        payments.refunded_cents - coalesce((SELECT sum((r.value->>'amount_cents')::bigint) FROM jsonb_each(payments.refunds) r
                  WHERE r.value->>'status' IN ('failed', 'canceled')), 0),
        0)"""
)


class NotFoundError(LookupError):
    pass


class ConflictError(ValueError):
    """The request contradicts what is already recorded."""


class InvalidRequestError(ValueError):
    """A request the tracker cannot act on; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class PaymentTracker:
    def __init__(self, unit: UnitOfWork, settings: Settings, stripe_api: StripeAPI | None = None, paypal_api=None) -> None:
        self.unit = unit
        self.database = unit.database
        self.settings = settings
        self._stripe_api = stripe_api
        self._paypal_api = paypal_api

    @classmethod
    def from_settings(cls, settings: Settings) -> PaymentTracker:
        from models.db import Database

        database = Database(settings.require("database_url", "the tracker reads PostgreSQL"),
                            lock_timeout_seconds=settings.database_lock_timeout_seconds)
        return cls(UnitOfWork(database, settings.rules()), settings)

    @property
    def stripe_api(self) -> StripeAPI:
        if self._stripe_api is None:
            self._stripe_api = StripeAPI(self.settings.reveal("stripe_api_key"), self.settings.stripe_api_base)
        return self._stripe_api

    @property
    def paypal_api(self):
        """PayPalNotConfiguredError without PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET."""
        if self._paypal_api is None:
            from providers.paypal_api import PayPalAPI

            s = self.settings
            self._paypal_api = PayPalAPI(s.paypal_client_id, s.reveal("paypal_client_secret"), s.paypal_api_url)
        return self._paypal_api

    # -- recording checkouts -------------------------------------------------

    def create_pending_payment(
        self,
        *,
        user_id: str,
        amount_cents: int,
        currency: str,
        credits: int,
        session_id: str | None = None,
        payment_id: str | None = None,
        provider: str = "stripe",
        package_id: str | None = None,
        package_name: str | None = None,
        expires_at: datetime | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[dict, bool]:
        """Record a payment before its webhook, by its checkout session id or (PaymentIntent-only
        integrations) its payment id; idempotent on either.

        Returns (payment, created). The same request twice returns the first
        payment; a request that contradicts it raises ConflictError.
        """
        if not (session_id or payment_id):
            raise InvalidRequestError("session_id", "a session_id or a payment_id is required")
        if expires_at is None and provider == "paypal" and session_id:
            # PayPal says nothing when an order nobody approved lapses; the sweep expires it after this.
            expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.paypal_order_expiry_seconds)
        asked = PaymentRow(
            id=0, provider=provider, user_id=user_id, credits=credits, provider_session_id=session_id,
            provider_payment_id=payment_id, amount_cents=amount_cents, currency=currency.lower(),
            package_id=package_id, package_name=package_name, expires_at=expires_at, details=metadata or {},
        )
        with self.database.transaction() as session:
            # The same locks a batch takes, so a webhook for this payment racing us waits or is waited for.
            lock_keys(session, [key for key in (
                keys.session_key(provider, session_id) if session_id else None,
                keys.payment_key(provider, payment_id) if payment_id else None,
            ) if key])
            found = payments.lock(session, provider, session_ids=[session_id] if session_id else [],
                                  payment_ids=[payment_id] if payment_id else [])
            if found:
                _check_same(found[0], asked)
                created = False
                payment_id_ = found[0].id
            else:
                payment_id_ = payments.reserve_ids(session, 1)[0]
                payments.save(session, [replace(asked, id=payment_id_)])
                created = True
            return payment_view(session, session.get(Payment, payment_id_), with_history=False), created

    def create_checkout(
        self,
        *,
        user_id: str,
        package_id: str,
        provider: str = "stripe",
        success_url: str | None = None,
        cancel_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict:
        """Create a provider checkout (a Stripe Checkout Session, a PayPal order) for a configured package; record it pending."""
        package = self.settings.credit_packages.get(package_id)
        if package is None:
            known = ", ".join(sorted(self.settings.credit_packages)) or "none are configured"
            raise InvalidRequestError("package_id", f"unknown package {package_id!r} (known: {known})")
        success_url = success_url or self.settings.checkout_success_url
        cancel_url = cancel_url or self.settings.checkout_cancel_url
        if not success_url:
            raise InvalidRequestError("success_url", "success_url is required (or set checkout_success_url)")
        if provider == "paypal":
            return self._create_paypal_order(user_id, package, success_url, cancel_url, idempotency_key)
        if provider != "stripe":
            raise InvalidRequestError("provider", f"checkout is made through stripe or paypal, not {provider!r}")
        metadata = {"user_id": user_id, "package_id": package.id, "credits": str(package.credits)}
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": package.currency,
                        "unit_amount": package.amount_cents,
                        "product_data": {"name": package.name},
                    },
                    "quantity": 1,
                }
            ],
            "metadata": metadata,
            "client_reference_id": user_id,
            "payment_intent_data": {"metadata": metadata},
            "success_url": success_url,
        }
        if cancel_url:
            params["cancel_url"] = cancel_url
        checkout = self.stripe_api.create_checkout_session(
            params, idempotency_key=idempotency_key or f"payhooks-checkout-{uuid.uuid4()}"
        )
        expires_at = checkout.get("expires_at")
        payment, _ = self.create_pending_payment(
            user_id=user_id,
            amount_cents=package.amount_cents,
            currency=package.currency,
            credits=package.credits,
            session_id=checkout["id"],
            package_id=package.id,
            package_name=package.name,
            expires_at=datetime.fromtimestamp(expires_at, UTC) if isinstance(expires_at, int) else None,
        )
        return {"checkout_url": checkout.get("url"), "session_id": checkout["id"], "payment_id": payment["id"],
                "provider": "stripe"}

    def _create_paypal_order(self, user_id, package, success_url, cancel_url, idempotency_key) -> dict:
        """A PayPal order whose custom_id names the buyer and the credits; the buyer approves it at checkout_url."""
        try:
            order = self.paypal_api.create_order(
                amount_cents=package.amount_cents,
                currency=package.currency,
                user_id=user_id,
                credits=package.credits,
                package_id=package.id,
                description=package.name,
                return_url=success_url,
                cancel_url=cancel_url,
                request_id=f"payhooks-order-{idempotency_key or uuid.uuid4()}",
            )
        except ValueError as exc:  # an amount PayPal cannot take, a custom_id too long
            raise InvalidRequestError("package_id", f"PayPal cannot sell package {package.id!r}: {exc}") from None
        approve = next(
            (link.get("href") for link in order.get("links") or []
             if isinstance(link, dict) and link.get("rel") in ("payer-action", "approve")),
            None,
        )
        payment, _ = self.create_pending_payment(
            user_id=user_id,
            amount_cents=package.amount_cents,
            currency=package.currency,
            credits=package.credits,
            session_id=order["id"],
            provider="paypal",
            package_id=package.id,
            package_name=package.name,
        )
        return {"checkout_url": approve, "session_id": order["id"], "payment_id": payment["id"], "provider": "paypal"}

    def verify(self, session_id: str, provider: str = "stripe") -> dict:
        """Ask the provider about a session (a PayPal order) now and apply its answer (the success page's check).

        Returns {"payment_verified", "status", "credits_added", "balance", …}. Racing
        the session's webhook is safe: whichever applies first grants, once.
        """
        if provider == "paypal":
            from application.paypal_recovery import PayPalRecovery

            return PayPalRecovery(self.unit, self.paypal_api).verify(session_id)
        return Recovery(self.unit, self.stripe_api).verify(session_id)

    # -- reading ----------------------------------------------------------------

    def get(self, payment_id: int) -> dict:
        with self.database.transaction() as session:
            payment = session.get(Payment, payment_id)
            if payment is None:
                raise NotFoundError(f"no payment {payment_id}")
            return payment_view(session, payment)

    def get_by_session_id(self, session_id: str, provider: str = "stripe") -> dict:
        with self.database.transaction() as session:
            payment = session.scalars(
                select(Payment).where(Payment.provider == provider, Payment.provider_session_id == session_id)
            ).one_or_none()
            if payment is None:
                raise NotFoundError(f"no payment for {provider} session {session_id}")
            return payment_view(session, payment)

    def is_duplicate(self, session_id: str, provider: str = "stripe") -> bool:
        """True once the session's payment is paid and its credits granted: don't grant again."""
        with self.database.transaction() as session:
            paid_at = session.scalar(
                select(Payment.paid_at).where(Payment.provider == provider, Payment.provider_session_id == session_id)
            )
            return paid_at is not None

    def history(
        self, user_id: str | None = None, status: str | None = None, page: int = 1, page_size: int = 20,
        provider: str | None = None,
    ) -> dict:
        """Payments, newest first: {"payments", "total_count", "page", "page_size", "has_more"}."""
        page, page_size = _page(page, page_size)
        if status is not None and status not in set(PaymentStatus):
            raise InvalidRequestError("status", f"unknown status {status!r}")
        query = select(Payment)
        if user_id is not None:
            query = query.where(Payment.user_id == user_id)
        if status is not None:
            query = query.where(Payment.status == status)
        if provider is not None:
            query = query.where(Payment.provider == provider)
        with self.database.transaction() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery()))
            rows = session.scalars(
                query.order_by(Payment.created_at.desc(), Payment.id.desc()).offset((page - 1) * page_size).limit(page_size)
            ).all()
            return {
                "payments": [payment_view(session, p, with_history=False) for p in rows],
                "total_count": total,
                "page": page,
                "page_size": page_size,
                "has_more": page * page_size < total,
            }

    def balance(self, user_id: str) -> dict:
        with self.database.transaction() as session:
            return ledger.account_summary(session, user_id)

    def ledger(self, user_id: str, page: int = 1, page_size: int = 50) -> dict:
        """A user's ledger entries, newest first."""
        page, page_size = _page(page, page_size)
        with self.database.transaction() as session:
            total = session.scalar(select(func.count()).where(CreditLedger.user_id == user_id))
            rows = session.scalars(
                select(CreditLedger)
                .where(CreditLedger.user_id == user_id)
                .order_by(CreditLedger.id.desc())
                .offset((page - 1) * page_size)
                .limit(page_size)
            ).all()
            return {
                "user_id": user_id,
                "entries": [_ledger_view(entry) for entry in rows],
                "total_count": total,
                "page": page,
                "page_size": page_size,
                "has_more": page * page_size < total,
            }

    def stats(self, user_id: str | None = None, provider: str | None = None) -> dict:
        """Money spent and refunded per currency, credits bought, taken back and used, payments by status.

        ``provider``: only that provider's payments and the ledger entries of its payments
        (spends, which belong to no payment, are then left out).
        """
        where = [Payment.user_id == user_id] if user_id is not None else []
        ledger_where = [CreditLedger.user_id == user_id] if user_id is not None else []
        if provider is not None:
            where.append(Payment.provider == provider)
            ledger_where.append(CreditLedger.payment_id.in_(select(Payment.id).where(Payment.provider == provider)))
        with self.database.transaction() as session:
            by_status = dict(session.execute(select(Payment.status, func.count()).where(*where).group_by(Payment.status)).all())
            currency = func.coalesce(Payment.paid_currency, Payment.currency)
            money = session.execute(
                select(currency, func.sum(func.coalesce(Payment.paid_amount_cents, Payment.amount_cents)), func.sum(REFUNDED))
                .where(Payment.paid_at.is_not(None), *where)
                .group_by(currency)
            ).all()
            mismatches = session.scalar(select(func.count()).where(Payment.amount_mismatch, *where))
            frozen = session.scalar(select(func.sum(Payment.credits_frozen)).where(*where))
            credits = dict(
                session.execute(
                    select(CreditLedger.kind, func.sum(CreditLedger.amount)).where(*ledger_where).group_by(CreditLedger.kind)
                ).all()
            )
        return {
            "user_id": user_id,
            "provider": provider,
            "payment_count": sum(by_status.values()),
            "payments_by_status": {status.value: by_status.get(status.value, 0) for status in PaymentStatus},
            "amount_spent_cents": {currency or "unknown": int(spent or 0) for currency, spent, _ in money},
            "amount_refunded_cents": {currency or "unknown": int(refunded or 0) for currency, _, refunded in money},
            "amount_mismatches": int(mismatches),
            "credits_purchased": int(credits.get(LedgerKind.GRANT, 0)),
            "credits_taken_back": -int(credits.get(LedgerKind.CLAWBACK, 0)) - int(credits.get(LedgerKind.REVERSAL, 0)),
            "credits_frozen": int(frozen or 0),
            "credits_spent": -int(credits.get(LedgerKind.SPEND, 0)),
        }

    # -- using credits ---------------------------------------------------------

    def spend(self, user_id: str, credits: int, *, idempotency_key: str, reason: str = "spend") -> dict:
        """Use credits once per key; InsufficientCreditsError if the balance is short."""
        if credits <= 0:
            raise InvalidRequestError("credits", "credits must be a positive integer")
        with self.database.transaction() as session:
            entry = ledger.spend(session, user_id=user_id, credits=credits, idempotency_key=idempotency_key, reason=reason)
            if entry.user_id != user_id or entry.amount != -credits:
                raise ConflictError(f"idempotency key {idempotency_key!r} was used for a different spend")
            return {"entry": _ledger_view(entry), **ledger.account_summary(session, user_id)}


def _check_same(recorded: PaymentRow, asked: PaymentRow) -> None:
    names = ("user_id", "credits", "amount_cents", "currency")
    different = sorted(n for n in names if getattr(recorded, n) is not None and getattr(recorded, n) != getattr(asked, n))
    if different:
        raise ConflictError(
            f"{'session ' + asked.provider_session_id if asked.provider_session_id else 'payment ' + str(asked.provider_payment_id)}"
            f" is already recorded with different {', '.join(different)}"
        )


def _page(page: int, page_size: int) -> tuple[int, int]:
    if page < 1:
        raise InvalidRequestError("page", "page starts at 1")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequestError("page_size", f"page_size must be between 1 and {MAX_PAGE_SIZE}")
    return page, page_size


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def payment_view(session, payment: Payment, with_history: bool = True) -> dict:
    view = {
        "id": payment.id,
        "provider": payment.provider,
        "provider_session_id": payment.provider_session_id,
        "provider_payment_id": payment.provider_payment_id,
        "user_id": payment.user_id,
        "status": payment.status,
        "credits": payment.credits,
        "amount_cents": payment.amount_cents,
        "currency": payment.currency,
        "paid_amount_cents": payment.paid_amount_cents,
        "paid_currency": payment.paid_currency,
        "amount_mismatch": payment.amount_mismatch,
        "refunded_cents": refunded_amount(row_of(payment)),
        "credits_granted": payment.credits_granted,
        "credits_taken_back": payment.credits_taken_back,
        "credits_frozen": payment.credits_frozen,
        "package_id": payment.package_id,
        "package_name": payment.package_name,
        "metadata": payment.details or {},
        "expires_at": _time(payment.expires_at),
        "paid_at": _time(payment.paid_at),
        "created_at": _time(payment.created_at),
        "updated_at": _time(payment.updated_at),
    }
    if with_history:
        view["history"] = [
            {"from": h.from_status, "to": h.to_status, "cause": h.cause, "actor": h.actor, "reason": h.reason, "at": _time(h.at)}
            for h in session.scalars(
                select(PaymentStatusHistory).where(PaymentStatusHistory.payment_id == payment.id).order_by(PaymentStatusHistory.id)
            )
        ]
        view["failed_attempts"] = [
            {"code": a.code, "message": a.message, "cause": a.cause, "at": _time(a.at)}
            for a in session.scalars(select(PaymentAttempt).where(PaymentAttempt.payment_id == payment.id).order_by(PaymentAttempt.id))
        ]
        view["disputes"] = [
            {"provider_dispute_id": dispute_id, "status": d["status"], "reason": d.get("reason"),
             "amount_cents": d.get("amount_cents"), "closed_at": d.get("closed_at")}
            for dispute_id, d in sorted(payment.disputes.items())
        ]
        view["refunds"] = [
            {"provider_refund_id": refund_id, "status": r["status"], "amount_cents": r["amount_cents"]}
            for refund_id, r in sorted(payment.refunds.items())
        ]
        view["fraud_warnings"] = [
            {"provider_warning_id": warning_id, "actionable": w["actionable"], "fraud_type": w.get("fraud_type")}
            for warning_id, w in sorted(payment.fraud_warnings.items())
        ]
        view["net_credits"] = int(
            session.scalar(select(func.coalesce(func.sum(CreditLedger.amount), 0)).where(CreditLedger.payment_id == payment.id))
        )
    return view


def _ledger_view(entry: CreditLedger) -> dict:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount": entry.amount,
        "shortfall": entry.shortfall,
        "payment_id": entry.payment_id,
        "cause": entry.cause,
        "idempotency_key": ledger.caller_key(entry),
        "created_at": _time(entry.created_at),
    }
