"""Applying events in tests through the real path: the unit of work on the real database."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from application.batch import BatchReport, EventResult, Incoming
from application.errors import is_transient
from application.unit import UnitOfWork, result_of
from models import history, ledger, payments
from models.payments import PaymentRow
from models.rules import Rules
from models.settlement import settle
from providers import stripe
from providers.changes import ProviderEvent
from tests.support.stripe_events import encode


def parsed(evt: dict | bytes | str | ProviderEvent) -> ProviderEvent:
    if isinstance(evt, ProviderEvent):
        return evt
    if isinstance(evt, dict):
        evt = encode(evt)
    return stripe.parse_event(evt)


def apply_batch(database, events: list, rules: Rules | None = None, source: str = "webhook") -> BatchReport:
    """One batch, one transaction; transient failures (deadlocks under concurrency) retried as a consumer would."""
    unit = UnitOfWork(database, rules or Rules())
    batch = [Incoming(parsed(evt), source) for evt in events]
    for attempt in range(50):
        try:
            return unit.apply(batch)
        except Exception as exc:
            if not is_transient(exc):
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("a batch kept failing transiently")


def handle(database, evt, rules: Rules | None = None, source: str = "webhook") -> EventResult:
    """One event, one transaction: its own result."""
    event = parsed(evt)
    return result_of(apply_batch(database, [event], rules, source), Incoming(event, source))


def pay_directly(
    database,
    *,
    user: str,
    credits: int = 100,
    session_id: str | None = None,
    payment_id: str | None = None,
    amount: int = 1000,
    currency: str = "usd",
    provider: str = "stripe",
) -> PaymentRow:
    """Record a paid, granted payment straight through the rules, as if its webhook's release of held events were missed."""
    with database.transaction() as session:
        row = PaymentRow(
            id=payments.reserve_ids(session, 1)[0], provider=provider, user_id=user, credits=credits,
            provider_session_id=session_id, provider_payment_id=payment_id, amount_cents=amount, currency=currency,
            paid_at=datetime.now(UTC), paid_amount_cents=amount, paid_currency=currency,
        )
        settled = settle(row, "test")
        payments.save(session, [settled.row])
        history.record_status_changes(session, [settled.status_change] if settled.status_change else [])
        ledger.post(session, settled.postings)
        return settled.row
