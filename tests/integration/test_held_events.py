"""Held events are retried on a schedule, and fail with a reason when their predecessor never comes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from application.held import retry_held
from application.unit import UnitOfWork
from models.enums import EventStatus
from models.rules import Rules
from models.tables import CreditAccount, WebhookEvent
from tests.support.apply import handle, pay_directly
from tests.support.processes import BIN, Process, wait_until
from tests.support.stripe_events import charge, event

WINDOW = timedelta(hours=1)


def hold_a_refund(database, pi: str) -> str:
    evt = event("charge.refunded", charge(pi, amount=1000, amount_refunded=1000))
    result = handle(database, evt)
    assert result.status == EventStatus.HELD
    return evt["id"]


def pay_without_releasing(database, pi: str, user: str) -> None:
    """Record the payment straight through the rules, as if its release had been missed."""
    pay_directly(database, user=user, session_id=f"cs_{pi}", payment_id=pi)


def inbox_row(database, event_id: str) -> WebhookEvent:
    with database.transaction() as session:
        return session.scalars(select(WebhookEvent).where(WebhookEvent.provider_event_id == event_id)).one()


def balance(database, user: str) -> int:
    with database.transaction() as session:
        account = session.get(CreditAccount, user)
        return account.balance if account else 0


def test_retry_applies_a_held_event_once_its_payment_exists(database):
    event_id = hold_a_refund(database, "pi_held_1")
    assert retry_held(UnitOfWork(database, Rules()), hold_window=WINDOW) == {"applied": 0, "still_held": 1, "expired": 0, "other": 0}

    pay_without_releasing(database, "pi_held_1", "user_held_1")
    assert balance(database, "user_held_1") == 100
    assert retry_held(UnitOfWork(database, Rules()), hold_window=WINDOW)["applied"] == 1

    row = inbox_row(database, event_id)
    assert (row.status, row.hold_key) == (EventStatus.PROCESSED, None)
    assert balance(database, "user_held_1") == 0
    assert retry_held(UnitOfWork(database, Rules()), hold_window=WINDOW)["applied"] == 0  # nothing left, nothing twice


def test_an_event_held_past_the_window_fails_with_the_reason(database):
    event_id = hold_a_refund(database, "pi_never")

    counts = retry_held(UnitOfWork(database, Rules()), hold_window=WINDOW, now=datetime.now(UTC) + WINDOW + timedelta(seconds=1))

    assert counts["expired"] == 1
    row = inbox_row(database, event_id)
    assert row.status == EventStatus.FAILED
    assert "stripe:payment:pi_never" in row.last_error
    assert row.payload  # the raw body stays for an operator


def test_beat_schedules_the_retry_onto_a_real_worker(database, worker, process_env, tmp_path):
    event_id = hold_a_refund(database, "pi_beat")
    pay_without_releasing(database, "pi_beat", "user_beat")
    env = {**process_env, "HELD_RETRY_INTERVAL_SECONDS": "1"}
    beat = Process("beat", [str(BIN / "celery"), "-A", "workers", "beat", "--loglevel", "INFO",
                            "--schedule", str(tmp_path / "beat-schedule")], env).start()
    try:
        wait_until(lambda: inbox_row(database, event_id).status == EventStatus.PROCESSED, 30,
                   what="beat to schedule the retry and the worker to apply the held refund")
    finally:
        beat.stop()
    assert beat.saw("Scheduler: Sending due task retry-held-events")
    assert balance(database, "user_beat") == 0
