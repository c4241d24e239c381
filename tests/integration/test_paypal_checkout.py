"""POST /api/checkout with provider paypal, end to end; listings and stats by provider."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from application.tracker import PaymentTracker
from application.unit import UnitOfWork
from models.enums import PaymentStatus
from models.tables import CreditAccount, Payment
from providers import paypal
from providers.paypal_api import PayPalAPI
from receiver import create_app
from tests.conftest import API_TOKEN, STARTER
from tests.support.processes import wait_until, wait_worker_idle

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def shop_settings(settings):
    return settings.replace(credit_packages={"starter": STARTER}, checkout_success_url="https://shop.example/ok")


@pytest.fixture
def shop(shop_settings):
    return create_app(shop_settings).test_client()


def checkout(shop, key: str | None = None, **body):
    headers = AUTH | ({"Idempotency-Key": key} if key else {})
    return shop.post("/api/checkout", json={"user_id": "pp_buyer", "package_id": "starter", "provider": "paypal"} | body,
                     headers=headers)


def test_a_paypal_checkout_is_an_order_to_approve_recorded_pending_then_paid(shop, worker, database, paypal_fake,
                                                                            redis_client):
    response = checkout(shop)

    assert response.status_code == 201, response.get_json()
    answer = response.get_json()
    order_id = answer["session_id"]
    assert answer["provider"] == "paypal"
    assert parse_qs(urlsplit(answer["checkout_url"]).query)["token"] == [order_id]
    unit = paypal_fake.orders[order_id]["purchase_units"][0]
    assert unit["amount"] == {"currency_code": "USD", "value": "9.99"}
    assert paypal.decode_custom_id(unit["custom_id"]).credits == STARTER.credits
    payment = shop.get(f"/api/payments/{answer['payment_id']}", headers=AUTH).get_json()
    assert (payment["provider"], payment["status"], payment["provider_session_id"]) == ("paypal", "pending", order_id)

    # The buyer approves; PayPal tells us; the worker captures; the credits arrive.
    approved = paypal_fake.approve(order_id)
    body, headers = paypal_fake.delivery(approved["id"])
    assert shop.post("/webhooks/paypal", data=body, headers=headers).status_code == 200

    def paid():
        with database.transaction() as session:
            status = session.scalar(select(Payment.status).where(Payment.provider_session_id == order_id))
            balance = session.scalar(select(CreditAccount.balance).where(CreditAccount.user_id == "pp_buyer"))
        return (status, balance) == (PaymentStatus.COMPLETED, STARTER.credits)

    wait_until(paid, what="the approved order captured and credited")
    wait_worker_idle(redis_client)


def test_the_same_idempotency_key_makes_one_order(shop, paypal_fake):
    first, again = checkout(shop, "key-pp-1").get_json(), checkout(shop, "key-pp-1").get_json()
    assert first["session_id"] == again["session_id"] and first["payment_id"] == again["payment_id"]
    assert checkout(shop, "key-pp-2").get_json()["session_id"] != first["session_id"]


def test_the_python_api_creates_paypal_orders_too(database, shop_settings, paypal_fake):
    tracker = PaymentTracker(UnitOfWork(database, shop_settings.rules()), shop_settings)
    created = tracker.create_checkout(user_id="pp_python", package_id="starter", provider="paypal")
    assert created["session_id"] in paypal_fake.orders
    assert tracker.get_by_session_id(created["session_id"], provider="paypal")["status"] == "pending"


def test_paypal_checkout_without_credentials_says_so(settings):
    shop = create_app(settings.replace(credit_packages={"starter": STARTER}, paypal_client_id=None,
                                          checkout_success_url="https://shop.example/ok")).test_client()
    response = checkout(shop)
    assert response.status_code == 503 and response.get_json()["error"] == "paypal_not_configured"


def test_payments_and_stats_filter_by_provider(shop):
    for provider, session_id in (("stripe", "cs_test_filter"), ("paypal", "ORDERFILTER00001")):
        response = shop.post("/api/payments", headers=AUTH, json={
            "user_id": "u_filter", "amount_cents": 1000, "currency": "usd", "credits": 10, "session_id": session_id,
            "provider": provider})
        assert response.status_code == 201, response.get_json()

    listed = shop.get("/api/payments?provider=paypal", headers=AUTH).get_json()
    assert [p["provider_session_id"] for p in listed["payments"]] == ["ORDERFILTER00001"]
    assert shop.get("/api/payments?provider=stripe", headers=AUTH).get_json()["total_count"] == 1
    assert shop.get("/api/payments", headers=AUTH).get_json()["total_count"] == 2
    stats = shop.get("/api/stats?provider=paypal", headers=AUTH).get_json()
    assert (stats["provider"], stats["payment_count"]) == ("paypal", 1)
    assert shop.get("/api/stats", headers=AUTH).get_json()["payment_count"] == 2


def test_the_document_offers_paypal_checkout_and_the_provider_filters(shop):
    document = shop.get("/api/openapi.json", headers=AUTH).get_json()
    body = document["components"]["schemas"]["CreateCheckout"]
    assert "paypal" in str(body["properties"]["provider"])
    names = {p["name"] for p in document["paths"]["/api/payments"]["get"]["parameters"]}
    assert "provider" in names
    assert "provider" in {p["name"] for p in document["paths"]["/api/stats"]["get"]["parameters"]}


def test_verify_through_the_api_for_a_paypal_order(shop, database, paypal_fake):
    order_id = checkout(shop, user_id="pp_verify").get_json()["session_id"]
    paypal_fake.approve(order_id)
    PayPalAPI(paypal_fake.client_id, paypal_fake.client_secret, paypal_fake.url).capture_order(order_id)

    answer = shop.post("/api/payments/verify", headers=AUTH, json={"session_id": order_id, "provider": "paypal"})

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["payment_verified"] and answer.get_json()["balance"] == STARTER.credits


@pytest.mark.parametrize("order_id", ["NOSUCHORDER00001", "not/a paypal id"])
def test_verify_of_an_order_paypal_does_not_have_is_404(shop, order_id):
    answer = shop.post("/api/payments/verify", headers=AUTH, json={"session_id": order_id, "provider": "paypal"})
    assert answer.status_code == 404, answer.get_json()
