"""A PayPal event that cannot be applied is dead-lettered with its raw body and replayed like Stripe's."""

from __future__ import annotations

from sqlalchemy import select

from application.batch import Incoming
from application.unit import UnitOfWork
from models.tables import CreditAccount, DeadLetter
from providers import paypal
from tests.conftest import API_TOKEN
from tests.support import paypal_events as pe

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def test_an_unknown_capture_is_dead_lettered_then_replayed_once_its_payment_is_recorded(client, database, settings):
    capture = pe.capture("CAPDEADLETTER001", order_id="ORDDEADLETTER001", user_id=None, credits=None, amount_cents=500)
    body = pe.encode(pe.event("PAYMENT.CAPTURE.COMPLETED", capture))
    result = UnitOfWork(database, settings.rules()).apply_one(Incoming(paypal.parse_event(body)))
    assert result.status == "failed"

    letters = client.get("/api/dead-letters?provider=paypal", headers=AUTH).get_json()["dead_letters"]
    assert [(d["provider"], d["event_type"]) for d in letters] == [("paypal", "PAYMENT.CAPTURE.COMPLETED")]
    with database.transaction() as session:
        assert session.scalars(select(DeadLetter.payload)).one() == body.decode()

    recorded = client.post("/api/payments", headers=AUTH, json={
        "user_id": "u_dl", "amount_cents": 500, "currency": "usd", "credits": 40,
        "session_id": "ORDDEADLETTER001", "provider": "paypal"})
    assert recorded.status_code == 201
    replayed = client.post(f"/api/dead-letters/{letters[0]['id']}/replay", headers=AUTH).get_json()
    assert replayed["event_status"] == "processed", replayed
    with database.transaction() as session:
        assert session.scalar(select(CreditAccount.balance).where(CreditAccount.user_id == "u_dl")) == 40
