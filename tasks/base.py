"""The base of every payhooks task: its runtime (settings, the unit of work) and the retry policy.

Events are applied by the unit of work (application/unit.py), which owns the
transaction; a task hands it events and decides what a transient failure
means for the message: try again later, for as long as it lasts.
"""

from __future__ import annotations

from celery import Task

from workers.retry import backoff_seconds
from workers.runtime import Runtime


class PayhooksTask(Task):
    # ``retry(max_retries=None)`` does not mean "no limit" in Celery: it falls back
    # to this attribute, 3 by default. None here is what makes retries unlimited.
    max_retries = None

    @property
    def runtime(self) -> Runtime:
        return self.app.payhooks

    def retry_later(self, exc: BaseException, **options):
        """Retry a transient failure with capped, jittered backoff (options go to the new message)."""
        settings = self.runtime.settings
        countdown = backoff_seconds(
            self.request.retries, base=settings.retry_backoff_base_seconds, cap=settings.retry_backoff_max_seconds
        )
        return self.retry(exc=exc, countdown=countdown, **options)
