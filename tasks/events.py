"""``process_event``: one provider event, one transaction.

In that transaction: claim the inbox row (insert or find, then lock it), stop if
the event was already settled, translate the event, apply the change inside a
savepoint, and settle the inbox row. A permanent error rolls back to the
savepoint and settles the row as failed with the reason, so a bad payload is
recorded once instead of crash-looping. A transient error rolls the whole
transaction back and retries with backoff; nothing was written, so the retry
starts clean.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from celery import Task, shared_task
from sqlalchemy.orm import Session

from models import inbox
from models.enums import EventStatus
from models.lifecycle import TransitionError
from providers import stripe
from providers.changes import InvalidEventError, ProviderEvent
from tasks.apply import apply_change
from tasks.errors import PERMANENT, is_transient
from workers.queues import PROCESS_EVENT
from workers.retry import backoff_seconds

log = logging.getLogger("payhooks.tasks")

PROVIDERS = {stripe.NAME: stripe}


@dataclass(frozen=True)
class EventResult:
    event_id: str
    status: EventStatus
    duplicate: bool = False
    error: str | None = None


def claim(session: Session, event: ProviderEvent, source: str):
    """The event's inbox row, inserted if new, locked for this transaction."""
    return inbox.claim_event(
        session,
        provider=event.provider,
        provider_event_id=event.id,
        event_type=event.type,
        payload=event.raw,
        provider_created_at=event.created,
        source=source,
    )


def handle_event(session: Session, event: ProviderEvent, source: str = "webhook") -> EventResult:
    """Record and apply one event inside the caller's transaction; safe to repeat."""
    row = claim(session, event, source)
    if inbox.is_settled(row):
        return EventResult(event.id, EventStatus(row.status), duplicate=True)
    adapter = PROVIDERS[event.provider]
    try:
        with session.begin_nested():
            status = apply_change(session, event, adapter.translate(event))
    except PERMANENT as exc:
        inbox.settle(row, EventStatus.FAILED, str(exc))
        return EventResult(event.id, EventStatus.FAILED, error=str(exc))
    except TransitionError as exc:
        # Recorded, never applied: the table is the authority on what may happen.
        inbox.settle(row, EventStatus.IGNORED, str(exc))
        return EventResult(event.id, EventStatus.IGNORED, error=str(exc))
    inbox.settle(row, status)
    return EventResult(event.id, status)


class EventTask(Task):
    """Base for tasks that own one database transaction per run."""

    @property
    def runtime(self):
        return self.app.payhooks

    def retry_later(self, exc: BaseException):
        """Retry a transient failure with capped, jittered backoff."""
        settings = self.runtime.settings
        attempt = self.request.retries
        countdown = backoff_seconds(
            attempt,
            base=settings.retry_backoff_base_seconds,
            cap=settings.retry_backoff_max_seconds,
        )
        # Past the configured number of attempts the event keeps its place in the
        # broker at the longest countdown: it is never dropped while the database
        # is unreachable.
        if attempt >= settings.retry_max_attempts:
            countdown = settings.retry_backoff_max_seconds
        return self.retry(exc=exc, countdown=countdown, max_retries=None)

    def record_failure(self, event: ProviderEvent, source: str, error: str) -> EventResult:
        try:
            with self.runtime.db.transaction() as session:
                row = claim(session, event, source)
                if not inbox.is_settled(row):
                    inbox.settle(row, EventStatus.FAILED, error)
                return EventResult(event.id, EventStatus(row.status), error=error)
        except Exception as exc:
            if is_transient(exc):
                raise self.retry_later(exc) from exc
            raise


@shared_task(bind=True, base=EventTask, name=PROCESS_EVENT)
def process_event(
    self: EventTask,
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
            result = handle_event(session, event, source)
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
        result = self.record_failure(event, source, f"{exc.__class__.__name__}: {exc}")
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
