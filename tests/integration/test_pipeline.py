"""End to end: HTTP → Redis → a real Celery worker → PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from models.enums import EventStatus, PaymentStatus
from models.tables import CreditLedger, Payment, PaymentStatusHistory, WebhookEvent
from tests.conftest import API_TOKEN, PRIMARY_SECRET
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode, signed_headers


def post_event(client, evt, secret=PRIMARY_SECRET):
    body = encode(evt)
    return client.post("/webhooks/stripe", data=body, headers=signed_headers(body, secret))


def event_status(database, event_id):
    with database.transaction() as session:
        return session.scalar(select(WebhookEvent.status).where(WebhookEvent.provider_event_id == event_id))


def credits(client, user_id):
    response = client.get(f"/api/users/{user_id}/credits", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 200
    return response.get_json()


def test_signed_completion_becomes_credits(client, worker, database):
    evt = completed_event(user_id="user_happy", credits="250", amount_total=4999)

    response = post_event(client, evt)

    assert response.status_code == 200
    assert response.get_json() == {"received": True, "id": evt["id"]}
    wait_until(lambda: event_status(database, evt["id"]) == EventStatus.PROCESSED, what="event processed")
    assert credits(client, "user_happy") == {
        "user_id": "user_happy",
        "balance": 250,
        "total_purchased": 250,
        "total_refunded": 0, "frozen": 0
    }
    with database.transaction() as session:
        payment = session.scalars(select(Payment)).one()
        assert (payment.status, payment.user_id, payment.credits) == (PaymentStatus.COMPLETED, "user_happy", 250)
        assert (payment.amount_cents, payment.currency) == (4999, "usd")
        assert payment.provider_session_id == evt["data"]["object"]["id"]
        assert payment.provider_payment_id == evt["data"]["object"]["payment_intent"]
        history = session.scalars(select(PaymentStatusHistory)).all()
        assert [(h.from_status, h.to_status, h.cause) for h in history] == [("pending", "completed", evt["id"])]


def test_redelivery_grants_once(client, worker, database):
    evt = completed_event(user_id="user_twice", credits="10")
    for _ in range(3):
        assert post_event(client, evt).status_code == 200

    def attempts():
        with database.transaction() as session:
            return session.scalar(select(WebhookEvent.attempts))

    wait_until(lambda: attempts() == 3, what="all three deliveries handled")
    assert event_status(database, evt["id"]) == EventStatus.PROCESSED
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(CreditLedger)) == 1
    assert credits(client, "user_twice")["balance"] == 10


def test_unusable_metadata_is_recorded_failed_not_retried(client, worker, database):
    evt = completed_event(user_id="user_bad", credits="ten")

    assert post_event(client, evt).status_code == 200

    wait_until(lambda: event_status(database, evt["id"]) == EventStatus.FAILED, what="event failed")
    with database.transaction() as session:
        row = session.scalars(select(WebhookEvent)).one()
        assert "metadata.credits is not a positive integer" in row.last_error
        assert row.attempts == 1
        assert row.payload == encode(evt).decode()
        assert session.scalar(select(func.count()).select_from(Payment)) == 0
    assert credits(client, "user_bad")["balance"] == 0


def test_unknown_event_type_is_stored_ignored(client, worker, database):
    evt = completed_event()
    evt["type"] = "customer.created"

    assert post_event(client, evt).status_code == 200

    wait_until(lambda: event_status(database, evt["id"]) == EventStatus.IGNORED, what="event ignored")
