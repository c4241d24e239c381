"""Workers killed with SIGKILL mid-stream: every event comes back within seconds and is applied exactly once.

The bar (issue 9, after Sidekiq's super fetch): each consumer claims its
batch visibly, a heartbeat tells a dead consumer from a slow one, and a live
peer takes the dead one's claims at once — no fixed grace, and a deep backlog
is never republished (only claims move). The test settings make a consumer
dead after 3 s of silence.

These tests use their own Redis database so the shared test worker does not
take their events.
"""

from __future__ import annotations

import os
import re
import signal
import time

import psutil
import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from models.enums import EventStatus
from models.tables import CreditAccount, CreditLedger, WebhookEvent
from tests.support import processes
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode
from transport import queue

EVENTS = 1500
CREDITS = 3
BATCH = 50


@pytest.fixture
def isolated_env(process_env, test_services):
    url = test_services.redis_url.rsplit("/", 1)[0] + "/2"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield {**process_env, "REDIS_URL": url, "EVENT_BATCH_SIZE": str(BATCH)}
    client.flushdb()


def publish(redis_url: str, count: int, prefix: str = "user_kill") -> list[str]:
    publisher = queue.Publisher(queue.connect(redis_url, timeout=1.0), attempts=3)
    ids = []
    for n in range(count):
        evt = completed_event(user_id=f"{prefix}_{n}", credits=str(CREDITS))
        publisher.publish("stripe", evt["id"], encode(evt))
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
        rows = session.execute(
            select(CreditLedger.user_id, func.count(), func.sum(CreditLedger.amount)).group_by(CreditLedger.user_id)
        ).all()
        assert len(rows) == count
        assert {(n, total) for _, n, total in rows} == {(1, CREDITS)}
        assert session.scalar(select(func.sum(CreditAccount.balance))) == count * CREDITS


def taken_back(*workers) -> int:
    """Events the workers logged taking back from consumers that stopped beating."""
    total = 0
    for worker in workers:
        for line in list(worker.output):
            match = re.search(r"took back (\d+) events", line)
            total += int(match.group(1)) if match else 0
    return total


def claims_of(client, pids: set[int]) -> int:
    """Events held by the consumers running in these processes (a consumer id names its pid)."""
    held = 0
    for consumer in client.zrange(queue.CONSUMERS, 0, -1):
        if int(consumer.decode().split(":")[1]) in pids:
            held += client.llen(queue.CLAIMS + consumer.decode())
    return held


