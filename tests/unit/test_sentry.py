"""Sentry collects what helps and nothing it would have to scrub.

The whole SDK path — capture, the integrations, the SDK's own processing,
``before_send``, the envelope — into a transport that keeps envelopes in memory
(the DSN points at example.invalid; nothing is sent). What leaves a real
process is checked by the canary suite (tests/support/leaks.py).
"""

from __future__ import annotations

import json
import logging
import sys

import pytest
import sentry_sdk
from flask import Flask, request
from sentry_sdk.transport import Transport

from infra.sentry import FILTERED, before_send, init_sentry, mask
from infra.settings import Settings

EMAIL = "jane.roe@example.org"
WEBHOOK_SECRET = "whsec_UnitT3stS3cr3tV4lue"
API_KEY = "sk_live_51HunitTESTkeyABCdef"
BEARER = "Bearer unit.t0ken.value"
SIGNATURE = "t=1700000000,v1=" + "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
# Values as constants: the report carries source lines around the failing one, and they must not.
QUERY_TOKEN = "querytok3n"
PAYPAL_SIGNATURE = "paypalsig0123456789"
API_KEY_HEADER = "xak_unit_key_42"
COOKIE = "session=c00kiev4lue9876"
# A command line distinctive enough to search for (under pytest-xdist sys.argv[0] is only "-c").
ARGV = ["/opt/payhooks/bin/payhooks-canary-argv", "--secret-flag"]
BODY = json.dumps(
    {
        "id": "evt_unit_1",
        "object": "event",
        "data": {"object": {"customer_details": {"email": EMAIL}}},
    }
)


class CapturingTransport(Transport):
    """Keeps every envelope the client would send."""

    def __init__(self, options=None):
        super().__init__(options)
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)


@pytest.fixture
def transport(monkeypatch):
    # The SDK would otherwise run `git rev-parse HEAD` to guess a release.
    monkeypatch.setenv("SENTRY_RELEASE", "payhooks-test")
    previous = sentry_sdk.get_client()
    tags = dict(sentry_sdk.get_global_scope()._tags)
    capturing = CapturingTransport()
    assert init_sentry(
        Settings(sentry_dsn="https://public@example.invalid/1"), "unit", transport=capturing
    )
    yield capturing
    sentry_sdk.get_client().close()
    # Give the test session its own client (and tags) back: it reports to the fake Sentry.
    sentry_sdk.get_global_scope().set_client(previous)
    for key, value in tags.items():
        sentry_sdk.get_global_scope().set_tag(key, value)


def sent(transport: CapturingTransport) -> tuple[str, list[dict]]:
    """The serialized envelopes as one text, and their event payloads."""
    sentry_sdk.flush()
    text, events = [], []
    for envelope in transport.envelopes:
        text.append(envelope.serialize().decode())
        events.extend(
            json.loads(item.get_bytes())
            for item in envelope.items
            if item.headers.get("type") == "event"
        )
    return "\n".join(text), events


class PaymentApplyError(Exception):
    pass


def apply_webhook(body: str, header: str) -> None:
    secret = WEBHOOK_SECRET  # locals a handler might hold: none may be sent
    raise PaymentApplyError(
        f"could not apply evt_unit_1 ({len(body)} bytes, {len(header + secret)})"
    )


def test_an_exception_is_sent_with_its_frames_and_source_but_no_local_variables(transport, monkeypatch):
    monkeypatch.setattr(sys, "argv", ARGV)
    try:
        apply_webhook(BODY, SIGNATURE)
    except PaymentApplyError as exc:
        sentry_sdk.capture_exception(exc)

    text, [event] = sent(transport)
    error = event["exception"]["values"][0]
    assert (error["type"], error["value"]) == (
        "PaymentApplyError",
        f"could not apply evt_unit_1 ({len(BODY)} bytes, {len(SIGNATURE + WEBHOOK_SECRET)})",
    )
    frame = error["stacktrace"]["frames"][-1]
    assert (
        frame["function"] == "apply_webhook" and "raise PaymentApplyError" in frame["context_line"]
    )
    assert "vars" not in frame
    assert event["tags"]["component"] == "unit"
    assert "sys.argv" not in event.get("extra", {})
    for value in (WEBHOOK_SECRET, EMAIL, SIGNATURE[16:], sys.argv[0]):
        assert value not in text


