"""POST /webhooks/paypal: verified on the raw bytes before anything is enqueued; cached certificates.

Deliveries are signed with the test PKI's key (tests/support/paypal_events.py)
and the certificate is served by the run's fake PayPal, which the settings
trust through PAYPAL_CA_FILE.
"""

from __future__ import annotations

import datetime as dt

import pytest

from providers import paypal
from receiver import create_app
from tests.support import paypal_events as pe
from transport.queue import EVENTS, Envelope


@pytest.fixture
def client(quiet):
    return create_app(quiet).test_client()


def queued(queue) -> list[Envelope]:
    return [Envelope.decode(item) for item in queue.lrange(EVENTS, 0, -1)]


def delivery(**signing) -> tuple[dict, bytes, dict[str, str]]:
    event = pe.event("PAYMENT.CAPTURE.COMPLETED", pe.capture("CAP0000RECEIVER1", order_id="ORD0000RECEIVER1"))
    body = pe.encode(event)
    return event, body, pe.sign_headers(body, **signing)


def certificate_downloads(fake) -> int:
    return sum(1 for _, path, _ in fake.requests if "/notifications/certs/" in path)


@pytest.fixture
def no_shared_certificates(queue):
    for key in queue.scan_iter("payhooks:paypal:cert:*"):
        queue.delete(key)


def test_a_signed_delivery_is_enqueued_for_paypal(client, queue):
    event, body, headers = delivery()

    response = client.post("/webhooks/paypal", data=body, headers=headers)

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"received": True, "id": event["id"]}
    [envelope] = queued(queue)
    assert (envelope.provider, envelope.event_id, envelope.body) == ("paypal", event["id"], body)


def test_a_rotated_webhook_id_is_accepted(quiet, queue):
    app = create_app(quiet.replace(paypal_webhook_ids=("OLDWEBHOOKID00001", pe.WEBHOOK_ID)))
    _, body, headers = delivery()
    assert app.test_client().post("/webhooks/paypal", data=body, headers=headers).status_code == 200
    assert len(queued(queue)) == 1


def forged(body: bytes) -> dict[str, str]:
    other = pe.make_pki()  # the right subject and certificate address, another key
    return pe.sign_headers(body, pki=other)


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(forged, id="forged"),
        pytest.param(lambda body: pe.sign_headers(body, transmission_time=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)), id="stale"),
        pytest.param(lambda body: pe.sign_headers(body, transmission_time=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)), id="future"),
        pytest.param(lambda body: pe.sign_headers(body, webhook_id="WRONGWEBHOOKID001"), id="wrong-webhook-id"),
        pytest.param(lambda body: pe.sign_headers(body, cert_url="https://evil.example.com/v1/notifications/certs/CERT-1"), id="wrong-cert-host"),
        pytest.param(lambda body: pe.sign_headers(body, cert_url="http://api.sandbox.paypal.com/v1/notifications/certs/CERT-1"), id="not-https"),
        pytest.param(lambda body: {}, id="unsigned"),
    ],
)
def test_a_delivery_that_does_not_verify_is_400_and_never_enqueued(client, queue, make_headers):
    _, body, _ = delivery()

    response = client.post("/webhooks/paypal", data=body, headers=make_headers(body))

    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_signature"
    assert queued(queue) == []


def test_a_body_changed_after_signing_is_400(client, queue):
    _, body, headers = delivery()
    response = client.post("/webhooks/paypal", data=body.replace(b"COMPLETED", b"PENDING", 1), headers=headers)
    assert response.status_code == 400
    assert queued(queue) == []


def test_certificates_out_of_reach_is_503_with_retry_after_never_200(quiet, paypal_fake, queue, no_shared_certificates):
    client = create_app(quiet).test_client()  # a new process: nothing cached in it
    _, body, headers = delivery()
    paypal_fake.outage(True, certificates=True)
    try:
        response = client.post("/webhooks/paypal", data=body, headers=headers)
    finally:
        paypal_fake.outage(False)

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.get_json()["error"] == "verification_unavailable"
    assert queued(queue) == []
    assert client.post("/webhooks/paypal", data=body, headers=headers).status_code == 200  # PayPal's retry


def test_a_certificate_is_downloaded_once_then_shared_through_redis(quiet, paypal_fake, queue, no_shared_certificates):
    before = certificate_downloads(paypal_fake)
    first, second = create_app(quiet).test_client(), create_app(quiet).test_client()  # two processes

    for client in (first, second, first, second):
        _, body, headers = delivery()
        assert client.post("/webhooks/paypal", data=body, headers=headers).status_code == 200

    assert certificate_downloads(paypal_fake) - before == 1
    assert len(queued(queue)) == 4
    # PayPal is gone: the cached certificate still verifies, with no network call
    paypal_fake.outage(True, certificates=True)
    try:
        _, body, headers = delivery()
        assert create_app(quiet).test_client().post("/webhooks/paypal", data=body, headers=headers).status_code == 200
    finally:
        paypal_fake.outage(False)


def test_online_verification_asks_paypal_and_is_503_when_it_cannot(quiet, paypal_fake, queue):
    client = create_app(quiet.replace(paypal_verification="online")).test_client()
    approved = paypal_fake.record_event("PAYMENT.CAPTURE.COMPLETED", pe.capture("CAP0000ONLINE0001"))
    body, headers = paypal_fake.delivery(approved["id"])

    assert client.post("/webhooks/paypal", data=body, headers=headers).status_code == 200
    assert client.post("/webhooks/paypal", data=body, headers=forged(body)).status_code == 400
    paypal_fake.outage(True)
    try:
        response = client.post("/webhooks/paypal", data=body, headers=headers)
    finally:
        paypal_fake.outage(False)
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert [e.event_id for e in queued(queue)] == [approved["id"]]


def test_paypal_is_503_not_configured_without_a_webhook_id(quiet, queue):
    client = create_app(quiet.replace(paypal_webhook_ids=())).test_client()
    _, body, headers = delivery()
    response = client.post("/webhooks/paypal", data=body, headers=headers)
    assert response.status_code == 503 and response.get_json()["error"] == "not_configured"
    assert queued(queue) == []


def test_a_verified_body_that_is_not_an_event_is_400(client, queue):
    body = b'{"id":"WH-1","resource":{}}'
    response = client.post("/webhooks/paypal", data=body, headers=pe.sign_headers(body))
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_event"
    assert queued(queue) == []


def test_rejections_are_counted_per_provider(client):
    _, body, _ = delivery()
    client.post("/webhooks/paypal", data=body, headers=pe.sign_headers(body, webhook_id="WRONGWEBHOOKID001"))
    from infra import metrics

    assert metrics.SIGNATURE_FAILURES.labels(paypal.NAME, "mismatch")._value.get() >= 1
