"""PostgreSQL refuses connections for a while: every accepted event is applied once it returns, none lost or doubled.

The outage outlasts RETRY_MAX_ATTEMPTS (10 in the test settings) many times
over: an outage is retried for as long as it lasts (workers/consumer.py), and
the bound that matters is how soon after the database returns the events are
applied (DESIGN.md invariant 7: within 60 s).
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from models.enums import EventStatus
from models.tables import CreditAccount, CreditLedger, DeadLetter, WebhookEvent
from tests.conftest import API_TOKEN, PRIMARY_SECRET
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode, signed_headers

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