def test_a_request_is_sent_without_body_cookies_query_or_credentials(transport):
    app = Flask("sentry-unit-test")

    @app.post("/webhooks/stripe")
    def hook():
        request.get_data()
        raise PaymentApplyError("could not apply evt_unit_1")

    response = app.test_client().post(
        f"/webhooks/stripe?email={EMAIL}&token={QUERY_TOKEN}",
        data=BODY,
        content_type="application/json",
        headers={
            "Stripe-Signature": SIGNATURE,
            "Paypal-Transmission-Sig": PAYPAL_SIGNATURE,
            "Authorization": BEARER,
            "X-Api-Key": API_KEY_HEADER,
            "Cookie": COOKIE,
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        },
    )
    assert response.status_code == 500

    text, [event] = sent(transport)
    sent_request = event["request"]
    assert (sent_request["method"], sent_request["url"]) == (
        "POST",
        "http://localhost/webhooks/stripe",
    )
    assert sent_request["headers"]["Content-Type"] == "application/json"
    assert sent_request["headers"]["User-Agent"].startswith("Stripe/1.0")
    shown = {name for name, value in sent_request["headers"].items() if value != FILTERED}
    assert shown <= {"Content-Type", "Content-Length", "Host", "User-Agent"}
    assert (
        not sent_request.get("data")
        and not sent_request.get("cookies")
        and not sent_request.get("query_string")
    )
    assert "user" not in event
    for value in (
        EMAIL,
        QUERY_TOKEN,
        SIGNATURE[16:],
        PAYPAL_SIGNATURE,
        BEARER,
        API_KEY_HEADER,
        COOKIE,
    ):
        assert value not in text


def test_messages_from_code_we_do_not_write_are_masked_where_they_give_values_away(transport):
    logger = logging.getLogger("payhooks.test_sentry")
    logger.warning("library said: delivery for %s", EMAIL)
    try:
        raise ValueError(
            f"bad header {SIGNATURE} from {EMAIL} using {API_KEY} and {WEBHOOK_SECRET}; {BEARER}"
        )
    except ValueError:
        logger.exception("could not verify evt_unit_1 for %s", EMAIL)

    text, [event] = sent(transport)
    assert event["exception"]["values"][0]["value"] == (
        f"bad header {FILTERED} from {FILTERED} using {FILTERED} and {FILTERED}; {FILTERED}"
    )
    assert event["logentry"]["message"] == "could not verify evt_unit_1 for %s"
    assert event["logentry"]["params"] == [FILTERED]
    assert event["logentry"]["formatted"] == f"could not verify evt_unit_1 for {FILTERED}"
    assert event["breadcrumbs"]["values"][-1]["message"] == f"library said: delivery for {FILTERED}"
    for value in (EMAIL, API_KEY, WEBHOOK_SECRET, SIGNATURE[16:], BEARER):
        assert value not in text


def test_mask_keeps_ids_and_prose():
    text = "evt_1Pgc76B7WZ01zgkW for cs_test_a1 failed: SignatureError: timestamp too old (pi_3)"
    assert mask(text) == text
    assert mask(None) is None and mask(42) == 42
    assert before_send({"message": f"to {EMAIL}"}, {}) == {"message": f"to {FILTERED}"}
    assert before_send({"level": "error"}, {}) == {"level": "error"}


def test_without_a_dsn_nothing_is_started(monkeypatch):
    # Even with SENTRY_DSN in the environment: only Settings reads it, and it is not set here.
    monkeypatch.setenv("SENTRY_DSN", "https://public@example.invalid/2")
    client = sentry_sdk.get_client()
    assert init_sentry(Settings(), "unit") is False
    assert init_sentry(Settings(sentry_dsn=""), "unit") is False
    assert sentry_sdk.get_client() is client
