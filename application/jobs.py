"""Bulk dead-letter replay as a background job: create it, run it on a worker, read its progress.

``Jobs.replay_dead_letters`` fixes the matching dead letters in a ``jobs`` row,
commits, and only then hands the job to a worker (``enqueue``, injected: the
receiver and the CLI publish the ``replay_dead_letters`` Celery task). The
HTTP request or CLI command that asked returns at once; a worker runs
``run_dead_letter_replay``, which calls ``DeadLetters.replay`` — the same
per-letter operation a single replay uses, one transaction each — and records
every outcome on the row, so ``GET /api/jobs/<id>`` and ``payhooks dlq job``
show how far it got.

A job runs at most once at a time: its worker holds a PostgreSQL advisory lock
for the job (released if the worker dies with its connection). A task
delivered again after a worker died resumes at item ``done``; one whose job is
over does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import text

from application.dlq import DeadLetterNotFoundError, DeadLetters
from application.unit import UnitOfWork
from models import jobs
from models.dead_letters import Filters
from models.enums import JobKind
from models.tables import Job

log = logging.getLogger("payhooks.jobs")


class JobNotFoundError(LookupError):
    pass


class JobNotQueuedError(RuntimeError):
    """The job was recorded but could not be handed to a worker (the broker is unreachable); it is failed."""


class Jobs:
    def __init__(self, unit: UnitOfWork, enqueue: Callable[[int], None]) -> None:
        self.unit = unit
        self.database = unit.database
        self.enqueue = enqueue

    def replay_dead_letters(self, filters: Filters, params: dict, actor: str) -> dict:
        """Record a replay of every dead letter matching `filters` and hand it to a worker."""
        ids = DeadLetters(self.unit).matching(filters)
        with self.database.transaction() as session:
            job = jobs.create(session, JobKind.DEAD_LETTER_REPLAY, ids, params=params, requested_by=actor)
            job_id, pending = job.id, bool(ids)
        if pending:  # after the commit, so the worker finds the row
            try:
                self.enqueue(job_id)
            except Exception as exc:
                with self.database.transaction() as session:
                    jobs.finish(session, job_id, error=f"could not be queued: {exc.__class__.__name__}")
                raise JobNotQueuedError(f"job {job_id} could not be queued ({exc.__class__.__name__})") from exc
        log.info("job %d: replay of %d dead letters requested by %s", job_id, len(ids), actor)
        return self.get(job_id)

    def get(self, job_id: int) -> dict:
        with self.database.transaction() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFoundError(f"no job {job_id}")
            return view(job)


def run_dead_letter_replay(unit: UnitOfWork, job_id: int) -> dict:
    """Replay the job's dead letters from where it stands; return its final view.

    Exceptions the caller may retry (the database went away) leave the job
    running, to resume from ``done``; anything else fails the job with the reason.
    """
    letters, database = DeadLetters(unit), unit.database
    # A connection of its own, outside any transaction, holds the lock for the whole run.
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        key = f"payhooks-job:{job_id}"
        if not lock.scalar(text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"), {"k": key}):
            log.info("job %d is being run by another worker", job_id)
            return {"id": job_id, "skipped": "running elsewhere"}
        try:
            with database.transaction() as session:
                job = jobs.claim(session, job_id)
                if job is None:
                    return {"id": job_id, "skipped": "not found or already over"}
                items, start, actor = list(job.items), job.done, job.requested_by
            for dead_letter_id in items[start:]:
                try:
                    outcome = letters.replay(dead_letter_id, actor).outcome
                except DeadLetterNotFoundError:
                    outcome = "not_found"
                with database.transaction() as session:
                    jobs.record(session, job_id, outcome)
            with database.transaction() as session:
                return view(jobs.finish(session, job_id))
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": key})


def fail(database, job_id: int, reason: str) -> None:
    with database.transaction() as session:
        jobs.finish(session, job_id, error=reason)


def _time(value) -> str | None:
    return value.isoformat() if value else None


def view(job: Job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "total": job.total,
        "done": job.done,
        "outcomes": dict(job.outcomes),
        "params": dict(job.params),
        "error": job.error,
        "requested_by": job.requested_by,
        "created_at": _time(job.created_at),
        "updated_at": _time(job.updated_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
    }
