"""The consumer acknowledges only what it committed: Redis failing mid-claim, or a consumer
starting without Redis or with claims it holds but never applied, loses nothing.

In-process consumers on the real Redis and PostgreSQL; the one injected fault is a
claim whose reply is lost after Redis moved the items (what a connection cut at
the wrong moment does), so the moment is exact rather than a race.
"""

from __future__ import annotations

import shutil
import time

import pytest
import redis
from sqlalchemy import func, select

from application.unit import UnitOfWork
from infra.embedded import EmbeddedRedis, free_port
from models.enums import EventStatus
from models.rules import Rules
from models.tables import WebhookEvent
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode
from transport import queue
from workers.consumer import Consumer


@pytest.fixture
def isolated_url(test_services):
    url = test_services.redis_url.rsplit("/", 1)[0] + "/3"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


def publish(url: str, count: int, prefix: str) -> list[str]:
    publisher = queue.Publisher(queue.connect(url, timeout=1.0), attempts=3)
    ids = []
    for n in range(count):
        evt = completed_event(user_id=f"{prefix}_{n}", credits="7")
        publisher.publish("stripe", evt["id"], encode(evt))
        ids.append(evt["id"])
    return ids


def consumer(claims: queue.Claims, database, batch_size: int = 3) -> Consumer:
    def reject(item: bytes, reason: str) -> None:
        raise AssertionError(f"unexpected unreadable item: {reason}")

    return Consumer(claims, UnitOfWork(database, Rules()), batch_size=batch_size, heartbeat_seconds=0.2,
                    dead_after_seconds=3, backoff_max_seconds=0.5, retry_limit=3, reject=reject)


def processed(database) -> int:
    with database.transaction() as session:
        return session.scalar(
            select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == EventStatus.PROCESSED)
        )


class LosesOneReply(queue.Claims):
    """Redis moves the first batch onto our claims, then the connection drops before the reply arrives."""

    lost = False

    def claim(self, limit: int, *, block: float = 0.0) -> list[bytes]:
        items = super().claim(limit, block=block)
        if items and not self.lost:
            self.lost = True
            raise redis.ConnectionError("Connection closed by server.")
        return items


def test_a_claim_whose_reply_was_lost_is_applied_not_acknowledged_away(isolated_url, database):
    claims = LosesOneReply(queue.connect(isolated_url, timeout=2.0))
    publish(isolated_url, 6, "user_lost_reply")
    running = consumer(claims, database).start()
    try:
        wait_until(lambda: processed(database) == 6, 15, interval=0.1, what="every event applied, the unseen claims too")
    finally:
        running.stop()
    assert claims.lost
    client = redis.Redis.from_url(isolated_url)
    assert queue.depth(client) == 0 and client.llen(claims.claims) == 0


def test_claims_held_at_start_go_back_to_the_queue_not_acknowledged(isolated_url, database, test_services):
    """A consumer that starts holding claims (a previous life of it) and is stopped before applying them gives them back."""
    client = redis.Redis.from_url(isolated_url)
    publish(isolated_url, 4, "user_held_at_start")
    claims = queue.Claims(queue.connect(isolated_url, timeout=2.0))
    assert len(claims.claim(10)) == 4  # held, never applied
    with test_services.refusing_connections(database):
        running = consumer(claims, database).start()
        time.sleep(1.5)  # it tries, PostgreSQL refuses
        running.stop(timeout=5)
        assert queue.depth(client) + client.llen(claims.claims) == 4, "claims that were never applied were dropped"
    assert processed(database) == 0


def test_a_consumer_started_before_redis_waits_for_it(database, tmp_path):
    port = free_port()
    claims = queue.Claims(queue.connect(f"redis://127.0.0.1:{port}/0", timeout=1.0))
    running = consumer(claims, database).start()
    server = None
    try:
        time.sleep(1.5)  # no redis-server on the port yet
        server = EmbeddedRedis(tmp_path / "late-redis", port=port).start()
        publish(server.url, 2, "user_late_redis")
        wait_until(lambda: processed(database) == 2, 15, interval=0.1, what="the consumer to find Redis and apply")
    finally:
        running.stop(timeout=5)
        if server is not None:
            server.stop()
        shutil.rmtree(tmp_path / "late-redis", ignore_errors=True)


def test_a_stray_on_an_idle_consumers_claims_is_put_back_and_applied(isolated_url, database):
    """A claim whose server side completed after the client gave up leaves a stray on a live consumer's
    claims (its heartbeat keeps peers off them): the idle consumer puts it back itself."""
    claims = queue.Claims(queue.connect(isolated_url, timeout=2.0))
    running = consumer(claims, database).start()
    try:
        time.sleep(1.5)  # started, idle
        evt = completed_event(user_id="user_stray_claim", credits="7")
        stray = queue.Envelope("stripe", evt["id"], time.time(), encode(evt)).encode()
        redis.Redis.from_url(isolated_url).lpush(claims.claims, stray)
        wait_until(lambda: processed(database) == 1, 10, interval=0.1, what="the stray applied")
    finally:
        running.stop()
