"""``process_event``: one provider event, one transaction (workers/handling.py).

A transient failure rolls the whole transaction back and retries with backoff;
nothing was written, so the retry starts clean. A bug (an unexpected exception)
records the event as failed with its raw body rather than lose it.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task

from models import inbox
from models.enums import EventStatus
from providers.changes import InvalidEventError, ProviderEvent
from tasks.base import PayhooksTask
from tasks.errors import is_transient
from workers.handling import PROVIDERS, EventResult, claim, handle_event
from workers.queues import PROCESS_EVENT

log = logging.getLogger("payhooks.tasks")


@shared_task(bind=True, base=PayhooksTask, name=PROCESS_EVENT)
def process_event(
    self: PayhooksTask,
    provider: str,
    body: str,
    received_at: float | None = None,
    source: str = "webhook",
) -> str:
    adapter = PROVIDERS.get(provider)
    if adapter is None:
        log.error("dropping event for unknown provider %r (task %s)", provider, self.request.id)
        return "unknown-provider"
    try:
        event = adapter.parse_event(body)
    except InvalidEventError as exc:
        # The receiver checks this before enqueueing; only a hand-made message lands here.
        log.error("dropping unparseable %s event (task %s): %s", provider, self.request.id, exc)
        return "invalid"
    started = time.monotonic()
    try:
        with self.runtime.db.transaction() as session:
            result = handle_event(session, event, self.runtime.rules, source)
    except Exception as exc:
        if is_transient(exc):
            log.warning(
                "transient failure on %s %s (attempt %d): %s",
                provider, event.id, self.request.retries + 1, exc.__class__.__name__,
            )
            raise self.retry_later(exc) from exc
        # A bug, not bad data: keep the raw body on a failed inbox row rather than
        # lose the event when Celery acknowledges the failed message.
        log.exception("unexpected failure on %s %s", provider, event.id)
        result = record_failure(self, event, source, f"{exc.__class__.__name__}: {exc}")
    log.info(
        "%s event %s (%s): %s%s in %.1f ms%s",
        provider,
        event.id,
        event.type,
        result.status,
        " (duplicate)" if result.duplicate else "",
        (time.monotonic() - started) * 1000,
        f": {result.error}" if result.error else "",
    )
    return result.status


def record_failure(task: PayhooksTask, event: ProviderEvent, source: str, error: str) -> EventResult:
    try:
        with task.runtime.db.transaction() as session:
            row = claim(session, event, source)
            if not inbox.is_settled(row):
                inbox.settle(row, EventStatus.FAILED, error)
            return EventResult(event.id, EventStatus(row.status), error=error)
    except Exception as exc:
        if is_transient(exc):
            raise task.retry_later(exc) from exc
        raise
