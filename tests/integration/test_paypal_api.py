"""providers.paypal_api against the fake PayPal: token, orders, captures, refunds, events, verification."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from providers import paypal
from providers.changes import (
    CaptureRequested,
    PaymentProcessing,
    PaymentRef,
    PaymentSucceeded,
    Purchase,
    Refunded,
    SignatureError,
)
from providers.errors import (
    ProviderRequestError,
    ProviderUnavailableError,
    VerificationUnavailableError,
)
from providers.paypal_api import PayPalAPI, PayPalNotConfiguredError
from tests.support import paypal_events as pe
from tests.support.fake_paypal import FakePayPal


@pytest.fixture
def fake():
    with FakePayPal() as running:
        yield running


@pytest.fixture
def api(fake):
    client = PayPalAPI(
        fake.client_id,
        fake.client_secret,
        fake.url,
        max_retries=1,
        backoff_seconds=0.01,
        timeout_seconds=5,
    )
    yield client
    client.close()


def new_order(
    api, *, amount_cents=999, currency="USD", user_id="user_1", credits=100, request_id=None
):
    return api.create_order(
        amount_cents=amount_cents,
        currency=currency,
        user_id=user_id,
        credits=credits,
        request_id=request_id or f"create-{time.time_ns()}",
    )


def offline_source(fake, api, **kwargs):
    return paypal.CertificateSource(api.fetch_certificate, roots=[fake.pki.root], **kwargs)


# -- OAuth --------------------------------------------------------------------------------


def test_the_token_is_fetched_once_and_reused_until_it_nears_expiry(fake):
    clock = [1000.0]
    api = PayPalAPI(fake.client_id, fake.client_secret, fake.url, clock=lambda: clock[0])
    order = new_order(api)
    api.get_order(order["id"])
    assert api.tokens_fetched == 1
    clock[0] += fake.token_lifetime - 61  # still more than a minute left
    api.get_order(order["id"])
    assert api.tokens_fetched == 1
    clock[0] += 2  # within a minute of expiry: a new one
    api.get_order(order["id"])
    assert api.tokens_fetched == 2
    token_requests = [r for r in fake.requests if r[1] == "/v1/oauth2/token"]
    assert len(token_requests) == 2 and all(
        r[2]["Authorization"].startswith("Basic ") for r in token_requests
    )


def test_a_token_paypal_no_longer_accepts_is_replaced_once(fake, api):
    order = new_order(api)
    fake.expire_tokens()
    assert api.get_order(order["id"])["id"] == order["id"]
    assert api.tokens_fetched == 2


def test_wrong_credentials_are_refused_and_missing_ones_said_clearly(fake):
    with pytest.raises(ProviderRequestError, match="invalid_client"):
        new_order(PayPalAPI(fake.client_id, "wrong", fake.url, max_retries=0))
    with pytest.raises(PayPalNotConfiguredError, match="PAYPAL_CLIENT_ID"):
        PayPalAPI(None, None)


# -- orders and captures --------------------------------------------------------------------


def test_create_order_puts_buyer_and_credits_in_custom_id_and_is_idempotent(fake, api):
    first = new_order(api, user_id="u_9", credits=250, request_id="create-1")
    again = new_order(api, user_id="u_9", credits=250, request_id="create-1")
    assert again["id"] == first["id"] and len(fake.orders) == 1
    unit = api.get_order(first["id"])["purchase_units"][0]
    assert unit["amount"] == {"currency_code": "USD", "value": "9.99"}
    assert paypal.decode_custom_id(unit["custom_id"]).credits == 250
    assert any(link["rel"] == "approve" for link in first["links"])


@pytest.mark.parametrize(
    ("amount_cents", "currency", "value"),
    [(1500, "JPY", "1500"), (150000, "HUF", "1500"), (1234, "EUR", "12.34")],
)
def test_orders_in_currencies_with_special_minor_units(fake, api, amount_cents, currency, value):
    order = new_order(api, amount_cents=amount_cents, currency=currency)
    assert order["purchase_units"][0]["amount"] == {"currency_code": currency, "value": value}


def test_capture_is_idempotent_on_its_request_id_and_after_it(fake, api):
    order = new_order(api)
    fake.approve(order["id"])
    first = api.capture_order(order["id"], request_id=paypal.capture_request_id(order["id"]))
    again = api.capture_order(order["id"])  # the default request id is the same one
    assert first == again
    assert len(fake.captures) == 1
    assert [e["event_type"] for e in fake.events].count("PAYMENT.CAPTURE.COMPLETED") == 1
    # PayPal forgets request ids after hours: the order, captured, is read instead
    later = api.capture_order(order["id"], request_id="another-id")
    assert (
        later["status"] == "COMPLETED"
        and later["purchase_units"][0]["payments"]["captures"][0]["id"]
        == first["purchase_units"][0]["payments"]["captures"][0]["id"]
    )
    assert len(fake.captures) == 1


def test_capturing_an_order_not_approved_is_refused(fake, api):
    order = new_order(api)
    with pytest.raises(ProviderRequestError, match="ORDER_NOT_APPROVED"):
        api.capture_order(order["id"])


def test_a_capture_may_come_back_pending_and_clear_later(fake, api):
    order = new_order(api)
    approved = fake.approve(order["id"])
    fake.pend_capture.add(order["id"])
    captured = api.capture_order(order["id"])
    event = paypal.parse_event(pe.encode(approved))
    change = paypal.translate(paypal.with_capture(event, captured))
    assert isinstance(change, PaymentProcessing)
    capture_id = change.ref.payment_id
    assert api.get_capture(capture_id)["status"] == "PENDING"
    completed = fake.complete_capture(capture_id)
    assert paypal.translate(paypal.parse_event(pe.encode(completed))) == PaymentSucceeded(
        PaymentRef(session_id=order["id"], payment_id=capture_id),
        Purchase(user_id="user_1", credits=100, amount_cents=999, currency="usd", line_items=()),
        paid_amount_cents=999,
        paid_currency="usd",
    )


def test_refunds_through_the_api_and_by_paypal_carry_the_cumulative_total(fake, api):
    order = new_order(api, amount_cents=1000)
    fake.approve(order["id"])
    capture_id = api.capture_order(order["id"])["purchase_units"][0]["payments"]["captures"][0][
        "id"
    ]
    refund = api.refund_capture(capture_id, request_id="refund-1", amount_cents=300, currency="USD")
    assert (
        api.refund_capture(capture_id, request_id="refund-1", amount_cents=300, currency="USD")[
            "id"
        ]
        == refund["id"]
    )
    second = fake.refund(capture_id, 200)
    changes = [
        paypal.translate(paypal.parse_event(pe.encode(e)))
        for e in fake.events
        if e["event_type"] == "PAYMENT.CAPTURE.REFUNDED"
    ]
    assert changes == [
        Refunded(PaymentRef(payment_id=capture_id), refunded_cents=300),
        Refunded(PaymentRef(payment_id=capture_id), refunded_cents=500),
    ]
    assert (
        second["resource"]["seller_payable_breakdown"]["total_refunded_amount"]["value"] == "5.00"
    )
    assert api.get_capture(capture_id)["status"] == "PARTIALLY_REFUNDED"


def test_unknown_ids_are_refused_not_retried(fake, api):
    with pytest.raises(ProviderRequestError, match="RESOURCE_NOT_FOUND"):
        api.get_order("5O190127TN364715T")
    assert sum(1 for r in fake.requests if r[1].endswith("5O190127TN364715T")) == 1


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_failures_are_retried_then_reported_unavailable(fake, api, status):
    order = new_order(api)
    fake.fail_next(1, status)
    assert api.get_order(order["id"])["id"] == order["id"]  # retried once, then fine
    fake.outage(True, status)
    with pytest.raises(ProviderUnavailableError, match=str(status)):
        api.get_order(order["id"])


def test_a_slow_paypal_is_unavailable_after_the_timeout(fake):
    api = PayPalAPI(
        fake.client_id, fake.client_secret, fake.url, max_retries=0, timeout_seconds=0.2
    )
    fake.slow(0.5)
    try:
        with pytest.raises(ProviderUnavailableError, match="in time"):
            api.access_token()
    finally:
        fake.slow(0)


def test_an_unreachable_paypal_is_unavailable():
    api = PayPalAPI("id", "secret", "http://127.0.0.1:9", max_retries=0, timeout_seconds=1)
    with pytest.raises(ProviderUnavailableError, match="reached"):
        api.access_token()


# -- webhook events ---------------------------------------------------------------------------


def test_the_event_list_is_read_page_after_page_with_filters(fake, api):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    old = fake.record_event(
        "PAYMENT.CAPTURE.COMPLETED", pe.capture("OLD1"), create_time=start - dt.timedelta(days=2)
    )
    ids = []
    for _ in range(3):
        order = new_order(api)
        ids.append(fake.approve(order["id"])["id"])
        fake.record_event(
            "PAYMENT.CAPTURE.PENDING", pe.capture(order["id"] + "C", status="PENDING")
        )
    listed = list(api.list_webhook_events(start_time=start, page_size=2))
    assert len(listed) == 6 and old["id"] not in {e["id"] for e in listed}
    pages = [r for r in fake.requests if r[1] == "/v1/notifications/webhooks-events"]
    assert len(pages) == 3
    approvals = list(
        api.list_webhook_events(start_time=start, event_type="CHECKOUT.ORDER.APPROVED", page_size=2)
    )
    assert sorted(e["id"] for e in approvals) == sorted(ids)
    assert all(
        paypal.parse_event(json.dumps(e)).type == "CHECKOUT.ORDER.APPROVED" for e in approvals
    )


# -- verification ----------------------------------------------------------------------------


def test_a_delivery_verifies_offline_with_the_certificate_the_fake_serves(fake, api):
    order = new_order(api)
    body, headers = fake.delivery(fake.approve(order["id"])["id"])
    store = paypal.MemoryStore()
    source = offline_source(fake, api, store=store)
    assert (
        paypal.verify(
            body, headers, [pe.WEBHOOK_ID], certificates=source, tolerance=300, now=time.time()
        )
        == 0
    )
    assert (
        paypal.verify(
            body, headers, [pe.WEBHOOK_ID], certificates=source, tolerance=300, now=time.time()
        )
        == 0
    )
    assert sum(1 for r in fake.requests if r[1].startswith(paypal.CERT_PATH)) == 1
    assert store.sets == 1


def test_certificates_unreachable_mean_unavailable_not_refused(fake, api):
    order = new_order(api)
    body, headers = fake.delivery(fake.approve(order["id"])["id"])
    fake.outage(True, 503, certificates=True)
    with pytest.raises(VerificationUnavailableError):
        paypal.verify(
            body,
            headers,
            [pe.WEBHOOK_ID],
            certificates=offline_source(fake, api),
            tolerance=300,
            now=time.time(),
        )


def test_online_verification_sends_the_body_byte_for_byte(fake, api):
    order = new_order(api)
    body, headers = fake.delivery(fake.approve(order["id"])["id"])
    now = time.time()
    ids = ["5GP028458E2496506", pe.WEBHOOK_ID]
    assert paypal.verify_online(body, headers, ids, api=api, tolerance=300, now=now) == 1
    reserialized = json.dumps(
        json.loads(body), indent=1
    ).encode()  # same event, other bytes: another CRC32
    with pytest.raises(SignatureError) as caught:
        paypal.verify_online(reserialized, headers, ids, api=api, tolerance=300, now=now)
    assert caught.value.reason == "mismatch"
    fake.outage(True, 503)
    with pytest.raises(VerificationUnavailableError):
        paypal.verify_online(body, headers, ids, api=api, tolerance=300, now=now)
    fake.outage(False)
    stale = now + 301
    with pytest.raises(SignatureError) as caught:
        paypal.verify_online(body, headers, ids, api=api, tolerance=300, now=stale)
    assert caught.value.reason == "stale"


# -- the whole flow ----------------------------------------------------------------------


def test_approve_capture_refund_dispute_as_payhooks_will_see_them(fake, api):
    source = offline_source(fake, api)
    order = new_order(api, amount_cents=2000, user_id="u_flow", credits=400)

    def received(event: dict):
        body, headers = fake.delivery(event["id"])
        paypal.verify(
            body, headers, [pe.WEBHOOK_ID], certificates=source, tolerance=300, now=time.time()
        )
        return paypal.parse_event(body)

    approval = received(fake.approve(order["id"]))
    asked = paypal.translate(approval)
    assert isinstance(asked, CaptureRequested) and asked.purchase.credits == 400
    answer = api.capture_order(asked.ref.session_id, request_id=asked.request_id)
    paid = paypal.translate(paypal.with_capture(approval, answer))
    assert isinstance(paid, PaymentSucceeded) and paid.purchase.user_id == "u_flow"
    capture_id = paid.ref.payment_id
    [completed] = [e for e in fake.events if e["event_type"] == "PAYMENT.CAPTURE.COMPLETED"]
    assert paypal.translate(received(completed)) == paid  # the webhook says what the answer said

    refunded = paypal.translate(received(fake.refund(capture_id, 500)))
    assert refunded == Refunded(PaymentRef(payment_id=capture_id), refunded_cents=500)
    opened = fake.open_dispute(capture_id)
    assert paypal.translate(received(opened)).amount_cents == 2000
    closed = paypal.translate(received(fake.resolve_dispute(opened, "RESOLVED_BUYER_FAVOUR")))
    assert closed.won is False and closed.ref == PaymentRef(payment_id=capture_id)
    assert fake.errors == []
