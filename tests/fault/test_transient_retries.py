"""Transient failures on a real worker: retried with backoff, applied once; a conflict dead-lettered past the limit.

The workers here are started by this module on Redis databases of their own
(one with many retries, one with a single retry shared by the last two tests),
so their retry settings apply and the shared test worker takes none of their
events.

The failures are real: PostgreSQL closed to connections (an outage: retried
without limit), or a lock the worker's transaction cannot get within its
``lock_timeout`` (SQLSTATE 55P03: a conflict, counted against the limit).
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import psycopg
import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from application.dlq import DeadLetters
from application.unit import UnitOfWork
from models.dead_letters import Filters
from models.enums import DeadLetterStatus, ErrorClass, EventStatus
from models.rules import Rules
from models.tables import CreditAccount, CreditLedger, DeadLetter, WebhookEvent
from tests.support import processes
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode
from transport import queue

PATIENT_DB, IMPATIENT_DB = 3, 4


@contextmanager
def isolated_redis(process_env: dict[str, str], test_services, db: int):
    url = test_services.redis_url.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield {**process_env, "REDIS_URL": url}
    finally:
        client.flushdb()


@contextmanager
def running_worker(env: dict[str, str], name: str):
    worker = processes.celery_worker(env, name=name)
    try:
        yield worker
    finally:
        worker.stop()


def publish(env: dict[str, str], evt: dict) -> None:
    queue.Publisher(queue.connect(env["REDIS_URL"], timeout=1.0), attempts=3).publish("stripe", evt["id"], encode(evt))


def transient_attempts(worker, event_id: str) -> list[int]:
    """The attempt numbers of the transient failures the worker logged for this event."""
    found = []
    for line in list(worker.output):
        if "transient failure" in line and event_id in line:
            match = re.search(r"attempt (\d+)", line)
            found.append(int(match.group(1)) if match else 0)
    return found


def inbox_row(database, event_id: str) -> WebhookEvent | None:
    with database.transaction() as session:
        return session.scalars(
            select(WebhookEvent).where(WebhookEvent.provider_event_id == event_id)
        ).one_or_none()


def ledger(database) -> list[tuple[str, str, int]]:
    with database.transaction() as session:
        return [
            tuple(r)
            for r in session.execute(
                select(CreditLedger.user_id, CreditLedger.kind, CreditLedger.amount)
            )
        ]


def dead_letter_count(database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(DeadLetter))


def balance(database, user: str) -> int:
    with database.transaction() as session:
        account = session.get(CreditAccount, user)
        return account.balance if account else 0


# -- 8. the database goes away: retried, then applied once ------------------------------


def test_transient_database_failure_is_retried_then_applied_once(
    process_env, test_services, database
):
    evt = completed_event(user_id="user_transient_db", credits="12")
    with isolated_redis(process_env, test_services, PATIENT_DB) as isolated_env:
        env = {
            **isolated_env,
            "RETRY_MAX_ATTEMPTS": "50",
            "RETRY_BACKOFF_BASE_SECONDS": "0.1",
            "RETRY_BACKOFF_MAX_SECONDS": "0.5",
        }
        with running_worker(env, "patient") as worker:
            with test_services.refusing_connections(database) as reopen:
                publish(env, evt)
                # More than Celery's default limit of 3 retries: ours (RETRY_MAX_ATTEMPTS) decides.
                wait_until(
                    lambda: len(transient_attempts(worker, evt["id"])) >= 5,
                    30,
                    what="five transient failures logged",
                )
                reopen()
            row = wait_until(
                lambda: (
                    (r := inbox_row(database, evt["id"])) is not None
                    and r.status == EventStatus.PROCESSED
                    and r
                ),
                30,
                what="the retried event to be applied",
            )
            failures = transient_attempts(worker, evt["id"])

    assert failures[:5] == [1, 2, 3, 4, 5], worker.log()
    assert not worker.saw("raised unexpected"), worker.log()
    assert row.attempts == 1  # the failed attempts rolled back whole: nothing of them was kept
    assert (row.dead_letter_id, row.last_error) == (None, None)
    assert ledger(database) == [("user_transient_db", "grant", 12)]
    assert balance(database, "user_transient_db") == 12
    assert dead_letter_count(database) == 0


# -- 9. past the retry limit: dead-lettered, not lost ------------------------------------


def subject_key(evt: dict) -> str:
    """The advisory lock key the worker takes for a checkout (models/keys.py)."""
    return f"stripe:session:{evt['data']['object']['id']}"


@contextmanager
def locked(test_services, key: str, *tables: str):
    """Hold, from another connection, the advisory lock on ``key`` and a SHARE lock on ``tables`` (reads go on)."""
    url = (
        make_url(test_services.database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    with psycopg.connect(url) as conn:  # one transaction, open until the block ends
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
        for table in tables:
            conn.execute(f"LOCK TABLE {table} IN SHARE MODE")
        yield
        conn.rollback()


@pytest.fixture(scope="module")
def impatient(process_env, test_services):
    """A worker shared by the tests below: one retry, short backoff, and a lock given up after 200 ms."""
    with isolated_redis(process_env, test_services, IMPATIENT_DB) as isolated_env:
        env = {
            **isolated_env,
            "RETRY_MAX_ATTEMPTS": "1",
            "RETRY_BACKOFF_BASE_SECONDS": "0.05",
            "RETRY_BACKOFF_MAX_SECONDS": "0.3",
            "DATABASE_LOCK_TIMEOUT_SECONDS": "0.2",
        }
        with running_worker(env, "impatient") as worker:
            yield env, worker


def test_transient_failures_past_the_limit_are_dead_lettered_then_replayed_once(
    impatient, test_services, database
):
    env, worker = impatient
    evt = completed_event(user_id="user_transient_dl", credits="9")
    body = encode(evt).decode()
    with locked(test_services, subject_key(evt)):
        publish(env, evt)
        row = wait_until(
            lambda: (
                (r := inbox_row(database, evt["id"])) is not None
                and r.status == EventStatus.FAILED
                and r
            ),
            30,
            what="the event dead-lettered after its retries",
        )
    failures = transient_attempts(worker, evt["id"])
    assert failures == [1], worker.log()  # one retry (RETRY_MAX_ATTEMPTS=1), then the dead letter

    with database.transaction() as session:
        letter = session.scalars(select(DeadLetter)).one()
    assert row.dead_letter_id == letter.id
    assert letter.provider_event_id == evt["id"]
    assert letter.error_class == ErrorClass.TRANSIENT
    assert (
        letter.error_message.startswith("OperationalError:")
        and "lock" in letter.error_message.lower()
    )
    assert "LockNotAvailable" in letter.traceback
    assert letter.payload == body
    assert (letter.status, letter.attempts) == (DeadLetterStatus.OPEN, 1)
    assert ledger(database) == []

    # The lock is gone: an operator replays it, and it is applied once.
    result = DeadLetters(UnitOfWork(database, Rules())).replay(letter.id, "test:operator")
    assert (result.outcome, result.event_status) == ("replayed", EventStatus.PROCESSED)
    assert ledger(database) == [("user_transient_dl", "grant", 9)]

    # Stripe's own redelivery arrives later: a duplicate, not a second grant.
    publish(env, evt)
    wait_until(
        lambda: inbox_row(database, evt["id"]).attempts >= 3, 20, what="the redelivery handled"
    )

    assert inbox_row(database, evt["id"]).status == EventStatus.PROCESSED
    assert ledger(database) == [("user_transient_dl", "grant", 9)]
    assert balance(database, "user_transient_dl") == 9
    assert DeadLetters(UnitOfWork(database, Rules())).matching(Filters(status=None)) == [letter.id]
    assert DeadLetters(UnitOfWork(database, Rules())).show(letter.id)["status"] == DeadLetterStatus.REPLAYED


def test_when_even_the_dead_letter_cannot_be_written_the_event_keeps_retrying(
    impatient, test_services, database
):
    """Past the limit with dead_letters unwritable too, the event stays claimed and keeps being tried (workers/consumer.py)."""
    env, worker = impatient
    evt = completed_event(user_id="user_transient_keep", credits="4")
    with locked(test_services, subject_key(evt), "dead_letters"):
        publish(env, evt)
        wait_until(
            lambda: sum(f"could not dead-letter {evt['id']}" in line for line in list(worker.output)) >= 3,
            30,
            what="tries past the limit",
        )
        assert inbox_row(database, evt["id"]) is None  # every attempt rolled back
        assert dead_letter_count(database) == 0
    row = wait_until(
        lambda: (
            (r := inbox_row(database, evt["id"])) is not None
            and r.status == EventStatus.PROCESSED
            and r
        ),
        30,
        what="the event applied once the locks are gone",
    )

    assert transient_attempts(worker, evt["id"]) == [
        1
    ]  # the one retry within the limit; the rest are past it
    assert row.dead_letter_id is None
    assert dead_letter_count(database) == 0
    assert ledger(database) == [("user_transient_keep", "grant", 4)]
