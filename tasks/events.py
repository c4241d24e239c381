"""``process_event``: one provider event, one transaction (workers/handling.py).

Failures by kind: a permanent one is dead-lettered by handle_event itself; a
transient one rolls the whole transaction back (nothing was written, so the
retry starts clean) and retries with capped, jittered backoff up to
RETRY_MAX_ATTEMPTS, then is dead-lettered; an unexpected exception (a bug) is
dead-lettered at once with its traceback. A dead letter keeps the raw body.
"""

from __future__ import annotations

import logging
import time
import traceback

import redis
from celery import shared_task

from models import inbox
from models.enums import ErrorClass, EventStatus
from providers.changes import InvalidEventError, ProviderEvent
from tasks.base import PayhooksTask
from tasks.errors import is_transient
from workers import journal, metrics
from workers.handling import PROVIDERS, EventResult, claim, fail, handle_event
from workers.logs import log_context
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
    with log_context(task_id=self.request.id, provider=provider, event_id=event.id, event_type=event.type):
        result, posted = _process(self, event, source)
        _observe(event, source, result, posted, received_at)
        _forget(self, event)
    return result.status


def _forget(task: PayhooksTask, event: ProviderEvent) -> None:
    """The event is durable in PostgreSQL now; a failure here only leaves work for the reaper."""
    try:
        journal.forget(task.runtime.publisher.client, event.provider, event.id)
    except redis.RedisError as exc:
        log.warning("could not clear the journal entry: %s", exc.__class__.__name__)


def _process(task: PayhooksTask, event: ProviderEvent, source: str) -> tuple[EventResult, list]:
    started = time.monotonic()
    posted: list = []
    try:
        with task.runtime.db.transaction() as session:
            result = handle_event(session, event, task.runtime.rules, source)
            posted = session.info.pop("ledger_posted", [])
    except Exception as exc:
        if is_transient(exc) and task.request.retries < task.runtime.settings.retry_max_attempts:
            log.warning("transient failure (attempt %d): %s", task.request.retries + 1, exc.__class__.__name__)
            metrics.RETRIES.labels(event.provider, event.type).inc()
            raise task.retry_later(exc) from exc
        # Out of retries, or a bug rather than bad data: dead-letter the raw body
        # rather than lose the event when Celery acknowledges the failed message.
        error_class = ErrorClass.TRANSIENT if is_transient(exc) else ErrorClass.UNEXPECTED
        if error_class == ErrorClass.UNEXPECTED:
            log.exception("unexpected failure")
        result = dead_letter(task, event, source, error_class, exc)
        if result.status == EventStatus.FAILED:
            metrics.DEAD_LETTERS.labels(event.provider, event.type, error_class).inc()
    log.info(
        "%s%s in %.1f ms%s",
        result.status,
        " (duplicate)" if result.duplicate else "",
        (time.monotonic() - started) * 1000,
        f": {result.error}" if result.error else "",
        extra={"outcome": result.status, "payment_id": result.payment_id, "credits": [[k, a] for k, a in posted] or None},
    )
    return result, posted


def _observe(event: ProviderEvent, source: str, result: EventResult, posted: list, received_at: float | None) -> None:
    metrics.observe_event(event.provider, event.type, source, result.status, result.duplicate, posted)
    if result.status == EventStatus.FAILED and not result.duplicate and result.error_class == ErrorClass.PERMANENT:
        metrics.DEAD_LETTERS.labels(event.provider, event.type, ErrorClass.PERMANENT).inc()
    if result.status == EventStatus.PROCESSED and not result.duplicate:
        now = time.time()
        if event.created:
            metrics.LAG.labels("created").observe(max(0.0, now - event.created.timestamp()))
        if received_at:
            metrics.LAG.labels("received").observe(max(0.0, now - received_at))


def dead_letter(task: PayhooksTask, event: ProviderEvent, source: str, error_class: ErrorClass, exc: BaseException) -> EventResult:
    """Dead-letter an event in a transaction of its own; if even that cannot be written, keep retrying."""
    message = f"{exc.__class__.__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))
    try:
        with task.runtime.db.transaction() as session:
            row = claim(session, event, source)
            if inbox.is_settled(row):  # another delivery applied it meanwhile
                return EventResult(event.id, EventStatus(row.status), duplicate=True)
            return fail(session, row, error_class, message, trace)
    except Exception as again:
        if is_transient(again):
            raise task.retry_later(again) from again
        raise
