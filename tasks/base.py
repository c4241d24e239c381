"""The base of every payhooks task: its runtime (settings, database) and the retry policy."""

from __future__ import annotations

from celery import Task

from workers.retry import backoff_seconds
from workers.runtime import Runtime


class PayhooksTask(Task):
    """Tasks that run on one database transaction per unit of work and retry transient failures."""

    @property
    def runtime(self) -> Runtime:
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
        # Past the configured number of attempts (when even the dead letter could
        # not be written) the event keeps its place in the broker at the longest
        # countdown: it is never dropped while the database is unreachable.
        if attempt >= settings.retry_max_attempts:
            countdown = settings.retry_backoff_max_seconds
        return self.retry(exc=exc, countdown=countdown, max_retries=None)
