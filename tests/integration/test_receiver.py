"""The receiver over HTTP with a real Redis: what it answers, and what reaches the queue."""

from __future__ import annotations

import io
import json
import time

import pytest
import requests

from infra.embedded import free_port
from receiver import create_app
from tests.conftest import API_TOKEN, PRIMARY_SECRET, ROTATED_SECRET
from tests.support import canaries
from tests.support.stripe_events import completed_event, encode, signed_headers
from transport.queue import EVENTS, Envelope


@pytest.fixture
def client(quiet):
    return create_app(quiet).test_client()


def queued(queue) -> list[Envelope]:
    """What reached the events queue, oldest first."""
    return [Envelope.decode(raw) for raw in reversed(queue.lrange(EVENTS, 0, -1))]


def test_accepted_event_is_queued_with_its_raw_body(client, queue):
    evt = completed_event()
    body = encode(evt)

    response = client.post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET))

    assert response.status_code == 200
    assert response.get_json() == {"received": True, "id": evt["id"]}
    [envelope] = queued(queue)
    assert (envelope.provider, envelope.event_id) == ("stripe", evt["id"])
    assert envelope.body == body  # the bytes as signed, never re-encoded
    assert abs(envelope.received_at - time.time()) < 60


def test_second_rotated_secret_is_accepted(client, queue):
    body = encode(completed_event())
    response = client.post("/webhooks/stripe", data=body, headers=signed_headers(body, ROTATED_SECRET))
    assert response.status_code == 200
    assert len(queued(queue)) == 1


def _tampered(body: bytes) -> tuple[bytes, dict]:
    headers = signed_headers(body, PRIMARY_SECRET)
    return body.replace(b'"credits":"100"', b'"credits":"999"'), headers


REJECTIONS = {
    "missing signature": lambda body: (body, {"Content-Type": "application/json"}),
    "malformed signature": lambda body: (body, {"Stripe-Signature": "garbage"}),
    "wrong secret": lambda body: (body, signed_headers(body, "whsec_someone_else")),
    "stale timestamp": lambda body: (body, signed_headers(body, PRIMARY_SECRET, int(time.time()) - 301)),
    "future timestamp": lambda body: (body, signed_headers(body, PRIMARY_SECRET, int(time.time()) + 301)),
    "tampered body": _tampered,
    "not json": lambda body: (b"not json", signed_headers(b"not json", PRIMARY_SECRET)),
    "json but not an event": lambda body: (b'{"hello": 1}', signed_headers(b'{"hello": 1}', PRIMARY_SECRET)),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_bad_deliveries_get_400_and_never_reach_the_queue(case, client, queue):
    body, headers = REJECTIONS[case](encode(completed_event()))

    response = client.post("/webhooks/stripe", data=body, headers=headers)

    assert response.status_code == 400
    assert set(response.get_json()) == {"error", "message"}
    assert queued(queue) == []


def test_body_over_the_limit_is_413_before_reading(quiet, queue):
    small = create_app(quiet.replace(webhook_max_bytes=1024))
    body = encode(completed_event())
    assert len(body) > 1024

    response = small.test_client().post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET))

    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    assert queued(queue) == []


def test_no_configured_secret_is_503_so_the_provider_retries(quiet, queue):
    unconfigured = create_app(quiet.replace(stripe_webhook_secrets=()))
    body = encode(completed_event())

    response = unconfigured.test_client().post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET))

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert queued(queue) == []


def test_unreachable_broker_is_503_fast(quiet):
    nowhere = create_app(quiet.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    body = encode(completed_event())

    started = time.monotonic()
    response = nowhere.test_client().post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET))
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.get_json()["error"] == "broker_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert elapsed < 3


def test_unknown_provider_is_404(client):
    assert client.post("/webhooks/nobody", data=b"{}").status_code == 404


def test_health_and_readiness(client, quiet):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"redis": "ok", "database": "ok"}

    broken = create_app(quiet.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    not_ready = broken.test_client().get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.get_json()["checks"]["database"] == "ok"
    assert not_ready.get_json()["checks"]["redis"] != "ok"
    assert "redis" in not_ready.get_json()["message"]


def test_api_needs_the_bearer_token(client):
    url = "/api/users/nobody/credits"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(url, headers={"Authorization": f"Basic {API_TOKEN}"}).status_code == 401
    ok = client.get(url, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert ok.status_code == 200
    assert ok.get_json() == {"user_id": "nobody", "balance": 0, "total_purchased": 0, "total_refunded": 0, "frozen": 0}


def test_api_is_closed_without_a_configured_token(quiet):
    closed = create_app(quiet.replace(api_token=None))
    response = closed.test_client().get("/api/users/u/credits", headers={"Authorization": "Bearer "})
    assert response.status_code == 503
    assert response.get_json()["error"] == "api_disabled"


# -- which routes a process serves (WEB_ROUTES) -------------------------------------------

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.mark.parametrize(
    ("routes", "webhooks", "api"),
    [("all", 200, 200), ("webhooks", 200, 404), ("api", 404, 200)],
)
def test_web_routes_choose_what_a_process_serves(quiet, queue, routes, webhooks, api):
    client = create_app(quiet.replace(web_routes=routes)).test_client()
    body = encode(completed_event())

    assert client.post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET)).status_code == webhooks
    assert client.get("/api/users/u/credits", headers=AUTH).status_code == api
    assert client.get("/healthz").status_code == 200  # every process answers its health check
    assert client.get("/metrics").status_code == 200


