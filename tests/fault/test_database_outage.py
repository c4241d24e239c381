"""PostgreSQL refuses connections for a while: events are retried, then applied once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models.enums import EventStatus
from models.tables import CreditAccount, CreditLedger, WebhookEvent
from tests.conftest import API_TOKEN, PRIMARY_SECRET
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode, signed_headers


@pytest.fixture
def database_refusing(test_services, database):
    with test_services.refusing_connections(database) as reopen:
        yield reopen


def test_transient_database_failure_is_retried_then_applied_once(client, worker, database, database_refusing):
    evt = completed_event(user_id="user_db_outage", credits="12")
    body = encode(evt)

    assert client.post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET)).status_code == 200
    def failed_twice():
        return any(evt["id"] in line and "transient failure (attempt 2)" in line for line in list(worker.output))

    wait_until(failed_twice, 30, what="two failed attempts")

    database_refusing()

    def applied():
        with database.transaction() as session:
            return session.scalar(select(WebhookEvent.status).where(WebhookEvent.provider_event_id == evt["id"])) == EventStatus.PROCESSED

    wait_until(applied, 30, what="the retried event to be applied")
    with database.transaction() as session:
        assert session.execute(select(CreditLedger.user_id, CreditLedger.amount)).all() == [("user_db_outage", 12)]
        assert session.get(CreditAccount, "user_db_outage").balance == 12


def test_the_api_answers_503_not_500_while_the_database_is_away(client, database_refusing):
    response = client.get("/api/users/anyone/credits", headers={"Authorization": f"Bearer {API_TOKEN}"})

    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"
    assert int(response.headers["Retry-After"]) > 0
