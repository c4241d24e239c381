"""Redis goes away: the receiver answers 503 fast; when it is back, the retried delivery is applied once."""

from __future__ import annotations

import time

import pytest
import requests
from sqlalchemy import select

from models.enums import EventStatus
from models.tables import CreditAccount, CreditLedger, WebhookEvent
from tests.conftest import PRIMARY_SECRET
from tests.support import processes
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode, signed_headers
from workers.embedded import free_port


@pytest.fixture
def web(process_env):
    port = free_port()
    server = processes.gunicorn(process_env, port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def redis_stopped(test_services):
    test_services.redis.stop()
    try:
        yield test_services.redis
    finally:
        if test_services.redis.process.poll() is not None:
            test_services.redis.start()


def test_broker_down_then_back(web, worker, database, redis_stopped):
    evt = completed_event(user_id="user_outage", credits="40")
    body = encode(evt)

    def deliver():
        return requests.post(f"{web}/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET), timeout=30)

    started = time.monotonic()
    refused = deliver()
    elapsed = time.monotonic() - started

    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert elapsed < 3, f"503 took {elapsed:.2f}s"
    assert requests.get(f"{web}/readyz", timeout=10).status_code == 503

    redis_stopped.start()  # same port, same append-only file
    wait_until(lambda: requests.get(f"{web}/readyz", timeout=10).status_code == 200, 30, what="receiver ready again")

    accepted = deliver()  # the provider's retry of the same delivery
    assert accepted.status_code == 200

    def applied():
        with database.transaction() as session:
            return session.scalar(select(WebhookEvent.status).where(WebhookEvent.provider_event_id == evt["id"])) == EventStatus.PROCESSED

    wait_until(applied, 60, what="the worker to reconnect and apply the event")
    with database.transaction() as session:
        assert session.execute(select(CreditLedger.user_id, CreditLedger.amount)).all() == [("user_outage", 40)]
        assert session.get(CreditAccount, "user_outage").balance == 40