def test_api_bodies_have_their_own_smaller_limit(quiet):
    client = create_app(quiet.replace(api_max_bytes=1000)).test_client()
    big = {"reason": "x" * 2000}

    response = client.post("/api/dead-letters/1/discard", json=big, headers=AUTH)

    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    # while a webhook of the same size is still read
    body = encode(completed_event())
    assert len(body) > 1000
    assert client.post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET)).status_code == 200


def test_the_procfile_api_process_serves_only_the_api(process_env):
    from tests.support import processes

    port = free_port()
    server = processes.gunicorn(process_env, port, process="api")
    try:
        base = f"http://127.0.0.1:{port}"
        body = encode(completed_event())
        hook = requests.post(f"{base}/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET), timeout=5)
        api = requests.get(f"{base}/api/users/u/credits", headers=AUTH, timeout=5)
    finally:
        server.stop()
    assert hook.status_code == 404
    assert api.status_code == 200


def test_metrics_want_the_metrics_token_when_one_is_set(quiet):
    token = "m" * 40
    client = create_app(quiet.replace(metrics_token=token)).test_client()

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer " + "n" * 40}).status_code == 401
    assert client.get("/metrics", headers=AUTH).status_code == 401  # the API token is not the metrics token
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert b"payhooks_queue_depth" in answer.data
    assert client.get("/healthz").status_code == 200  # health checks stay open for load balancers


@pytest.mark.parametrize("path", ["/webhooks/stripe", "/webhooks/paypal"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_webhooks_take_only_post(client, queue, path, method):
    response = client.open(path, method=method, data=b"{}")

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    if method == "HEAD":
        assert response.data == b""
    else:
        assert response.get_json()["error"] == "method_not_allowed"
    assert queued(queue) == []


class _BrokenPublisher:
    def publish(self, provider, event_id, body, received_at=None):
        raise RuntimeError("the publisher broke")


def test_an_unexpected_error_is_a_json_500_logged_without_the_body(quiet, caplog):
    from receiver.services import Services

    evt = completed_event()
    evt["data"]["object"]["customer_details"] = {"email": "canary-500@example.com", "name": "Canary Fivehundred"}
    body = encode(evt)
    app = create_app(quiet, services=Services(quiet, publisher=_BrokenPublisher()))

    with caplog.at_level("INFO"):
        response = app.test_client().post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET))

    assert response.status_code == 500
    assert response.get_json() == {
        "error": "internal_error", "message": "an unexpected error occurred; it has been logged",
    }
    [record] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert "the publisher broke" in caplog.text  # the traceback is there for the operator
    assert record.levelname == "ERROR"
    for secret in ("canary-500@example.com", "Canary Fivehundred", PRIMARY_SECRET):
        assert secret not in caplog.text


def test_a_client_gone_mid_body_is_a_quiet_400(client, queue, caplog):
    evt = completed_event()
    evt["data"]["object"]["customer_details"] = {"email": canaries.EMAIL, "name": canaries.NAME}
    body = encode(evt)
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/webhooks/stripe", "SERVER_NAME": "x", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.errors": None,
        "wsgi.input": io.BytesIO(body[:100]), "CONTENT_LENGTH": str(len(body)),  # the rest never comes
        **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in signed_headers(body, PRIMARY_SECRET).items()},
    }
    answered = []

    with caplog.at_level("INFO"):
        document = b"".join(client.application(environ, lambda status, headers: answered.append(status)))

    assert answered == ["400 Bad Request"]
    assert json.loads(document)["error"] == "bad_request"
    assert queued(queue) == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # not a traceback per hostile request
    assert "delivery body unreadable: ClientDisconnected" in caplog.text
    signature = signed_headers(body, PRIMARY_SECRET)["Stripe-Signature"]
    for secret in (canaries.EMAIL, canaries.NAME, PRIMARY_SECRET, signature, body[:100].decode()):
        assert secret not in caplog.text
