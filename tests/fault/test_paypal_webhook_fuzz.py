"""Hypothesis against POST /webhooks/paypal: random bodies and signature headers, signed or not.

Whatever arrives, the receiver answers 200 or 400 with the JSON error shape
(its 503s need PayPal or Redis out of reach, which they are not here), and
nothing reaches Redis unless it was signed by the test certificate's key for
a configured webhook id, over exactly these bytes, within the tolerance
(invariant 6). The app runs in process; the certificate comes from the run's
fake PayPal once, then from the caches.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers import paypal
from receiver import create_app
from tests.support import paypal_events as pe
from transport.queue import EVENTS

header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120)
CERT_URLS = st.sampled_from([
    pe.CERT_URL,
    "https://api.paypal.com/v1/notifications/certs/CERT-unknown",
    "https://evil.example.com/v1/notifications/certs/CERT-1",
    "http://api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
    "https://api.sandbox.paypal.com:8443/v1/notifications/certs/CERT-1",
    "https://user:pw@api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
    "https://api.sandbox.paypal.com/v1/notifications/certs/../../oauth2/token",
]) | header_values


@st.composite
def deliveries(draw) -> tuple[bytes, dict[str, str], bool]:
    """A body and headers, and whether a correct receiver must accept them."""
    body = draw(st.sampled_from([
        pe.encode(pe.event("PAYMENT.CAPTURE.COMPLETED", pe.capture("CAPFUZZ000000001"))),
        b"{}", b"[]", b"not json", b'{"id":"WH-1","event_type":"X","resource":[]}',
    ]) | st.binary(max_size=300))
    webhook_id = draw(st.sampled_from([pe.WEBHOOK_ID, "WRONGWEBHOOKID001"]))
    age = draw(st.sampled_from([0, 60, 3600, -3600]))
    headers = pe.sign_headers(body, webhook_id=webhook_id,
                              transmission_time=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age))
    valid = webhook_id == pe.WEBHOOK_ID and age in (0, 60)
    for name in paypal.SIGNATURE_HEADERS:
        if draw(st.integers(0, 5)) == 0:
            change = draw(st.sampled_from(["drop", "replace"]))
            if change == "drop":
                headers.pop(name)
            else:
                headers[name] = draw(CERT_URLS if name == paypal.CERT_URL_HEADER else header_values)
            valid = False
    if draw(st.integers(0, 5)) == 0 and body:  # one byte changed after signing
        body = bytes([body[0] ^ 1]) + body[1:]
        valid = False
    return body, headers, valid


@pytest.fixture
def fuzz_client(quiet):
    return create_app(quiet).test_client()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delivery=deliveries())
def test_no_5xx_and_nothing_unsigned_is_enqueued(fuzz_client, queue, delivery):
    body, headers, valid = delivery
    queue.delete(EVENTS)

    response = fuzz_client.post("/webhooks/paypal", data=body, headers=headers)

    assert response.status_code in (200, 400, 503), (response.status_code, response.get_json())
    assert set(response.get_json()) >= ({"received", "id"} if response.status_code == 200 else {"error", "message"})
    if response.status_code == 503:
        assert response.get_json()["error"] == "verification_unavailable" and response.headers["Retry-After"]
    enqueued = queue.llen(EVENTS)
    if not valid:
        assert enqueued == 0 and response.status_code != 200
    else:
        assert enqueued == (response.status_code == 200)
