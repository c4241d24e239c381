"""Sentry scrubbing: no secret or personal value leaves the process, errors stay useful.

Pure tests of the scrubbers on hand-built events, then the whole SDK path (capture,
the SDK's own processing, before_send, envelope) into a transport that keeps the
envelopes in memory. No network: the DSN points at example.invalid and the
transport never sends.
"""

from __future__ import annotations

import json
import logging

import pytest
import sentry_sdk
from flask import Flask, request
from sentry_sdk.transport import Transport

from providers.changes import ProviderEvent
from workers import sentry as sentry_module
from workers.sentry import FILTERED, init_sentry, scrub_breadcrumb, scrub_event
from workers.settings import Settings

# -- what must never leave ------------------------------------------------------

EVENT_ID = "evt_1Pgc76B7WZ01zgkWwyRHS12y"
TASK_ID = "d9b2d63d-a233-4123-847a-8f3a2a4c9d1b"

WEBHOOK_SECRET = "whsec_Zq8sT3stS3cr3tV4lue0123456789"
API_KEY = "sk_live_51HabcdefGHIJKLmnopQRSTuv"
TEST_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
RESTRICTED_KEY = "rk_live_51HrestrictedKEY0123"
BEARER_TOKEN = "tok3n.eyJzdWIiOiJhcGkifQ.s1gnatur3"
API_TOKEN_HEADER = "xak_f00dfacecafe4242"
COOKIE = "sessionid=c00kiev4lue9876"
PASSWORD = "hunter2-correct-horse"
SIGNATURE_HEX = "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
SIGNATURE_HEADER = f"t=1700000000,v1={SIGNATURE_HEX}"
EMAIL = "jenny.rosen@example.com"
CARD = "4242 4242 4242 4242"
CARD_DASHED = "4000-0566-5566-5556"
CARD_PLAIN = "5555555555554444"
CARD_FINGERPRINT = "Xt5EWLLDS7FJjR1c"
CUSTOMER_NAME = "Buyer Q. Person"
CUSTOMER_REF = "user_private_ref_42"

RAW_BODY = json.dumps(
    {
        "id": EVENT_ID,
        "object": "event",
        "type": "checkout.session.completed",
        "livemode": False,
        "data": {
            "object": {
                "id": "cs_test_a1b2c3",
                "object": "checkout.session",
                "customer_details": {"email": "buyer@example.com", "name": CUSTOMER_NAME},
                "metadata": {"user_id": CUSTOMER_REF},
            }
        },
    }
)

# Strings that must not appear in anything sent. (Body parts are checked by their
# distinctive values: the body's JSON text is escaped inside an envelope.)
SECRETS = [
    WEBHOOK_SECRET,
    API_KEY,
    TEST_KEY,
    RESTRICTED_KEY,
    BEARER_TOKEN,
    API_TOKEN_HEADER,
    "c00kiev4lue9876",
    PASSWORD,
    SIGNATURE_HEX,
    EMAIL,
    CARD,
    CARD_DASHED,
    CARD_PLAIN,
    "4242424242424242",
    "4000056655665556",
    CARD_FINGERPRINT,
    CUSTOMER_NAME,
    CUSTOMER_REF,
    "buyer@example.com",
    "cs_test_a1b2c3",
]

# Every kind of secret in one piece of prose, as it might reach a message.
SECRET_TEXT = (
    f"secret {WEBHOOK_SECRET} keys {API_KEY} {TEST_KEY} {RESTRICTED_KEY} "
    f"auth Bearer {BEARER_TOKEN} sig {SIGNATURE_HEADER} bare v1={SIGNATURE_HEX} "
    f"mail {EMAIL} cards {CARD} / {CARD_DASHED} / {CARD_PLAIN} "
    f"password={PASSWORD} body {RAW_BODY}"
)

