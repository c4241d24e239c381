"""Redis goes away: the receiver answers 503 fast; when it is back, the retried delivery is applied once."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from infra.embedded import free_port
from models.enums import EventStatus
from models.tables import CreditAccount, CreditLedger, WebhookEvent
from tests.conftest import PRIMARY_SECRET
from tests.support import processes
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode, signed_headers


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


def test_redis_sigkilled_mid_stream_loses_nothing_answered_200(web, worker, database, test_services):
    """redis-server killed outright (no shutdown, no AOF rewrite) and started again from its append-only file.

    A delivery answered 200 is in Redis's AOF (written before the reply, fsynced
    every second): a killed process loses nothing the kernel already has. The
    sender retries what was not answered 200, as Stripe does.
    """
    events = [completed_event(user_id=f"user_redis_kill_{n}", credits="5") for n in range(300)]
    accepted: set[str] = set()
    killed = threading.Event()

    def send(evt) -> None:
        body = encode(evt)
        for _ in range(200):
            try:
                response = requests.post(f"{web}/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET), timeout=10)
                if response.status_code == 200:
                    accepted.add(evt["id"])
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{evt['id']} was never accepted")

    def kill_midway() -> None:
        wait_until(lambda: len(accepted) >= 100, 60, what="the stream under way")
        test_services.redis.process.send_signal(signal.SIGKILL)
        test_services.redis.process.wait(10)
        killed.set()
        time.sleep(1)
        test_services.redis.start()  # same port, same directory, same append-only file

    killer = threading.Thread(target=kill_midway)
    killer.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, events))
    killer.join(30)
    assert killed.is_set(), "redis was not killed mid-stream"
    assert len(accepted) == len(events)

    def all_applied():
        with database.transaction() as session:
            return session.scalar(
                select(func.count()).where(WebhookEvent.status == EventStatus.PROCESSED)
            ) == len(events)

    wait_until(all_applied, 60, interval=0.2, what="every accepted delivery applied after redis came back")
    with database.transaction() as session:
        rows = session.execute(select(CreditLedger.user_id, func.count()).group_by(CreditLedger.user_id)).all()
    assert len(rows) == len(events) and {n for _, n in rows} == {1}
