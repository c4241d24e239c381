"""``POST /webhooks/<provider>``: verify on the raw bytes, enqueue, answer. Nothing else.

No database on this path: a verified event goes to Redis as it came, and the
answer is 200 only once it is there. Duplicates are enqueued too; the worker's
inbox recognizes them.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, request

from providers import stripe
from providers.changes import InvalidEventError, SignatureError
from receiver.errors import error
from receiver.services import services
from workers.publish import PublishError

log = logging.getLogger("payhooks.receiver")
blueprint = Blueprint("webhooks", __name__)

RETRY_AFTER_SECONDS = 5


@blueprint.post("/webhooks/stripe")
def stripe_webhook():
    svc = services()
    settings = svc.settings
    if not settings.stripe_webhook_secrets:
        # Not the sender's fault: ask it to come back rather than drop the event.
        response = error(503, "not_configured", "STRIPE_WEBHOOK_SECRET is not set")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    body = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH, before reading it all
    try:
        stripe.verify_signature(
            body,
            request.headers.get(stripe.SIGNATURE_HEADER),
            settings.stripe_webhook_secrets,
            tolerance=settings.webhook_tolerance_seconds,
            now=time.time(),
        )
    except SignatureError as exc:
        log.warning("rejected stripe delivery: %s", exc)
        return error(400, "invalid_signature", str(exc))
    try:
        event = stripe.parse_event(body)
    except (InvalidEventError, UnicodeDecodeError) as exc:
        return error(400, "invalid_event", f"not a Stripe event: {exc}")
    try:
        svc.publisher.publish(stripe.NAME, event.id, event.raw)
    except PublishError as exc:
        log.error("could not enqueue stripe event %s: %s", event.id, exc)
        response = error(503, "broker_unavailable", "the queue is unreachable; retry later")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return {"received": True, "id": event.id}
