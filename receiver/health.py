"""Liveness, readiness and metrics.

``/metrics`` is open unless METRICS_TOKEN is set; then it wants
``Authorization: Bearer $METRICS_TOKEN`` (Prometheus: ``authorization:
{credentials_file: …}`` in the scrape config), because queue depths and
counts by event type say more about a business than a health check should.
"""

from __future__ import annotations

from flask import Blueprint, Response
from sqlalchemy import func, select

from infra import metrics
from models import outbound
from models.enums import DeadLetterStatus, EventStatus, PaymentStatus
from models.tables import DeadLetter, OutboxMessage, Payment, WebhookEvent
from receiver.auth import bearer_matches, unauthorized
from receiver.services import services
from transport import queue
from workers.queues import MAINTENANCE_QUEUE, OUTBOUND_QUEUE, WEBHOOKS_QUEUE

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    return {"status": "ok"}


@blueprint.get("/readyz")
def readyz():
    svc = services()
    checks = {
        "redis": _check(lambda: svc.publisher.ping()),
        "database": _check(lambda: svc.database.ping()),
    }
    ready = all(value == "ok" for value in checks.values())
    if ready:
        return {"ready": True, "checks": checks}
    failing = ", ".join(name for name, value in checks.items() if value != "ok")
    return {"ready": False, "checks": checks, "message": f"not ready: {failing}"}, 503


def _check(probe) -> str:
    try:
        probe()
    except Exception as exc:  # any failure means not ready; the class says which kind
        return f"unavailable ({exc.__class__.__name__})"
    return "ok"


@blueprint.get("/metrics")
def prometheus_metrics():
    svc = services()
    token = svc.settings.reveal("metrics_token")
    if token and not bearer_matches(token):
        return unauthorized("METRICS_TOKEN", "payhooks metrics")
    body, content_type = metrics.render(_state_collector(svc), svc.settings.metrics_dir)
    return Response(body, content_type=content_type)


def _state_collector(svc) -> metrics.StateCollector:
    def queue_depth():
        client = svc.publisher.client
        depths = {(name,): float(client.llen(name)) for name in (WEBHOOKS_QUEUE, MAINTENANCE_QUEUE, OUTBOUND_QUEUE)}
        depths[("events",)] = float(queue.depth(client))
        depths[("claimed",)] = float(queue.claimed(client))
        depths[("parked",)] = float(queue.parked(client))
        return depths

    def count(statement):
        def probe():
            with svc.database.transaction() as session:
                return {(): float(session.scalar(statement))}

        return probe

    def deliveries():
        with svc.database.transaction() as session:
            by_status = outbound.counts(session)
        return {(status,): float(count) for status, count in by_status.items()}

    def oldest_pending():
        with svc.database.transaction() as session:
            return {(): outbound.oldest_pending_age(session)}

    return metrics.StateCollector(
        {
            "payhooks_outbound_deliveries": (
                "Outbound deliveries (webhooks, e-mail receipts, hooks) pending or failed; "
                "payhooks_outbound_attempts_total counts the delivered",
                deliveries,
                ["status"],
            ),
            "payhooks_outbound_oldest_pending_age_seconds": (
                "Age of the oldest outbox message with a delivery still pending (0 if none)",
                oldest_pending,
                [],
            ),
            "payhooks_outbox_undispatched": (
                "Outbox messages not yet fanned out to their consumers",
                count(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.dispatched_at.is_(None))),
                [],
            ),
            "payhooks_queue_depth": ("Events and messages waiting in each queue (events: provider deliveries; claimed: taken by a consumer, not yet committed; parked: could be neither applied nor dead-lettered, see OPERATIONS.md)", queue_depth, ["queue"]),
            "payhooks_dead_letters_open": (
                "Dead letters waiting for an operator",
                count(select(func.count()).select_from(DeadLetter).where(DeadLetter.status == DeadLetterStatus.OPEN)),
                [],
            ),
            "payhooks_payments_pending": (
                "Payments pending or processing (the sweep's backlog)",
                count(select(func.count()).select_from(Payment).where(Payment.status.in_([PaymentStatus.PENDING, PaymentStatus.PROCESSING]))),
                [],
            ),
            "payhooks_events_held": (
                "Events waiting for one they depend on",
                count(select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == EventStatus.HELD)),
                [],
            ),
        }
    )
