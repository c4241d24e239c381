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
from providers import stripe
from providers.changes import InvalidEventError, SignatureError
from receiver.errors import error
from receiver.services import services
from transport.queue import PublishError

log = logging.getLogger("payhooks.receiver")
blueprint = Blueprint("webhooks", __name__)

RETRY_AFTER_SECONDS = 5


@functools.cache
def _delivered(event_type: str, outcome: str):
    # labels() takes a lock and a dict lookup per call; the hot path reuses the child.
    return metrics.DELIVERIES.labels(stripe.NAME, event_type, outcome)


@functools.cache
def _matched(secret: int):
    return metrics.SIGNATURE_MATCHES.labels(stripe.NAME, str(secret))


_ENQUEUE_SECONDS = metrics.ENQUEUE_SECONDS.labels(stripe.NAME)


def _answer(status: int, code: str, message: str, *, event_type: str = "unknown", retry: bool = False):
    _delivered(event_type, code).inc()
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
    log.warning("stripe delivery cut off: %s", exc.description)
    return _answer(408, "request_timeout", exc.description)


@blueprint.post("/webhooks/stripe")
def stripe_webhook():
    svc = services()
    settings = svc.settings
    if not settings.stripe_webhook_secrets:
        return _answer(503, "not_configured", "STRIPE_WEBHOOK_SECRET is not set", retry=True)
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
        return _answer(400, "invalid_signature", str(exc))
    _matched(secret).inc()
    try:
        event = stripe.parse_event(body)
    except (InvalidEventError, UnicodeDecodeError) as exc:
        return _answer(400, "invalid_event", f"not a Stripe event: {exc}")
    with log_context(provider=stripe.NAME, event_id=event.id, event_type=event.type):
        started = time.perf_counter()
        try:
            svc.publisher.publish(stripe.NAME, event.id, body)
        except PublishError as exc:
            log.error("could not enqueue: %s", exc)
            return _answer(503, "broker_unavailable", "the queue is unreachable; retry later", event_type=event.type, retry=True)
        _ENQUEUE_SECONDS.observe(time.perf_counter() - started)
    _delivered(event.type, "accepted").inc()
    return {"received": True, "id": event.id}
