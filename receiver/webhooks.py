"""``POST /webhooks/<provider>``: verify on the raw bytes, enqueue, answer. Nothing else.

No database on this path: a verified event goes to Redis as it came, and the
answer is 200 only once it is there. Duplicates are enqueued too; the worker's
inbox recognizes them.
"""

from __future__ import annotations

import functools
import logging
import time

from flask import Blueprint, request
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from infra import metrics
from infra.logs import log_context
from providers import paypal, stripe
from providers.changes import InvalidEventError, SignatureError
from providers.errors import VerificationUnavailableError
from receiver.errors import error
from receiver.services import services
from transport.queue import PublishError

log = logging.getLogger("payhooks.receiver")
blueprint = Blueprint("webhooks", __name__)

RETRY_AFTER_SECONDS = 5


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


def _provider() -> str:
    """The provider a delivery is for, from its route (for the answers made before the view runs)."""
    return paypal.NAME if request.path.rstrip("/").endswith("/paypal") else stripe.NAME


def _answer(
    status: int, code: str, message: str, *, provider: str | None = None, event_type: str = "unknown", retry: bool = False
):
    _delivered(provider or _provider(), event_type, code).inc()
    response = error(status, code, message)
    if retry:
        # Not the sender's fault: ask it to come back rather than drop the event.
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


# The body is read before the view runs (receiver/bodies.py); these come from there.
@blueprint.errorhandler(RequestEntityTooLarge)
def too_large(exc: RequestEntityTooLarge):
    limit = services().settings.webhook_max_bytes
    return _answer(413, "request_entity_too_large", f"bodies are limited to {limit} bytes")


@blueprint.errorhandler(RequestTimeout)
def too_slow(exc: RequestTimeout):
    log.warning("%s delivery cut off: %s", _provider(), exc.description)
    return _answer(408, "request_timeout", exc.description)


@blueprint.post("/webhooks/stripe")
def stripe_webhook():
    svc = services()
    settings = svc.settings
    if not settings.stripe_webhook_secrets:
        return _answer(503, "not_configured", "STRIPE_WEBHOOK_SECRET is not set", provider=stripe.NAME, retry=True)
    body = request.get_data()
    try:
        secret = stripe.verify_signature(
            body,
            request.headers.get(stripe.SIGNATURE_HEADER),
            settings.reveal("stripe_webhook_secrets"),
            tolerance=settings.webhook_tolerance_seconds,
            now=time.time(),
        )
    except SignatureError as exc:
        metrics.SIGNATURE_FAILURES.labels(stripe.NAME, exc.reason).inc()
        log.warning("rejected stripe delivery: %s", exc)
        return _answer(400, "invalid_signature", str(exc), provider=stripe.NAME)
    _matched(stripe.NAME, secret).inc()
    return _enqueue(stripe, body, "not a Stripe event")


@blueprint.post("/webhooks/paypal")
def paypal_webhook():
    svc = services()
    if not svc.settings.paypal_enabled:
        return _answer(503, "not_configured", "PAYPAL_WEBHOOK_ID is not set", provider=paypal.NAME, retry=True)
    body = request.get_data()
    try:
        webhook_id = svc.paypal_verifier(body, request.headers, time.time())
    except SignatureError as exc:
        metrics.SIGNATURE_FAILURES.labels(paypal.NAME, exc.reason).inc()
        log.warning("rejected paypal delivery: %s", exc)
        return _answer(400, "invalid_signature", str(exc), provider=paypal.NAME)
    except VerificationUnavailableError as exc:
        log.warning("paypal delivery not verified now: %s", exc)
        return _answer(503, "verification_unavailable", f"{exc}; retry later", provider=paypal.NAME, retry=True)
    _matched(paypal.NAME, webhook_id).inc()
    return _enqueue(paypal, body, "not a PayPal event")


def _enqueue(provider, body: bytes, what: str):
    """Parse a verified body and push it onto the events queue; 200 only once it is there."""
    try:
        event = provider.parse_event(body)
    except (InvalidEventError, UnicodeDecodeError) as exc:
        return _answer(400, "invalid_event", f"{what}: {exc}", provider=provider.NAME)
    with log_context(provider=provider.NAME, event_id=event.id, event_type=event.type):
        started = time.perf_counter()
        try:
            services().publisher.publish(provider.NAME, event.id, body)
        except PublishError as exc:
            log.error("could not enqueue: %s", exc)
            return _answer(503, "broker_unavailable", "the queue is unreachable; retry later",
                           provider=provider.NAME, event_type=event.type, retry=True)
        _enqueue_seconds(provider.NAME).observe(time.perf_counter() - started)
    _delivered(provider.NAME, event.type, "accepted").inc()
    return {"received": True, "id": event.id}
