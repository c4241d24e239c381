"""Retention: old payloads dropped, inbox ids kept long enough to recognize a late redelivery."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from infra.settings import Settings, SettingsError
from models.enums import EventStatus
from models.rules import Rules
from models.tables import CreditLedger, WebhookEvent
from providers import stripe
from tasks.maintenance import prune
from tests.support.apply import handle
from tests.support.outbound_rows import write_message
from tests.support.stripe_events import completed_event, encode


def deliver(database, evt):
    return handle(database, stripe.parse_event(encode(evt)), Rules())


def age(database, event_id: str, days: int) -> None:
    with database.transaction() as session:
        session.execute(
            text("UPDATE webhook_events SET received_at = now() - make_interval(days => :days) WHERE provider_event_id = :id"),
            {"days": days, "id": event_id},
        )


def inbox(database) -> dict[str, tuple[str, bool]]:
    with database.transaction() as session:
        return {r.provider_event_id: (r.status, r.payload is not None) for r in session.scalars(select(WebhookEvent))}


def test_prune_keeps_ids_for_dedupe_and_failed_payloads_for_replay(database):
    recent, week_old, month_old, ancient = (completed_event(user_id=f"user_ret_{n}", credits="1") for n in range(4))
    failed = completed_event(user_id="user_ret_bad", credits="lots")
    for evt, days in ((recent, 1), (week_old, 8), (month_old, 30), (ancient, 40), (failed, 40)):
        deliver(database, evt)
        age(database, evt["id"], days)

    totals = prune(database, payload_days=7, inbox_days=35, outbound_days=30, batch_size=2)

    assert (totals["payloads_pruned"], totals["rows_deleted"]) == (3, 1)
    rows = inbox(database)
    assert rows[recent["id"]] == (EventStatus.PROCESSED, True)
    assert rows[week_old["id"]] == (EventStatus.PROCESSED, False)
    assert rows[month_old["id"]] == (EventStatus.PROCESSED, False)
    assert ancient["id"] not in rows
    assert rows[failed["id"]] == (EventStatus.FAILED, True)  # kept for the operator

    again = deliver(database, month_old)  # a late redelivery of a pruned event
    assert again.duplicate
    with database.transaction() as session:
        assert len(session.scalars(select(CreditLedger).where(CreditLedger.user_id == "user_ret_2")).all()) == 1


def test_inbox_retention_below_35_days_is_refused():
    with pytest.raises(SettingsError, match="at least 35"):
        Settings.from_env({"RETENTION_INBOX_DAYS": "30"})


def test_settled_outbox_messages_go_with_their_delivery_log_after_the_retention(database):
    with database.transaction() as session:
        session.execute(text("DELETE FROM outbox_messages"))
        write_message(session, "ret_old_delivered", days=40, deliveries=("delivered", "delivered"))
        write_message(session, "ret_old_failed", days=40, deliveries=("failed", "delivered"))
        write_message(session, "ret_old_pending", days=40, deliveries=("delivered", "pending"))
        write_message(session, "ret_old_undispatched", days=40, dispatched=False)
        write_message(session, "ret_old_no_consumer", days=31)  # dispatched to nobody: nothing to wait for
        write_message(session, "ret_recent", days=29, deliveries=("delivered",))

    totals = prune(database, payload_days=7, inbox_days=35, outbound_days=30, batch_size=1)

    assert totals["outbox_deleted"] == 3
    with database.transaction() as session:
        kept = set(session.scalars(text("SELECT message_id FROM outbox_messages")))
        deliveries = session.scalar(text("SELECT count(*) FROM outbound_deliveries"))
        attempts = session.scalar(text("SELECT count(*) FROM outbound_attempts"))
    assert kept == {"ret_old_pending", "ret_old_undispatched", "ret_recent"}  # a pending delivery keeps its message
    assert (deliveries, attempts) == (3, 3)  # old_pending's two and recent's one; the rest went with their messages


def test_a_replay_in_progress_keeps_its_message_from_retention(database):
    from models import outbound

    with database.transaction() as session:
        write_message(session, "ret_replayed", days=40, deliveries=("failed",))
        delivery_id = session.scalar(text(
            "SELECT d.id FROM outbound_deliveries d JOIN outbox_messages m ON m.id = d.outbox_id "
            "WHERE m.message_id = 'ret_replayed'"))
    pruned = {}

    def run_retention():
        pruned.update(prune(database, payload_days=7, inbox_days=35, outbound_days=30))

    with database.transaction() as replay:
        assert outbound.reopen(replay, delivery_id, timedelta(days=3))  # the operator's replay, not yet committed
        retention = threading.Thread(target=run_retention)
        retention.start()
        retention.join(timeout=3)  # with the message held, retention skips it at once
    retention.join(timeout=30)

    assert pruned["outbox_deleted"] == 0
    with database.transaction() as session:
        assert session.scalar(text("SELECT status FROM outbound_deliveries WHERE id = :id"), {"id": delivery_id}) == "pending"
    assert prune(database, payload_days=7, inbox_days=35, outbound_days=30)["outbox_deleted"] == 0  # pending: kept
