"""Fifty deliveries of one event at once end as one grant."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from infra.embedded import free_port
from models.enums import EventStatus
from models.rules import Rules
from models.tables import CreditAccount, CreditLedger, Payment, WebhookEvent
from providers import stripe
from tests.conftest import PRIMARY_SECRET
from tests.support import processes
from tests.support.apply import handle
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode, event, signed_headers

CONCURRENCY = 50


@pytest.fixture(scope="module")
def web(process_env):
    port = free_port()
    server = processes.gunicorn(process_env, port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def ledger_rows(database) -> list[tuple[str, int]]:
    with database.transaction() as session:
        return session.execute(select(CreditLedger.user_id, CreditLedger.amount)).all()


def test_fifty_concurrent_deliveries_through_gunicorn_grant_once(web, worker, database):
    evt = completed_event(user_id="user_race", credits="75")
    body = encode(evt)

    def deliver(_: int) -> int:
        return requests.post(f"{web}/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET), timeout=10).status_code

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        statuses = list(pool.map(deliver, range(CONCURRENCY)))

    assert statuses == [200] * CONCURRENCY

    def all_seen():
        with database.transaction() as session:
            return session.scalar(select(WebhookEvent.attempts)) == CONCURRENCY

    wait_until(all_seen, 60, what="all 50 deliveries processed by the worker")
    assert ledger_rows(database) == [("user_race", 75)]
    with database.transaction() as session:
        assert session.get(CreditAccount, "user_race").balance == 75
        assert session.scalar(select(WebhookEvent.status)) == EventStatus.PROCESSED


def test_fifty_concurrent_transactions_on_one_event_grant_once(database):
    """The inbox row lock alone, without Celery in the way: 50 racing transactions."""
    evt = stripe.parse_event(encode(completed_event(user_id="user_tx_race", credits="5")))

    def apply(_: int):
        return handle(database, evt, Rules())

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(apply, range(CONCURRENCY)))

    assert sum(not r.duplicate for r in results) == 1
    assert all(r.status == EventStatus.PROCESSED for r in results)
    assert ledger_rows(database) == [("user_tx_race", 5)]


def test_distinct_events_for_one_session_racing_grant_once(database):
    """A webhook, a resent event and a sweep can describe one payment under different ids."""
    session_obj = completed_event(user_id="user_many_ids", credits="9")["data"]["object"]
    events = [stripe.parse_event(encode(event("checkout.session.completed", session_obj))) for _ in range(CONCURRENCY)]

    def apply(evt):
        return handle(database, evt, Rules())

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(apply, events))

    assert all(r.status == EventStatus.PROCESSED for r in results)
    assert ledger_rows(database) == [("user_many_ids", 9)]
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 1
        assert session.get(CreditAccount, "user_many_ids").balance == 9
