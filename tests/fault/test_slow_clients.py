"""Hostile and slow clients cannot hold the receiver, and /api work cannot delay deliveries.

The receiver runs as the Procfile's `web` runs it (real gunicorn, two processes).
64 connections trickle bodies or headers at 1 byte/s or sit idle
(tests/support/slow_clients.py) while valid signed deliveries are timed; then
/api requests stuck behind a PostgreSQL lock do the same. With the old sync
workers both fail: 48 slow clients were enough to time out every delivery.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
import requests
from sqlalchemy import text

from infra.embedded import free_port
from tests.conftest import API_TOKEN, PRIMARY_SECRET
from tests.support import processes, slow_clients
from tests.support.stripe_events import completed_event, encode, signed_headers
from transport.queue import EVENTS

# serial: its p99 bounds are measured with no other test file loading the machine (Makefile)
pytestmark = [pytest.mark.slow, pytest.mark.serial]

BODY_DEADLINE = 3
HEADER_DEADLINE = 2
SLACK = 1.5  # scheduling on a shared 2-core machine


@pytest.fixture
def broker_url(test_services):
    """A Redis database no worker consumes, so the test can count what was queued."""
    url = test_services.redis_url.rsplit("/", 1)[0] + "/2"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def web(process_env, broker_url, fake):
    port = free_port()
    env = {
        **process_env,
        "STRIPE_API_KEY": "sk_test_x",
        "STRIPE_API_BASE": fake.url,
        "REDIS_URL": broker_url,
        "REQUEST_BODY_TIMEOUT_SECONDS": str(BODY_DEADLINE),
        "REQUEST_HEADER_TIMEOUT_SECONDS": str(HEADER_DEADLINE),
    }
    server = processes.gunicorn(env, port)
    yield port
    server.stop()


def _delivery() -> tuple[bytes, dict[str, str]]:
    body = encode(completed_event())
    return body, signed_headers(body, PRIMARY_SECRET)


def test_valid_deliveries_answer_promptly_while_64_clients_trickle_or_idle(web, broker_url):
    url = f"http://127.0.0.1:{web}/webhooks/stripe"
    with slow_clients.SlowClients("127.0.0.1", web, connections=64) as attackers:
        attackers.wait_until_open()
        time.sleep(0.5)
        result = slow_clients.probe(url, _delivery, count=100, concurrency=4, timeout=5, budget=15)
        give_up = time.monotonic() + BODY_DEADLINE + 2 * SLACK
        while not all(attackers.cuts_of(mode) for mode in slow_clients.MODES) and time.monotonic() < give_up:
            time.sleep(0.1)
        cuts = {mode: attackers.cuts_of(mode) for mode in slow_clients.MODES}

    assert result.statuses == {200: 100} and not result.failures, result.summary()
    assert result.p99 < 1.0, result.summary()
    assert redis.Redis.from_url(broker_url).llen(EVENTS) == 100  # and nothing of the attackers'

    assert all(cuts.values()), {mode: len(found) for mode, found in cuts.items()}
    slow_bodies = cuts["trickle_body"]
    assert {cut.status for cut in slow_bodies} == {408}, slow_bodies
    assert all(cut.lived < BODY_DEADLINE + SLACK for cut in slow_bodies), slow_bodies
    for mode in ("idle", "trickle_headers"):
        assert all(cut.lived < HEADER_DEADLINE + SLACK for cut in cuts[mode]), (mode, cuts[mode])


def test_a_body_complete_within_the_deadline_is_accepted_however_slowly_it_came(web):
    """The deadline bounds the whole body, not each read: a body that finishes in time is served."""
    import socket

    body, headers = _delivery()
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", web), timeout=BODY_DEADLINE + 5) as sock:
        sock.sendall(request)
        for start in range(0, len(body), len(body) // 4 + 1):  # four pieces over ~1.5 s
            sock.sendall(body[start:start + len(body) // 4 + 1])
            time.sleep(0.4)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def _slow_api_calls(call, count: int = 16) -> tuple[list[threading.Thread], list]:
    answers: list = []

    def one() -> None:
        try:
            answers.append(call().status_code)
        except requests.RequestException as exc:
            answers.append(exc.__class__.__name__)

    callers = [threading.Thread(target=one) for _ in range(count)]
    for caller in callers:
        caller.start()
    return callers, answers


def test_deliveries_do_not_wait_behind_api_requests_stuck_in_postgresql(web, database):
    """/api requests blocked in PostgreSQL (a table lock) leave deliveries unaffected."""
    base = f"http://127.0.0.1:{web}"
    with database.engine.connect() as locker:
        locker.execute(text("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE"))
        callers, answers = _slow_api_calls(lambda: requests.get(f"{base}/api/payments", headers=AUTH, timeout=30))
        processes.wait_until(lambda: _waiting_on_lock(database) >= 2, 10, what="API requests blocked on the lock")
        result = slow_clients.probe(f"{base}/webhooks/stripe", _delivery, count=60, concurrency=4,
                                    timeout=5, budget=12)
        blocked = _waiting_on_lock(database)
        locker.rollback()
    for caller in callers:
        caller.join(30)

    assert result.statuses == {200: 60} and not result.failures, result.summary()
    assert result.p99 < 1.0, result.summary()
    assert blocked >= 2  # the API requests were still stuck while deliveries were timed
    assert answers == [200] * 16


def test_deliveries_do_not_wait_behind_verify_calls_to_a_slow_stripe(web, fake):
    """/api/payments/verify waiting on Stripe (4 s an answer) leaves deliveries unaffected."""
    base = f"http://127.0.0.1:{web}"
    fake.slow(4)
    callers, answers = _slow_api_calls(lambda: requests.post(
        f"{base}/api/payments/verify", json={"session_id": "cs_test_slow"}, headers=AUTH, timeout=30))
    processes.wait_until(lambda: fake.waiting >= 2, 10, what="verify calls waiting on Stripe")
    result = slow_clients.probe(f"{base}/webhooks/stripe", _delivery, count=60, concurrency=4, timeout=5, budget=12)
    waiting = fake.waiting
    for caller in callers:
        caller.join(30)

    assert result.statuses == {200: 60} and not result.failures, result.summary()
    assert result.p99 < 1.0, result.summary()
    assert waiting >= 2  # verify calls were still waiting on Stripe while deliveries were timed
    assert answers == [404] * 16  # Stripe, when it answered, knew no such session


def _waiting_on_lock(database) -> int:
    with database.engine.connect() as probe:
        return probe.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ))
