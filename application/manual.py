"""Manual payments: what an operator does (record, mark paid, failed, cancelled, refunded) and their expiry.

A manual payment is recorded pending like any checkout (PaymentTracker), under
provider ``manual``. Each mark is a synthetic event (providers/manual.py)
applied by the unit of work, the same transaction, rules, history, ledger,
outbox and metrics as a webhook's — synchronously rather than through the
events queue, because an operator needs the answer: the payment as it now is,
or why the mark was refused. A mark the rules refuse (failing a paid payment),
hold (refunding an unpaid one) or dead-letter is rolled back whole, so
nothing changes and the caller's key stays free.

Idempotency: a caller's key names the event, so the same key twice is one
mark; the same key asking something else is an ``IdempotencyConflictError``.

Expiry: pending manual payments older than MANUAL_PAYMENT_EXPIRE_AFTER_DAYS
are expired by the beat (``expire_overdue``), each with an event whose id
comes from its payment, so two beats at once expire it once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, true
from sqlalchemy.orm import Session

from application.batch import BatchReport, Incoming
from application.tracker import ConflictError, NotFoundError, PaymentTracker
from application.unit import UnitOfWork, result_of
from models import payments
from models.enums import EventStatus, PaymentStatus
from models.payments import PaymentRow
from models.settlement import captured_amount, refunded_amount
from models.tables import Payment, WebhookEvent
from providers import manual
from providers.changes import ProviderEvent

SWEEP_ACTOR = "sweep"


class MarkRefusedError(ConflictError):
    """The payment is not in a state this mark applies to; nothing was changed."""


class IdempotencyConflictError(ConflictError):
    """The caller's key was used for a different request."""


