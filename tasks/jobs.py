"""Jobs on the ``maintenance`` queue: operator work too long for a request (application/jobs.py)."""

from __future__ import annotations

import logging

from celery import shared_task

from application import jobs
from application.errors import is_transient
from tasks.base import PayhooksTask
from workers.queues import REPLAY_DEAD_LETTERS

log = logging.getLogger("payhooks.jobs")


@shared_task(bind=True, base=PayhooksTask, name=REPLAY_DEAD_LETTERS, public_args=("job_id",))
def replay_dead_letters(self: PayhooksTask, job_id: int) -> dict:
    runtime = self.runtime
    try:
        return jobs.run_dead_letter_replay(runtime.unit, job_id)
    except Exception as exc:
        if is_transient(exc):
            # The job stays running; the retry resumes it at the first item not recorded.
            log.warning("job %d paused: %s; retrying", job_id, exc.__class__.__name__)
            raise self.retry_later(exc) from None
        log.exception("job %d failed", job_id)
        jobs.fail(runtime.db, job_id, f"{exc.__class__.__name__}: {exc}")
        return {"id": job_id, "failed": exc.__class__.__name__}
