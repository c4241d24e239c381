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

from celery import shared_task

from models import inbox
from models.enums import ErrorClass, EventStatus
from providers.changes import InvalidEventError, ProviderEvent
from tasks.base import PayhooksTask
from tasks.errors import is_transient
from workers.handling import PROVIDERS, EventResult, claim, fail, handle_event
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
        if is_transient(exc) and self.request.retries < self.runtime.settings.retry_max_attempts:
            log.warning(
                "transient failure on %s %s (attempt %d): %s",
                provider, event.id, self.request.retries + 1, exc.__class__.__name__,
            )
            raise self.retry_later(exc) from exc
        # Out of retries, or a bug rather than bad data: dead-letter the raw body
        # rather than lose the event when Celery acknowledges the failed message.
        error_class = ErrorClass.TRANSIENT if is_transient(exc) else ErrorClass.UNEXPECTED
        if error_class == ErrorClass.UNEXPECTED:
            log.exception("unexpected failure on %s %s", provider, event.id)
        result = dead_letter(self, event, source, error_class, exc)
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