# And keyed, as it might reach extra, contexts, breadcrumb data or local variables.
SECRET_FIELDS = {
    "webhook_secret": "plain-looking-secret-a",
    "stripe_api_key": "plain-looking-secret-b",
    "Authorization": f"Bearer {BEARER_TOKEN}",
    "Stripe-Signature": SIGNATURE_HEADER,
    "X-Api-Key": API_TOKEN_HEADER,
    "Cookie": COOKIE,
    "password": PASSWORD,
    "email": EMAIL,
    "payload": "plain-looking-body-c",
    "raw": "plain-looking-body-d",
    "body": RAW_BODY,
    "data": RAW_BODY,
    "card": {"brand": "visa", "last4": "4242", "fingerprint": CARD_FINGERPRINT},
    "last4": "9876",
    "exp_month": 12,
    "exp_year": 2031,
    "cvc": "737",
    "number": CARD_PLAIN,
    "fingerprint": CARD_FINGERPRINT,
    "note": SECRET_TEXT,
    "card_as_int": 4242424242424242,
}
KEYED_ONLY = [f"plain-looking-{part}" for part in ("secret-a", "secret-b", "body-c", "body-d")]


def leaves(value) -> list[str]:
    """Every key and string inside a JSON-like value, unescaped."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append(str(key))
            found.extend(leaves(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.extend(leaves(item))
    else:
        found.append(str(value))
    return found


def searchable(value) -> str:
    return json.dumps(value) + "\n" + "\n".join(leaves(value))


def assert_no_secrets(text: str) -> None:
    leaked = [secret for secret in SECRETS + KEYED_ONLY if secret in text]
    assert not leaked, f"leaked: {leaked}"


def assert_useful(text: str) -> None:
    assert EVENT_ID in text
    assert "PaymentApplyError" in text


# -- pure tests on hand-built events --------------------------------------------


def base_event() -> dict:
    """An error event as the SDK hands it to before_send, with nothing secret in it."""
    return {
        "event_id": "9c6e1d1a5b7f4d3e8a2b0c4d6e8f0a1b",
        "level": "error",
        "platform": "python",
        "timestamp": "2026-01-01T00:00:00Z",
        "fingerprint": ["{{ default }}"],
        "tags": {"component": "worker", "celery_task_id": TASK_ID, "event_id": EVENT_ID},
        "exception": {
            "values": [
                {
                    "type": "PaymentApplyError",
                    "module": "workers.apply",
                    "value": f"could not apply {EVENT_ID}: credit grant failed",
                    "mechanism": {"type": "celery", "handled": False},
                    "stacktrace": {
                        "frames": [
                            {
                                "filename": "tasks/events.py",
                                "function": "process_event",
                                "lineno": 48,
                                "context_line": "    result = handle_event(session, event, rules, source)",
                                "vars": {"provider": "'stripe'", "event_id": f"'{EVENT_ID}'"},
                            }
                        ]
                    },
                }
            ]
        },
        "breadcrumbs": {"values": []},
        "extra": {},
        "contexts": {"trace": {"trace_id": "0" * 32, "span_id": "1" * 16}},
        "request": {"url": "http://localhost/webhooks/stripe", "method": "POST", "headers": {}},
    }


def place_in_message(event: dict) -> None:
    event["exception"]["values"][0]["value"] += f" ({SECRET_TEXT})"
    event["message"] = f"webhook {EVENT_ID} failed: {SECRET_TEXT}"


def place_in_logentry(event: dict) -> None:
    event["logentry"] = {
        "message": "could not apply %s: %s",
        "params": [EVENT_ID, SECRET_TEXT, RAW_BODY, 4242424242424242, SECRET_FIELDS],
        "formatted": f"could not apply {EVENT_ID}: {SECRET_TEXT}",
    }


def place_in_frame_vars(event: dict) -> None:
    frame = event["exception"]["values"][0]["stacktrace"]["frames"][0]
    frame["vars"].update({key: repr(value) for key, value in SECRET_FIELDS.items()})
    frame["vars"].update(
        {
            "innocent": repr(SECRET_TEXT),
            "blob": repr(RAW_BODY.encode()),
            "event": repr(
                ProviderEvent(
                    "stripe",
                    EVENT_ID,
                    "checkout.session.completed",
                    None,
                    json.loads(RAW_BODY)["data"],
                    RAW_BODY,
                )
            ),
            "kwargs": {"body": RAW_BODY, "signature": SIGNATURE_HEADER},
        }
    )
    frame["pre_context"] = [f"    secret = {WEBHOOK_SECRET!r}", f"    card = {CARD!r}"]


def place_in_request(event: dict) -> None:
    event["request"].update(
        {
            "data": RAW_BODY,
            "query_string": f"token={BEARER_TOKEN}&email={EMAIL.replace('@', '%40')}&page=2",
            "cookies": {"sessionid": "c00kiev4lue9876"},
            "headers": {
                "Stripe-Signature": SIGNATURE_HEADER,
                "Authorization": f"Bearer {BEARER_TOKEN}",
                "Cookie": COOKIE,
                "X-Api-Key": API_TOKEN_HEADER,
                "X-Webhook-Secret": WEBHOOK_SECRET,
                "X-Forwarded-For": "203.0.113.9",
                "Content-Type": "application/json",
            },
            "env": {"REMOTE_ADDR": "203.0.113.9", "SERVER_NAME": "localhost"},
        }
    )


def place_in_request_with_structured_body(event: dict) -> None:
    place_in_request(event)
    event["request"]["data"] = json.loads(RAW_BODY)
    event["request"]["headers"] = [
        [name, value] for name, value in event["request"]["headers"].items()
    ]


def place_in_extra(event: dict) -> None:
    event["extra"] = {
        "fields": SECRET_FIELDS,
        "celery-job": {
            "task_name": "payhooks.process_event",
            "args": ["stripe", RAW_BODY, 1.5],
            "kwargs": {},
        },
        "text": SECRET_TEXT,
    }


def place_in_contexts(event: dict) -> None:
    event["contexts"]["payment"] = dict(SECRET_FIELDS)
    event["contexts"]["stripe"] = {"event": json.loads(RAW_BODY), "note": SECRET_TEXT}


def place_in_breadcrumbs(event: dict) -> None:
    event["breadcrumbs"]["values"] = [
        {
            "type": "log",
            "category": "payhooks.receiver",
            "level": "info",
            "message": f"received {EVENT_ID}: {SECRET_TEXT}",
            "data": SECRET_FIELDS,
        },
        {
            "type": "http",
            "category": "httplib",
            "data": {
                "url": "https://api.stripe.com/v1/events",
                "method": "GET",
                "status_code": 200,
                "http.query": f"api_key={API_KEY}",
            },
        },
    ]


def place_in_tags(event: dict) -> None:
    event["tags"].update(
        {
            "webhook_secret": WEBHOOK_SECRET,
            "customer": EMAIL,
            "note": SECRET_TEXT[:200],
            "sig": SIGNATURE_HEADER,
        }
    )


def place_in_user(event: dict) -> None:
    event["user"] = {
        "id": "user_1",
        "email": EMAIL,
        "ip_address": "203.0.113.9",
        "username": CUSTOMER_NAME,
    }


PLACES = [
    place_in_message,
    place_in_logentry,
    place_in_frame_vars,
    place_in_request,
    place_in_request_with_structured_body,
    place_in_extra,
    place_in_contexts,
    place_in_breadcrumbs,
    place_in_tags,
    place_in_user,
]


@pytest.mark.parametrize(
    "place", PLACES, ids=lambda place: place.__name__.removeprefix("place_in_")
)
def test_scrub_event_removes_every_secret_from(place):
    event = base_event()
    place(event)
    assert any(secret in searchable(event) for secret in SECRETS + KEYED_ONLY)  # as built, it leaks

    scrubbed = scrub_event(event, {})

    assert scrubbed is not None
    text = searchable(scrubbed)
    assert_no_secrets(text)
    assert_useful(text)
    assert scrubbed["exception"]["values"][0]["type"] == "PaymentApplyError"
    assert scrubbed["exception"]["values"][0]["value"].startswith(
        f"could not apply {EVENT_ID}: credit grant failed"
    )
    assert scrubbed["tags"]["celery_task_id"] == TASK_ID
    assert scrubbed["tags"]["component"] == "worker"
    assert scrubbed["fingerprint"] == ["{{ default }}"]


def test_scrub_event_with_everything_everywhere():
    event = base_event()
    for place in PLACES:
        place(event)
    scrubbed = scrub_event(event, {})
    text = searchable(scrubbed)
    assert_no_secrets(text)
    assert_useful(text)


def test_request_keeps_what_is_harmless():
    event = base_event()
    place_in_request(event)
    request_ = scrub_event(event, {})["request"]

    assert request_["data"] == FILTERED
    assert request_["cookies"] == FILTERED
    assert request_["url"] == "http://localhost/webhooks/stripe"
    assert request_["method"] == "POST"
    headers = request_["headers"]
    for name in (
        "Stripe-Signature",
        "Authorization",
        "Cookie",
        "X-Api-Key",
        "X-Webhook-Secret",
        "X-Forwarded-For",
    ):
        assert headers[name] == FILTERED, name
    assert headers["Content-Type"] == "application/json"
    assert request_["query_string"] == f"token={FILTERED}&email={FILTERED}&page=2"
    assert request_["env"] == {"REMOTE_ADDR": FILTERED, "SERVER_NAME": "localhost"}


def test_card_fields_are_filtered_by_name():
    event = base_event()
    event["extra"]["payment_method"] = {
        "id": "pm_123",
        "card": {"last4": "4242"},
        "last4": "9876",
        "exp_month": 12,
        "exp_year": 2031,
        "cvc": "737",
        "fingerprint": CARD_FINGERPRINT,
        "number": "4242",
        "brand": "visa",
    }
    method = scrub_event(event, {})["extra"]["payment_method"]
    assert method == {
        "id": "pm_123",
        "card": FILTERED,
        "last4": FILTERED,
        "exp_month": FILTERED,
        "exp_year": FILTERED,
        "cvc": FILTERED,
        "fingerprint": FILTERED,
        "number": FILTERED,
        "brand": "visa",
    }


def test_messages_stay_readable():
    message = (
        f"rejected stripe delivery for {EVENT_ID} (task {TASK_ID}): "
        "SignatureError: timestamp is older than the tolerance; order 1234567812345678 at 1700000000"
    )
    event = base_event()
    event["message"] = message
    event["logentry"] = {
        "message": "%s",
        "params": [message, 42, 3.5, None, True],
        "formatted": message,
    }
    scrubbed = scrub_event(event, {})
    assert scrubbed["message"] == message  # 1234567812345678 fails Luhn: not a card
    assert scrubbed["logentry"]["params"] == [message, 42, 3.5, None, True]


def test_a_body_inside_a_message_is_cut_out_and_the_rest_kept():
    event = base_event()
    event["exception"]["values"][0]["value"] = (
        f"not a Stripe event {EVENT_ID}: {RAW_BODY} (delivery 3)"
    )
    value = scrub_event(event, {})["exception"]["values"][0]["value"]
    assert value == f"not a Stripe event {EVENT_ID}: {FILTERED} (delivery 3)"


def test_structured_breadcrumb_data_is_kept():
    crumb = {
        "type": "http",
        "category": "httplib",
        "level": "info",
        "data": {"url": "https://api.stripe.com/v1/events", "method": "GET", "status_code": 200},
    }
    assert scrub_breadcrumb(crumb, {}) == crumb


def test_scrub_breadcrumb_from_a_log_record():
    crumb = {
        "type": "log",
        "category": "payhooks.receiver",
        "level": "warning",
        "message": f"rejected stripe delivery {EVENT_ID}: {SECRET_TEXT}",
        "timestamp": None,
        "data": {
            **SECRET_FIELDS,
            "raw_bytes": RAW_BODY.encode(),
            "obj": object(),
            "tuple": (EMAIL, 1),
        },
    }
    scrubbed = scrub_breadcrumb(crumb, {"log_record": None})
    text = searchable(scrubbed)
    assert_no_secrets(text)
    assert scrubbed["message"].startswith(f"rejected stripe delivery {EVENT_ID}: ")
    assert scrubbed["category"] == "payhooks.receiver"


def test_scrub_breadcrumb_survives_a_cycle():
    data: dict = {"email": EMAIL}
    data["self"] = data
    scrubbed = scrub_breadcrumb({"message": "loop", "data": data}, {})
    assert scrubbed is not None
    assert_no_secrets(searchable(scrubbed))


def test_an_object_whose_repr_fails_is_filtered():
    class Hostile:
        def __repr__(self):
            raise RuntimeError("no repr")

    scrubbed = scrub_breadcrumb({"message": "x", "data": {"thing": Hostile()}}, {})
    assert scrubbed["data"]["thing"] == FILTERED


def test_an_internal_error_drops_the_event_and_breadcrumb(monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("scrubber bug")

    monkeypatch.setattr(sentry_module, "_scrub_string", broken)
    assert scrub_event(base_event(), {}) is None
    assert scrub_breadcrumb({"message": "hello"}, {}) is None


def test_not_an_event_is_dropped():
    assert scrub_event(None, {}) is None
    assert scrub_breadcrumb("crumb", {}) is None


# -- the whole SDK path ---------------------------------------------------------


class CapturingTransport(Transport):
    """Keeps every envelope the client would send."""

    def __init__(self, options=None):
        super().__init__(options)
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)


SETTINGS = Settings(sentry_dsn="https://public@example.invalid/1")


@pytest.fixture(autouse=True)
def reset_sentry(monkeypatch):
    # The SDK would otherwise run `git rev-parse HEAD` to guess a release.
    monkeypatch.setenv("SENTRY_RELEASE", "payhooks-test")
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    for scope in (
        sentry_sdk.get_global_scope(),
        sentry_sdk.get_isolation_scope(),
        sentry_sdk.get_current_scope(),
    ):
        scope.clear()
    assert not sentry_sdk.is_initialized()


@pytest.fixture
def transport():
    capturing = CapturingTransport()
    assert init_sentry(SETTINGS, "test", transport=capturing) is True
    return capturing


@pytest.fixture
def info_logger():
    logger = logging.getLogger("payhooks.test_sentry")
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(previous)


def sent(transport: CapturingTransport) -> list[dict]:
    """Every envelope header and item, decoded from the bytes that would be sent."""
    sentry_sdk.flush()
    decoded = []
    for envelope in transport.envelopes:
        raw = envelope.serialize()
        lines = raw.split(b"\n")
        decoded.append(json.loads(lines[0]))
        for item in envelope.items:
            payload = item.get_bytes()
            assert payload in raw
            decoded.append({"item_headers": item.headers, "payload": json.loads(payload)})
    return decoded


def events_in(decoded: list[dict]) -> list[dict]:
    return [
        part["payload"] for part in decoded if part.get("item_headers", {}).get("type") == "event"
    ]


class PaymentApplyError(Exception):
    pass


def apply_webhook(body: bytes, header: str) -> None:
    # Local variables are what Sentry reports with each frame: some named to
    # give them away, some not.
    secret = WEBHOOK_SECRET
    customer = EMAIL
    pan = CARD
    blob = body.decode()
    seen = header
    event = ProviderEvent(
        "stripe", EVENT_ID, "checkout.session.completed", None, json.loads(body)["data"], blob
    )
    raise PaymentApplyError(
        f"could not apply {event.id} with {secret} for {customer} card {pan} signed {seen}: {blob}"
    )


def test_captured_exception_message_and_breadcrumb_carry_no_secret(transport, info_logger):
    info_logger.info(
        "received %s from %s paying with %s: %s", EVENT_ID, EMAIL, CARD_DASHED, RAW_BODY
    )
    try:
        apply_webhook(RAW_BODY.encode(), SIGNATURE_HEADER)
    except PaymentApplyError as exc:
        sentry_sdk.capture_exception(exc)
    sentry_sdk.capture_message(
        f"webhook {EVENT_ID} from {EMAIL} signed {SIGNATURE_HEADER} with {WEBHOOK_SECRET}, "
        f"key {API_KEY}, card {CARD_PLAIN}, body {RAW_BODY}"
    )
    info_logger.error("could not enqueue %s: %s %s", EVENT_ID, RESTRICTED_KEY, RAW_BODY)

    decoded = sent(transport)
    events = events_in(decoded)
    assert len(events) == 3
    text = "\n".join(searchable(part) for part in decoded)
    assert_no_secrets(text)

    exception_event = next(event for event in events if "exception" in event)
    error = exception_event["exception"]["values"][0]
    assert error["type"] == "PaymentApplyError"
    assert error["value"].startswith(
        f"could not apply {EVENT_ID} with {FILTERED} for {FILTERED} card {FILTERED}"
    )
    frame_vars = error["stacktrace"]["frames"][-1]["vars"]
    assert set(frame_vars) >= {"secret", "customer", "pan", "blob", "seen", "event"}
    assert EVENT_ID in frame_vars["event"]
    assert exception_event["tags"]["component"] == "test"
    crumbs = exception_event["breadcrumbs"]["values"]
    assert crumbs[0]["message"].startswith(f"received {EVENT_ID} from {FILTERED}")

    log_event = next(event for event in events if "logentry" in event)
    assert log_event["logentry"]["formatted"].startswith(
        f"could not enqueue {EVENT_ID}: {FILTERED}"
    )


def test_flask_request_headers_and_body_are_not_sent(transport):
    app = Flask("sentry-scrub-test")

    @app.post("/hooks/stripe")
    def hook():
        got = request.get_data()
        sig = request.headers["Stripe-Signature"]
        who = request.headers["Authorization"]
        parsed = request.get_json()
        raise PaymentApplyError(
            f"could not apply {parsed['id']} ({len(got)} bytes, {len(sig + who)})"
        )

    response = app.test_client().post(
        "/hooks/stripe?token=querytok3n&page=2",
        data=RAW_BODY,
        content_type="application/json",
        headers={
            "Stripe-Signature": SIGNATURE_HEADER,
            "Authorization": f"Bearer {BEARER_TOKEN}",
            "X-Api-Key": API_TOKEN_HEADER,
            "Cookie": COOKIE,
        },
    )
    assert response.status_code == 500

    decoded = sent(transport)
    text = "\n".join(searchable(part) for part in decoded)
    assert_no_secrets(text)
    assert "querytok3n" not in text
    (event,) = events_in(decoded)
    error = event["exception"]["values"][0]
    assert error["type"] == "PaymentApplyError"
    assert error["value"].startswith(f"could not apply {EVENT_ID}")
    assert event["request"]["url"] == "http://localhost/hooks/stripe"
    assert event["request"]["method"] == "POST"
    assert event["request"]["query_string"] == f"token={FILTERED}&page=2"
    headers = event["request"]["headers"]
    assert headers["Stripe-Signature"] == FILTERED
    assert headers["Content-Type"] == "application/json"
    assert not event["request"].get("data")
    assert event["tags"]["component"] == "test"


def test_without_a_dsn_nothing_is_installed(monkeypatch):
    # Even with SENTRY_DSN in the environment: only Settings reads it, and it is not set here.
    monkeypatch.setenv("SENTRY_DSN", "https://public@example.invalid/2")
    assert init_sentry(Settings(), "test") is False
    assert init_sentry(Settings(sentry_dsn=""), "test") is False
    assert not sentry_sdk.is_initialized()
    assert not sentry_sdk.get_client().is_active()
