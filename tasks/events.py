"""``process_event``: one provider event as a Celery message, applied by the unit of work.

Provider deliveries reach the workers through the events queue and the batch
consumers (workers/consumer.py), not this task. It remains for messages
queued before that change (an upgrade drains them) and for applying a single
event through Celery. A transient failure is retried with capped backoff for
as long as it lasts; anything else is settled by the unit of work itself
(dead-lettered with its raw body).
"""

from __future__ import annotations

import logging

from celery import shared_task

from application.batch import Incoming
from application.errors import is_transient
from providers import registry
from providers.changes import InvalidEventError
from providers.registry import UnknownProviderError
from tasks.base import PayhooksTask
from workers.queues import PROCESS_EVENT

log = logging.getLogger("payhooks.tasks")


# Celery shows these in its log lines; the body only as <str> (tasks/base.py).
@shared_task(bind=True, base=PayhooksTask, name=PROCESS_EVENT, public_args=("provider", "received_at", "source"))
def process_event(
    self: PayhooksTask,
    provider: str,
    body: str,
    received_at: float | None = None,
    source: str = "webhook",
) -> str:
    try:
        event = registry.get(provider).parse_event(body)
    except (UnknownProviderError, InvalidEventError, UnicodeDecodeError) as exc:
        # The receiver checks this before enqueueing; only a hand-made message lands here. Keep it.
        self.runtime.unit.reject(str(provider)[:32], "", body.encode() if isinstance(body, str) else bytes(body), str(exc))
        return "rejected"
    try:
        result = self.runtime.unit.apply_one(Incoming(event, source, received_at))
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning(
            "transient failure of %s (attempt %d): %s", event.id, self.request.retries + 1, exc.__class__.__name__,
            extra={"task_id": self.request.id, "event_id": event.id},
        )
        raise self.retry_later(exc) from exc
    return result.status
