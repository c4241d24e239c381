"""``POST /webhooks/<provider>``: verify on the raw bytes, enqueue, answer. Nothing else.

No database on this path: a verified event goes to Redis as it came, and the
answer is 200 only once it is there. Duplicates are enqueued too; the worker's
inbox recognizes them.

This is a plain WSGI app that ``create_app`` puts in front of Flask: it answers
the webhook paths itself and hands every other request to Flask. Flask's
request machinery (request and app contexts, the werkzeug ``Request`` and
``Response``, before-request hooks, error-handler lookup) cost about a fifth of
the receiver's CPU per delivery and bought this path nothing: it reads one
body, one header and writes one small JSON answer (BENCHMARKS.md, ``receiver``).
The answers keep the JSON shape of every other error (receiver/errors.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus

import orjson
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, RequestTimeout

from infra import metrics
from infra.logs import log_context
from providers import paypal, stripe
from providers.changes import InvalidEventError, SignatureError
from providers.errors import VerificationUnavailableError
from receiver.bodies import BodyReader
from receiver.errors import error_body
from receiver.services import Services
from transport.queue import PublishError

log = logging.getLogger("payhooks.receiver")

RETRY_AFTER_SECONDS = 5
PATHS = {"/webhooks/stripe": stripe.NAME, "/webhooks/paypal": paypal.NAME}

_STRIPE_SIGNATURE = "HTTP_" + stripe.SIGNATURE_HEADER.upper().replace("-", "_")  # as WSGI names headers
_JSON = ("Content-Type", "application/json")
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


@functools.cache
def _delivered(provider: str, event_type: str, outcome: str):
    # labels() takes a lock and a dict lookup per call; the hot path reuses the child.
    return metrics.DELIVERIES.labels(provider, event_type, outcome)


@functools.cache
def _matched(provider: str, secret: int):
    return metrics.SIGNATURE_MATCHES.labels(provider, str(secret))


@functools.cache
def _enqueue_seconds(provider: str):
    return metrics.ENQUEUE_SECONDS.labels(provider)


class Answer:
    """A status, a JSON document and any extra headers: all a webhook answer ever is."""

    __slots__ = ("status", "document", "headers")

    def __init__(self, status: int, document: dict, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.document = document
        self.headers = headers

    def __call__(self, start_response: Callable) -> Iterable[bytes]:
        body = orjson.dumps(self.document)
        start_response(_STATUS_LINES[self.status], [_JSON, ("Content-Length", str(len(body))), *self.headers])
        return [body]


def _refuse(
    provider: str, status: int, code: str, message: str, *, event_type: str = "unknown", retry: bool = False
) -> Answer:
    _delivered(provider, event_type, code).inc()
    # Not the sender's fault when retry is set: ask it to come back rather than drop the event.
    headers = (("Retry-After", str(RETRY_AFTER_SECONDS)),) if retry else ()
    return Answer(status, error_body(code, message), headers)


class WebhookEndpoints:
    """The WSGI app for ``PATHS``; every other request goes to ``fallback`` (the Flask app)."""

    def __init__(self, services: Services, fallback: Callable) -> None:
        self._services = services
        self._fallback = fallback
        self._bodies = BodyReader(services.settings)
        self._views = {stripe.NAME: self._stripe, paypal.NAME: self._paypal}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        provider = PATHS.get(environ.get("PATH_INFO", ""))
        if provider is None:
            return self._fallback(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method != "POST":
            answer = Answer(405, error_body("method_not_allowed", "webhooks are POSTed"), (("Allow", "POST"),))
            body = answer(start_response)
            return [] if method == "HEAD" else body  # a HEAD answer has headers only
        try:
            answer = self._receive(provider, environ)
        except Exception:
            log.exception("unhandled error")
            answer = Answer(500, error_body("internal_error", "an unexpected error occurred; it has been logged"))
        return answer(start_response)

    def _receive(self, provider: str, environ: dict) -> Answer:
        try:
            body = self._bodies.read(environ, self._services.settings.webhook_max_bytes)
        except RequestEntityTooLarge:
            limit = self._services.settings.webhook_max_bytes
            return _refuse(provider, 413, "request_entity_too_large", f"bodies are limited to {limit} bytes")
        except RequestTimeout as exc:
            log.warning("%s delivery cut off: %s", provider, exc.description)
            return _refuse(provider, 408, "request_timeout", exc.description)
        except HTTPException as exc:  # the client went away mid-body (ClientDisconnected), a bad length
            log.warning("%s delivery body unreadable: %s", provider, exc.__class__.__name__)
            code = (exc.name or "bad request").lower().replace(" ", "_")
            return _refuse(provider, exc.code or 400, code, exc.description or "the body could not be read")
        return self._views[provider](body, environ)

    def _stripe(self, body: bytes, environ: dict) -> Answer:
        settings = self._services.settings
        if not settings.stripe_webhook_secrets:
            return _refuse(stripe.NAME, 503, "not_configured", "STRIPE_WEBHOOK_SECRET is not set", retry=True)
        try:
            secret = stripe.verify_signature(
                body,
                environ.get(_STRIPE_SIGNATURE),
                settings.reveal("stripe_webhook_secrets"),
                tolerance=settings.webhook_tolerance_seconds,
                now=time.time(),
            )
        except SignatureError as exc:
            metrics.SIGNATURE_FAILURES.labels(stripe.NAME, exc.reason).inc()
            log.warning("rejected stripe delivery: %s", exc)
            return _refuse(stripe.NAME, 400, "invalid_signature", str(exc))
        _matched(stripe.NAME, secret).inc()
        return self._enqueue(stripe, body, "not a Stripe event")

    def _paypal(self, body: bytes, environ: dict) -> Answer:
        if not self._services.settings.paypal_enabled:
            return _refuse(paypal.NAME, 503, "not_configured", "PAYPAL_WEBHOOK_ID is not set", retry=True)
        try:
            webhook_id = self._services.paypal_verifier(body, EnvironHeaders(environ), time.time())
        except SignatureError as exc:
            metrics.SIGNATURE_FAILURES.labels(paypal.NAME, exc.reason).inc()
            log.warning("rejected paypal delivery: %s", exc)
            return _refuse(paypal.NAME, 400, "invalid_signature", str(exc))
        except VerificationUnavailableError as exc:
            log.warning("paypal delivery not verified now: %s", exc)
            return _refuse(paypal.NAME, 503, "verification_unavailable", f"{exc}; retry later", retry=True)
        _matched(paypal.NAME, webhook_id).inc()
        return self._enqueue(paypal, body, "not a PayPal event")

    def _enqueue(self, provider, body: bytes, what: str) -> Answer:
        """Parse a verified body and push it onto the events queue; 200 only once it is there."""
        try:
            event = provider.parse_event(body)
        except (InvalidEventError, UnicodeDecodeError) as exc:
            return _refuse(provider.NAME, 400, "invalid_event", f"{what}: {exc}")
        with log_context(provider=provider.NAME, event_id=event.id, event_type=event.type):
            started = time.perf_counter()
            try:
                self._services.publisher.publish(provider.NAME, event.id, body)
            except PublishError as exc:
                log.error("could not enqueue: %s", exc)
                return _refuse(provider.NAME, 503, "broker_unavailable", "the queue is unreachable; retry later",
                               event_type=event.type, retry=True)
            _enqueue_seconds(provider.NAME).observe(time.perf_counter() - started)
        _delivered(provider.NAME, event.type, "accepted").inc()
        return Answer(200, {"received": True, "id": event.id})