class ManualPayments:
    def __init__(self, tracker: PaymentTracker, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.tracker = tracker
        self.unit: UnitOfWork = tracker.unit
        self.database = tracker.database
        self.clock = clock

    # -- recording ------------------------------------------------------------

    def record(
        self,
        *,
        user_id: str,
        credits: int,
        amount_cents: int,
        currency: str,
        method: str,
        actor: str,
        reference: str | None = None,
        reason: str | None = None,
        key: str | None = None,
    ) -> tuple[dict, bool]:
        """Record a manual payment, pending until marked; (payment, created)."""
        asked = {"method": method, "reference": reference, "note": reason}
        try:
            payment, created = self.tracker.create_pending_payment(
                user_id=user_id, amount_cents=amount_cents, currency=currency, credits=credits,
                session_id=manual.session_id(key), provider=manual.NAME,
                metadata={**asked, "recorded_by": actor},
            )
        except ConflictError:
            raise IdempotencyConflictError("this idempotency key was used to record a different payment") from None
        if not created and {name: payment["metadata"].get(name) for name in asked} != asked:
            raise IdempotencyConflictError("this idempotency key was used to record a different payment")
        return payment, created

    # -- marks ----------------------------------------------------------------------

    def mark_paid(self, payment_id: int, *, actor: str, key: str | None = None, reference: str | None = None,
                  amount_cents: int | None = None, currency: str | None = None, reason: str | None = None) -> dict:
        """The money arrived: completed, credits granted once. A different amount is kept as a mismatch."""
        data = {name: value for name, value in (("reference", reference), ("amount_cents", amount_cents),
                                                ("currency", currency.lower() if currency else None)) if value is not None}

        def check(row: PaymentRow) -> None:
            if row.paid_at is not None:
                raise MarkRefusedError(f"payment {row.id} is already paid ({row.status})")

        return self._mark(payment_id, manual.PAID, check, actor=actor, key=key, reason=reason, data=data)

    def mark_failed(self, payment_id: int, *, actor: str, key: str | None = None, reason: str | None = None) -> dict:
        return self._mark(payment_id, manual.FAILED, _unpaid("failed"), actor=actor, key=key, reason=reason)

    def cancel(self, payment_id: int, *, actor: str, key: str | None = None, reason: str | None = None) -> dict:
        return self._mark(payment_id, manual.CANCELLED, _unpaid("cancelled"), actor=actor, key=key, reason=reason)

    def refund(self, payment_id: int, *, actor: str, key: str | None = None, amount_cents: int | None = None,
               reason: str | None = None) -> dict:
        """Give back ``amount_cents`` of what was paid (all that is left if None); credits go in proportion."""
        data: dict = {"full": True} if amount_cents is None else {"amount_cents": amount_cents}

        def check(row: PaymentRow) -> None:
            if row.paid_at is None:
                raise MarkRefusedError(f"payment {row.id} is not paid ({row.status}): nothing to refund")
            captured = captured_amount(row) or 0
            left = captured - refunded_amount(row)
            if left <= 0:
                raise MarkRefusedError(f"payment {row.id} is already fully refunded")
            if amount_cents is not None and amount_cents > left:
                raise MarkRefusedError(f"payment {row.id} has {left} left to refund, less than {amount_cents}")
            if amount_cents is None:
                data["captured_cents"] = captured  # what "all of it" is, fixed now for every copy of the event

        return self._mark(payment_id, manual.REFUNDED, check, actor=actor, key=key, reason=reason, data=data)

    def _mark(self, payment_id: int, event_type: str, check: Callable[[PaymentRow], None], *, actor: str,
              key: str | None, reason: str | None, data: dict | None = None) -> dict:
        row = self._row(payment_id)
        if key is not None and self._seen(manual.event_id(key), row, event_type, reason, data):
            return self.tracker.get(payment_id)
        check(row)
        event = manual.mark(event_type, row.provider_session_id, id=manual.event_id(key), actor=actor, reason=reason,
                            data=data, now=self.clock())
        incoming = Incoming(event, "operator")

        def accept(session: Session, report: BatchReport) -> None:
            result = result_of(report, incoming)
            if result.duplicate:  # the same key, a moment ago
                _same_request(_stored(session, event.id), event)
            elif result.status != EventStatus.PROCESSED:
                raise MarkRefusedError(f"payment {payment_id}: {result.error or result.status}")

        self.unit.apply([incoming], also=accept)
        return self.tracker.get(payment_id)

    def _row(self, payment_id: int) -> PaymentRow:
        with self.database.transaction() as session:
            row = payments.get(session, payment_id)
        if row is None:
            raise NotFoundError(f"no payment {payment_id}")
        if row.provider != manual.NAME or not row.provider_session_id:
            raise MarkRefusedError(f"payment {payment_id} is a {row.provider} payment: only its provider's events move it")
        return row

    def _seen(self, event_id: str, row: PaymentRow, event_type: str, reason: str | None, data: dict | None) -> bool:
        """True if this key's mark was applied already (and asked the same); IdempotencyConflictError if it asked else."""
        with self.database.transaction() as session:
            stored = _stored(session, event_id)
        if stored is None:
            return False
        asked = {"type": event_type, "payment": row.provider_session_id, "reason": reason, "data": data or {}}
        _same_request(stored, asked)
        return True

    # -- expiry --------------------------------------------------------------------

    def expire_overdue(self, *, max_age: timedelta, batch_size: int = 100, dry_run: bool = False) -> list[int]:
        """Expire manual payments pending for longer than ``max_age``; the ids expired (or, dry, that would be)."""
        now = self.clock()
        expired: list[int] = []
        while True:
            with self.database.transaction() as session:
                due = session.execute(
                    select(Payment.id, Payment.provider_session_id)
                    .where(Payment.provider == manual.NAME, Payment.status == PaymentStatus.PENDING,
                           Payment.provider_session_id.is_not(None), Payment.created_at < now - max_age,
                           Payment.id.not_in(expired) if expired else true())
                    .order_by(Payment.created_at, Payment.id)
                    .limit(batch_size)
                ).all()
            if dry_run or not due:
                return expired + [payment_id for payment_id, _ in due]
            reason = f"pending for more than {_age(max_age)}"
            events = [
                Incoming(manual.mark(manual.EXPIRED, session_id, id=manual.expiry_id(session_id), actor=SWEEP_ACTOR,
                                     reason=reason, now=now), "sweep")
                for _, session_id in due
            ]
            report = self.unit.apply(events)
            expired += [payment_id for payment_id, _ in due]
            if len(due) < batch_size or not any(r.status == EventStatus.PROCESSED for r in report.results):
                return expired


def _unpaid(status: str) -> Callable[[PaymentRow], None]:
    def check(row: PaymentRow) -> None:
        if row.paid_at is not None:
            raise MarkRefusedError(f"payment {row.id} is paid ({row.status}): refund it rather than mark it {status}")
    return check


def _stored(session: Session, event_id: str) -> dict | None:
    """The request a stored mark made ({} if its body was pruned); None if there is none."""
    found = session.execute(
        select(WebhookEvent.payload).where(WebhookEvent.provider == manual.NAME, WebhookEvent.provider_event_id == event_id)
    ).one_or_none()
    if found is None:
        return None
    return manual.request_of(manual.parse_event(found.payload)) if found.payload else {}


def _same_request(stored: dict | None, asked: dict | ProviderEvent) -> None:
    if isinstance(asked, ProviderEvent):
        asked = manual.request_of(asked)
    if stored and json.dumps(stored, sort_keys=True) != json.dumps(asked, sort_keys=True):
        raise IdempotencyConflictError("this idempotency key was used for a different request")


def _age(age: timedelta) -> str:
    return f"{age.days} days" if age.days and not age.seconds else f"{int(age.total_seconds())} seconds"
