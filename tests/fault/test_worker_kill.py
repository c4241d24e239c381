"""Workers killed with SIGKILL mid-batch: after a restart every event is applied exactly once.

These tests use their own Redis database so the shared test worker does not
take their messages.
"""

from __future__ import annotations

import signal
import time

import psutil
import pytest
import redis
from sqlalchemy import func, select

from models import inbox
from models.enums import EventStatus
from models.tables import CreditAccount, CreditLedger, WebhookEvent
from tests.support import processes
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode
from workers import journal
from workers.publish import EventPublisher

EVENTS = 400
CREDITS = 3


@pytest.fixture
def isolated_env(process_env, test_services):
    url = test_services.redis_url.rsplit("/", 1)[0] + "/2"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield {**process_env, "REDIS_URL": url}
    client.flushdb()


def publish_batch(redis_url: str, count: int) -> list[str]:
    publisher = EventPublisher(redis_url, timeout=1.0, attempts=3)
    ids = []
    for n in range(count):
        evt = completed_event(user_id=f"user_kill_{n}", credits=str(CREDITS))
        publisher.publish("stripe", evt["id"], encode(evt).decode())
        ids.append(evt["id"])
    return ids


def processed(database) -> int:
    with database.transaction() as session:
        return session.scalar(
            select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == EventStatus.PROCESSED)
        )


def assert_each_applied_once(database, count: int) -> None:
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == count
        rows = session.execute(select(CreditLedger.user_id, func.count(), func.sum(CreditLedger.amount)).group_by(CreditLedger.user_id)).all()
        assert len(rows) == count
        assert {(n, total) for _, n, total in rows} == {(1, CREDITS)}
        assert session.scalar(select(func.sum(CreditAccount.balance))) == count * CREDITS


def test_whole_worker_sigkilled_mid_batch(isolated_env, database):
    publish_batch(isolated_env["REDIS_URL"], EVENTS)
    first = processes.celery_worker(isolated_env, name="doomed")
    try:
        wait_until(lambda: processed(database) >= EVENTS // 10, 60, interval=0.01, what="the batch to be under way")
    finally:
        first.kill()  # SIGKILL to the main process and its pool: nothing is acknowledged or restored
    done_at_kill = processed(database)
    assert done_at_kill < EVENTS, "the worker finished before it was killed; raise EVENTS"
    in_flight = redis.Redis.from_url(isolated_env["REDIS_URL"]).hlen("unacked")
    assert in_flight > 0, "no message was in flight at the kill: the test proves nothing"

    second = processes.celery_worker(isolated_env, name="survivor")
    queue = redis.Redis.from_url(isolated_env["REDIS_URL"])
    republished = 0

    def all_applied() -> bool:
        # Messages the dead worker had taken come back after the visibility timeout;
        # one it had popped but not yet recorded as taken comes back from the journal.
        nonlocal republished
        if processed(database) == EVENTS:
            return True
        if queue.llen("webhooks") == 0 and queue.hlen("unacked") == 0:
            republished += reap_now(isolated_env["REDIS_URL"], database)
        return False

    try:
        wait_until(all_applied, 120, interval=0.5, what=f"all {EVENTS} events applied (was {done_at_kill} at kill)")
    except AssertionError as exc:
        queue = redis.Redis.from_url(isolated_env["REDIS_URL"])
        raise AssertionError(
            f"{exc}; now {processed(database)} processed, queue {queue.llen('webhooks')}, "
            f"unacked {queue.hlen('unacked')}\n{second.log(40)}"
        ) from None
    finally:
        second.stop()
    assert_each_applied_once(database, EVENTS)
    # An event the dead worker committed but had not yet cleared stays journaled until
    # the reaper sees it in the inbox: it is forgotten then, never published again.
    time.sleep(3.1)
    assert reap_now(isolated_env["REDIS_URL"], database) == 0
    assert journal.size(queue) == 0
    print(f"journal republished {republished} event(s) the killed worker had taken")


def reap_now(redis_url: str, database) -> int:
    """What the scheduled reaper does, with a short grace, from the test process."""
    publisher = EventPublisher(redis_url, timeout=1.0, attempts=3)

    def known(events):
        with database.transaction() as session:
            return inbox.known_events(session, events)

    return journal.reap(publisher.client, known, publisher.republish, grace_seconds=3)["republished"]


def test_a_message_taken_and_lost_comes_back_from_the_journal(isolated_env, database):
    """Exactly kombu's gap: BRPOP removes the message; the taker dies before recording it."""
    [event_id] = publish_batch(isolated_env["REDIS_URL"], 1)
    queue = redis.Redis.from_url(isolated_env["REDIS_URL"])
    assert queue.brpop("webhooks", timeout=1) is not None  # taken... and gone with its taker
    assert queue.llen("webhooks") == 0 and queue.hlen("unacked") == 0
    assert journal.size(queue) == 1

    assert reap_now(isolated_env["REDIS_URL"], database) == 0  # within the grace: left alone
    time.sleep(3.1)
    assert reap_now(isolated_env["REDIS_URL"], database) == 1

    worker = processes.celery_worker(isolated_env, name="rescuer")
    try:
        wait_until(lambda: processed(database) == 1, 30, what="the republished event applied")
        wait_until(lambda: journal.size(queue) == 0, 10, what="the journal entry forgotten")
    finally:
        worker.stop()
    assert_each_applied_once(database, 1)
    assert reap_now(isolated_env["REDIS_URL"], database) == 0


def test_pool_child_sigkilled_mid_task_is_requeued(isolated_env, database):
    publish_batch(isolated_env["REDIS_URL"], EVENTS)
    worker = processes.celery_worker(isolated_env, name="wounded")
    try:
        wait_until(lambda: processed(database) >= EVENTS // 10, 60, interval=0.01, what="the batch to be under way")
        children = psutil.Process(worker.proc.pid).children()
        assert children, "prefork pool has no children"
        for child in children:
            child.send_signal(signal.SIGKILL)
        assert processed(database) < EVENTS
        wait_until(lambda: processed(database) == EVENTS, 120, interval=0.2, what="all events applied after the pool restarted")
        assert worker.saw("WorkerLostError"), "no task was lost with its child: the test proves nothing"
    finally:
        worker.stop()
    assert_each_applied_once(database, EVENTS)
