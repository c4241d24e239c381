"""Jobs: operator work too long for a request, with progress a client can poll.

The rules that change a job row. A job's items are fixed at creation; a worker
claims the job, records each item's outcome as it goes (``done`` counts them)
and finishes it. Functions flush, never commit: the caller's transaction owns them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func
from sqlalchemy.orm import Session

from models.enums import JobKind, JobStatus
from models.tables import Job

ERROR_LIMIT = 1000


def create(session: Session, kind: JobKind, items: list[int], *, params: dict, requested_by: str) -> Job:
    """A new job; one with nothing to do is finished at once."""
    job = Job(
        kind=kind,
        status=JobStatus.QUEUED if items else JobStatus.FINISHED,
        params=params,
        items=list(items),
        total=len(items),
        done=0,
        outcomes={},
        requested_by=requested_by,
        finished_at=None if items else func.now(),  # the transaction's time, as created_at
    )
    session.add(job)
    session.flush()
    return job


def claim(session: Session, job_id: int) -> Job | None:
    """Lock the job and mark it running, unless it is over (then None: a redelivered task's no-op)."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None or job.status in (JobStatus.FINISHED, JobStatus.FAILED):
        return None
    job.status = JobStatus.RUNNING
    job.started_at = job.started_at or datetime.now(UTC)
    return job


def record(session: Session, job_id: int, outcome: str) -> Job:
    """One more item done, with its outcome counted."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    job.outcomes = {**job.outcomes, outcome: job.outcomes.get(outcome, 0) + 1}
    job.done += 1
    return job


def finish(session: Session, job_id: int, *, error: str | None = None) -> Job:
    """Finished (every item tried), or failed with the reason it stopped."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    job.status = JobStatus.FAILED if error else JobStatus.FINISHED
    job.error = error[:ERROR_LIMIT] if error else None
    job.finished_at = datetime.now(UTC)
    return job
