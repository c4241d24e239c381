"""A delivery worker SIGKILLed mid-delivery: its deliveries come back when their leases run out; no id lost or added.

The endpoint holds every request for a while, so the worker dies with
deliveries in flight (leased, the request sent, nothing recorded). A fresh
worker takes them once the lease (3 × OUTBOUND_TIMEOUT_SECONDS + 5 s) runs
out, found by beat's kick (sent here by the test once a second, as beat would).
A receiver may see an id twice (at least once); it never sees an id that is
not a committed message's, and sees every one.
"""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import select

from application.endpoints import Endpoints
from infra.settings import Settings
from models.tables import OutboundDelivery, OutboxMessage
from tests.conftest import PRIMARY_SECRET
from tests.support import processes
from tests.support.apply import apply_batch
from tests.support.endpoint import Endpoint
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event
from workers.celery_app import make_celery
from workers.queues import KICK_OUTBOUND

MESSAGES = 12


@pytest.fixture
def isolated_env(process_env, test_services):
    url = test_services.redis_url.rsplit("/", 1)[0] + "/3"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield {**process_env, "REDIS_URL": url}
    client.flushdb()


def delivered(database) -> int:
    with database.transaction() as session:
        return len(session.scalars(select(OutboundDelivery.id).where(OutboundDelivery.status == "delivered")).all())


def test_a_killed_delivery_worker_delays_but_never_loses_or_duplicates_a_message(isolated_env, database, settings):
    celery = make_celery(Settings.from_env(isolated_env))

    def kick() -> None:
        celery.send_task(KICK_OUTBOUND, ())

    # Held for half of OUTBOUND_TIMEOUT_SECONDS (1 s in the tests): long enough for the kill to find
    # deliveries in flight, short enough that no attempt times out (at 1.0 s half of them did, and
    # the retries after the lease could outlast the wait below).
    with Endpoint(delay=0.5) as receiver:
        _, secret = Endpoints(database, settings).add(receiver.url, ["credits.granted"], secret=PRIMARY_SECRET)
        apply_batch(database, [completed_event(user_id=f"user_kill_{n}", credits="2") for n in range(MESSAGES)])
        with database.transaction() as session:
            committed = set(session.scalars(select(OutboxMessage.message_id).where(OutboxMessage.type == "credits.granted")))
        assert len(committed) == MESSAGES

        doomed = processes.celery_worker(isolated_env, name="doomed-outbound")
        kick()
        wait_until(lambda: len(receiver.received) >= 3, 20, what="deliveries under way")
        doomed.kill()
        killed_at = time.monotonic()
        with database.transaction() as session:
            leased = session.scalar(select(OutboundDelivery.id).where(OutboundDelivery.lease_until.is_not(None)).limit(1))
        assert leased is not None, "the worker died holding no delivery: the test proves nothing"
        assert delivered(database) < MESSAGES

        survivor = processes.celery_worker(isolated_env, name="survivor-outbound")
        try:
            wait_until(lambda: kick() or delivered(database) == MESSAGES, 30, interval=1.0,
                       what="every delivery made after the kill")
            print(f"all {MESSAGES} delivered {time.monotonic() - killed_at:.1f} s after the kill")
        finally:
            survivor.stop()
        received = list(receiver.received)

    ids = {r.message_id for r in received}
    assert ids == committed  # none lost, none made up
    assert all(r.verify(secret)["type"] == "credits.granted" for r in received)
