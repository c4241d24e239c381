"""PostgreSQL refuses connections for a while: every accepted event is applied once it returns, none lost or doubled.

The outage outlasts RETRY_MAX_ATTEMPTS (10 in the test settings) many times
over: an outage is retried for as long as it lasts (workers/consumer.py), and
the bound that matters is how soon after the database returns the events are
applied (DESIGN.md invariant 7: within 60 s).
"""

from __future__ import annotations

import time

import pytest
import redis
import yaml
from sqlalchemy import func, select

from models.enums import EventStatus
from models.tables import CreditAccount, CreditLedger, DeadLetter, WebhookEvent
from tests.conftest import API_TOKEN, PRIMARY_SECRET, STRIPE_API_KEY
from tests.support import processes
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode, signed_headers
from tests.support.stripe_flows import build, serve
from transport import queue
from workers.queues import LOOK_UP_SESSION

OUTAGE_SECONDS = 15
EVENTS = 10


@pytest.fixture
def database_refusing(test_services, database):
    with test_services.refusing_connections(database) as reopen:
        yield reopen


def transient_failures(worker, event_ids: set[str]) -> int:
    return sum("transient failure" in line and any(e in line for e in event_ids) for line in list(worker.output))


def test_events_accepted_during_an_outage_are_applied_once_soon_after_it(client, worker, database, database_refusing):
    events = [completed_event(user_id=f"user_outage_{n}", credits="12") for n in range(EVENTS)]
    ids = {evt["id"] for evt in events}
    for evt in events:
        body = encode(evt)
        assert client.post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET)).status_code == 200
        time.sleep(OUTAGE_SECONDS / EVENTS / 2)  # they keep arriving while the database is away

    time.sleep(OUTAGE_SECONDS / 2)
    failures = transient_failures(worker, ids)
    assert failures > 10, f"only {failures} failed tries: the outage did not outlast the retry limit"
    database_refusing()
    back = time.monotonic()

    def all_applied():
        with database.transaction() as session:
            return session.scalar(
                select(func.count()).where(WebhookEvent.provider_event_id.in_(ids), WebhookEvent.status == EventStatus.PROCESSED)
            ) == EVENTS

    wait_until(all_applied, 60, what="every event applied within 60 s of the database's return")
    print(f"applied {time.monotonic() - back:.1f} s after the database returned, after {failures} failed tries")
    with database.transaction() as session:
        rows = session.execute(select(CreditLedger.user_id, CreditLedger.amount)).all()
        assert sorted(rows) == sorted((f"user_outage_{n}", 12) for n in range(EVENTS))  # once each
        assert session.scalar(select(func.sum(CreditAccount.balance))) == 12 * EVENTS
        assert session.scalar(select(func.count()).select_from(DeadLetter)) == 0


def test_the_api_answers_503_not_500_while_the_database_is_away(client, database_refusing):
    response = client.get("/api/users/anyone/credits", headers={"Authorization": f"Bearer {API_TOKEN}"})

    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"
    assert int(response.headers["Retry-After"]) > 0


def test_a_line_item_lookup_caught_by_an_outage_is_retried_not_left_for_the_sweep(
    process_env, test_services, database, fake, tmp_path
):
    """A Payment Link's session is held for its line items; PostgreSQL goes away while the lookup asks Stripe.

    The lookup must retry like any transient failure and grant once the database
    is back — not fail, leaving the purchase for the periodic retry of held
    events (no beat runs here, so that would be never).
    """
    flow = build("payment_link")
    serve(flow, fake)
    fake.slow(2.0)  # the lookup is still waiting on Stripe when the database goes
    config = tmp_path / "payhooks.yaml"
    config.write_text(yaml.safe_dump({"credit_catalog": dict(flow.config.catalog)}))
    url = test_services.redis_url.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(url).flushdb()
    env = {**process_env, "REDIS_URL": url, "PAYHOOKS_CONFIG": str(config),
           "STRIPE_API_KEY": STRIPE_API_KEY, "STRIPE_API_BASE": fake.url}
    worker = processes.celery_worker(env, name="lookups", concurrency=1)
    try:
        publisher = queue.Publisher(queue.connect(url, timeout=1.0), attempts=3)
        for evt in flow.events:
            publisher.publish("stripe", evt["id"], encode(evt))
        wait_until(lambda: worker.saw(f"{LOOK_UP_SESSION}["), 30, what="the lookup task to start")
        with test_services.refusing_connections(database):
            time.sleep(4)  # Stripe answers at 2 s; the lookup then finds the database away
        user = flow.payments[0].user_id

        def granted():
            with database.transaction() as session:
                return session.scalar(select(func.coalesce(func.sum(CreditLedger.amount), 0)).where(CreditLedger.user_id == user))

        wait_until(lambda: granted() == flow.payments[0].granted, 30, what="the lookup retried and the credits granted")
    finally:
        worker.stop()
        redis.Redis.from_url(url).flushdb()
    assert not worker.saw("raised unexpected"), worker.log()