def kill_while_holding_claims(worker, client, database) -> int:
    """SIGKILL the whole worker once it is busy; return how many events its consumers held."""
    wait_until(lambda: processed(database) >= EVENTS // 10, 60, interval=0.01, what="the stream to be under way")
    group = [psutil.Process(worker.proc.pid), *psutil.Process(worker.proc.pid).children()]
    pids = {process.pid for process in group}

    def stopped_holding_claims() -> bool:
        # SIGSTOP first, then look: a consumer between its acknowledgement and its next claim holds
        # nothing, and killing it then would prove nothing.
        for process in group:
            process.suspend()
        if claims_of(client, pids) > 0:
            return True
        for process in group:
            process.resume()
        return False

    wait_until(stopped_holding_claims, 30, interval=0.005, what="the worker stopped while holding claims")
    worker.kill()  # the main process and its pool: nothing acknowledged, nothing given back
    held = claims_of(client, pids)
    assert held > 0, "the killed worker held no claims: the test proves nothing"
    assert processed(database) < EVENTS, "the worker finished before it was killed; raise EVENTS"
    return held


def test_a_live_peer_takes_a_killed_workers_claims_within_seconds(isolated_env, database, tmp_path):
    client = redis.Redis.from_url(isolated_env["REDIS_URL"])
    peer_env = {**isolated_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    peer = processes.celery_worker(peer_env, name="peer", concurrency=1)
    doomed = processes.celery_worker(isolated_env, name="doomed")
    publish(isolated_env["REDIS_URL"], EVENTS)  # both are consuming when the stream starts
    try:
        held = kill_while_holding_claims(doomed, client, database)
        killed_at = time.monotonic()
        wait_until(lambda: processed(database) == EVENTS, 60, interval=0.2, what="every event applied within 60 s")
        print(f"all {EVENTS} applied {time.monotonic() - killed_at:.1f} s after the kill ({held} were claimed by the dead)")
        wait_until(lambda: taken_back(peer) >= held, 10, what="the peer to log what it took back")
        # Claims of a batch the dead committed but never acknowledged come back as duplicates: drained too.
        wait_until(lambda: queue.depth(client) == 0 and queue.claimed(client) == 0, 30, what="the queue drained")
    finally:
        peer.stop()
    assert_each_applied_once(database, EVENTS)
    # Only the dead consumers' claims moved: a deep backlog is never republished.
    assert taken_back(peer) == held <= 2 * BATCH
    assert queue.claimed(client) == 0 and queue.depth(client) == 0
    assert reclaimed_metric(tmp_path) == held  # what an operator's alert sees


def reclaimed_metric(directory) -> float:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry.get_sample_value("payhooks_events_reclaimed_total") or 0.0


def test_a_restarted_worker_takes_back_what_the_killed_one_held(isolated_env, database):
    client = redis.Redis.from_url(isolated_env["REDIS_URL"])
    publish(isolated_env["REDIS_URL"], EVENTS)
    held = kill_while_holding_claims(processes.celery_worker(isolated_env, name="doomed"), client, database)
    restarted = processes.celery_worker(isolated_env, name="restarted")
    started_at = time.monotonic()
    try:
        wait_until(lambda: processed(database) == EVENTS, 60, interval=0.2, what="every event applied within 60 s")
        print(f"all {EVENTS} applied {time.monotonic() - started_at:.1f} s after the restart")
        # A batch the killed worker committed but never acknowledged is applied already; its
        # claims are taken back all the same (and recognized as duplicates).
        wait_until(lambda: queue.depth(client) == 0 and queue.claimed(client) == 0, 30, what="the queue drained")
    finally:
        restarted.stop()
    assert_each_applied_once(database, EVENTS)
    assert taken_back(restarted) == held


def test_pool_children_sigkilled_are_replaced_and_their_claims_taken_back(isolated_env, database):
    client = redis.Redis.from_url(isolated_env["REDIS_URL"])
    publish(isolated_env["REDIS_URL"], EVENTS)
    worker = processes.celery_worker(isolated_env, name="wounded")
    try:
        wait_until(lambda: processed(database) >= EVENTS // 10, 60, interval=0.01, what="the stream to be under way")
        children = psutil.Process(worker.proc.pid).children()
        assert children, "prefork pool has no children"
        for child in children:
            child.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        held = queue.claimed(client)
        wait_until(lambda: processed(database) == EVENTS, 60, interval=0.2, what="all events applied after the pool restarted")
        print(f"all {EVENTS} applied {time.monotonic() - killed_at:.1f} s after the children were killed")
        # A child killed between its commit and its acknowledgement left claims of events
        # already applied: they are taken back too (and recognized as duplicates).
        wait_until(lambda: queue.claimed(client) == 0, 30, interval=0.2, what="the dead children's claims taken back")
    finally:
        worker.stop()
    assert_each_applied_once(database, EVENTS)
    assert taken_back(worker) >= (1 if held else 0)


def test_a_slow_consumer_keeps_its_claims_and_a_paused_one_loses_them_without_doubling(isolated_env, database):
    """A heartbeat tells slow from dead: a consumer stopped (SIGSTOP) past the timeout is dead to its peers."""
    client = redis.Redis.from_url(isolated_env["REDIS_URL"])
    paused = processes.celery_worker(isolated_env, name="paused", concurrency=1)
    try:
        consumer = psutil.Process(paused.proc.pid).children()[0]
        os.kill(consumer.pid, signal.SIGSTOP)
        publish(isolated_env["REDIS_URL"], 20, prefix="user_paused")
        # The frozen consumer may have claimed some before it froze; a fresh worker takes them after 3 s.
        peer = processes.celery_worker(isolated_env, name="peer", concurrency=1)
        try:
            wait_until(lambda: processed(database) == 20, 30, what="the peer applying everything")
            os.kill(consumer.pid, signal.SIGCONT)  # it wakes and carries on: whatever it applies again is a duplicate
            time.sleep(2)
        finally:
            peer.stop()
    finally:
        os.kill(consumer.pid, signal.SIGCONT) if psutil.pid_exists(consumer.pid) else None
        paused.stop()
    assert_each_applied_once(database, 20)
    assert queue.claimed(client) == 0
