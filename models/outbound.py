"""Outbound deliveries: one row per outbox message and consumer, leased while tried, logged per attempt.

A consumer is ``webhook:<endpoint id>``, ``email`` or ``hook:<name>``. The
dispatcher turns each undispatched outbox message into its deliveries and
marks it dispatched, in one transaction (``FOR UPDATE SKIP LOCKED``: two
dispatchers never fan out the same message; the unique (message, consumer)
pair makes a second fan-out a no-op anyway). A worker leases a due delivery
before trying it — a conditional UPDATE, so only one worker holds it — and
records the attempt afterwards, outside any transaction held across the
network call. A worker killed mid-attempt leaves the lease to run out; the
delivery is then due again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
EMAIL = "email"


def webhook_consumer(endpoint_id: int) -> str:
    return f"webhook:{endpoint_id}"


def hook_consumer(name: str) -> str:
    return f"hook:{name}"


@dataclass(frozen=True)
class Announced:
    """An outbox message, as the dispatcher and the consumers see it."""

    id: int  # the outbox row: its order of writing
    message_id: str
    type: str
    user_id: str | None
    data: dict
    created_at: datetime


@dataclass(frozen=True)
class Leased:
    """A delivery this worker holds until ``lease_until``: try it, then ``finish`` it."""

    id: int
    consumer: str
    endpoint_id: int | None
    attempt: int
    give_up_at: datetime
    message: Announced


_UNDISPATCHED = text(
    """
    SELECT id, message_id, type, user_id, data, created_at FROM outbox_messages
    WHERE dispatched_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    """
)


def undispatched(session: Session, limit: int) -> list[Announced]:
    """Outbox messages not fanned out yet, oldest first, locked against other dispatchers."""
    return [Announced(*row) for row in session.execute(_UNDISPATCHED, {"limit": limit})]


_CREATE = text(
    """
    INSERT INTO outbound_deliveries (outbox_id, consumer, endpoint_id, give_up_at)
    SELECT o, c, e, now() + make_interval(secs => :window)
    FROM unnest(CAST(:outbox_ids AS bigint[]), CAST(:consumers AS text[]), CAST(:endpoints AS bigint[]))
         WITH ORDINALITY AS r(o, c, e, n)
    ORDER BY n
    ON CONFLICT (outbox_id, consumer) DO NOTHING
    RETURNING id
    """
)


def create(session: Session, rows: Sequence[tuple[int, str, int | None]], window: timedelta) -> list[int]:
    """Deliveries for (outbox id, consumer, endpoint id), in the order given; the ids of those new."""
    if not rows:
        return []
    ids = session.scalars(
        _CREATE,
        {
            "outbox_ids": [r[0] for r in rows],
            "consumers": [r[1] for r in rows],
            "endpoints": [r[2] for r in rows],
            "window": window.total_seconds(),
        },
    )
    return sorted(ids)


def mark_dispatched(session: Session, outbox_ids: Sequence[int]) -> None:
    if outbox_ids:
        session.execute(
            text("UPDATE outbox_messages SET dispatched_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": list(outbox_ids)},
        )


_LEASE = text(
    """
    UPDATE outbound_deliveries d
    SET lease_until = now() + make_interval(secs => :lease), attempts = d.attempts + 1
    FROM outbox_messages m
    WHERE d.id = ANY(CAST(:ids AS bigint[])) AND m.id = d.outbox_id AND d.status = 'pending'
      AND d.next_attempt_at <= now() AND (d.lease_until IS NULL OR d.lease_until < now())
    RETURNING d.id, d.consumer, d.endpoint_id, d.attempts, d.give_up_at,
              m.id, m.message_id, m.type, m.user_id, m.data, m.created_at
    """
)


def lease(session: Session, delivery_ids: Sequence[int], lease_seconds: float) -> list[Leased]:
    """Take the due ones of these deliveries for ``lease_seconds``, in outbox order; not those done or held by another worker."""
    rows = session.execute(_LEASE, {"ids": list(delivery_ids), "lease": lease_seconds})
    return sorted((Leased(*row[:5], Announced(*row[5:])) for row in rows), key=lambda leased: leased.message.id)


_FINISH = text(
    """
    UPDATE outbound_deliveries
    SET status = CAST(:status AS text), lease_until = NULL, last_error = :error,
        next_attempt_at = COALESCE(now() + make_interval(secs => CAST(:delay AS double precision)), next_attempt_at),
        delivered_at = CASE WHEN CAST(:status AS text) = 'delivered' THEN now() END
    WHERE id = :id
    """
)

_LOG = text(
    """
    INSERT INTO outbound_attempts (delivery_id, attempt, outcome, status_code, latency_ms, error)
    VALUES (:id, :attempt, :outcome, :status_code, :latency_ms, :error)
    """
)


@dataclass(frozen=True)
class Finished:
    """An attempt, and what it leaves its delivery as (pending again ``retry_in`` seconds from now)."""

    leased: Leased
    outcome: str
    status: str
    status_code: int | None
    latency_ms: int
    error: str | None
    retry_in: float | None = None


def finish(session: Session, finished: Sequence[Finished]) -> None:
    """Record attempts in the log and their deliveries' new state."""
    if not finished:
        return
    session.execute(
        _FINISH, [{"id": f.leased.id, "status": f.status, "error": f.error, "delay": f.retry_in} for f in finished]
    )
    session.execute(
        _LOG,
        [{"id": f.leased.id, "attempt": f.leased.attempt, "outcome": f.outcome, "status_code": f.status_code,
          "latency_ms": f.latency_ms, "error": f.error} for f in finished],
    )


_DUE = text(
    """
    SELECT id FROM outbound_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now() - make_interval(secs => :late)
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY next_attempt_at LIMIT :limit
    """
)


def due(session: Session, *, late: float, limit: int) -> list[int]:
    """Deliveries due for at least ``late`` seconds and not leased: their messages were lost or never sent."""
    return list(session.scalars(_DUE, {"late": late, "limit": limit}))


_REPLAYABLE = text(
    """
    SELECT d.id FROM outbound_deliveries d JOIN outbox_messages m ON m.id = d.outbox_id
    WHERE d.endpoint_id = :endpoint
      AND (CAST(:message_id AS text) IS NULL OR m.message_id = :message_id)
      AND (CAST(:message_id AS text) IS NOT NULL OR d.status = 'failed')
      AND (CAST(:since AS timestamptz) IS NULL OR m.created_at >= :since)
      AND (CAST(:until AS timestamptz) IS NULL OR m.created_at < :until)
    ORDER BY m.id
    """
)


def replayable(
    session: Session, endpoint_id: int, *, message_id: str | None, since: datetime | None, until: datetime | None
) -> list[int]:
    """An endpoint's failed deliveries of messages written in [since, until), or its delivery of one message."""
    return list(
        session.scalars(_REPLAYABLE, {"endpoint": endpoint_id, "message_id": message_id, "since": since, "until": until})
    )


def reopen(session: Session, delivery_id: int, window: timedelta) -> bool:
    """Make a delivery pending and due now, with a fresh retry window (a replay).

    Its outbox message is held ``FOR SHARE`` first, so retention
    (models/retention.py, ``SKIP LOCKED``) cannot delete it under the replay;
    a message retention already holds is deleted first and the replay finds nothing.
    """
    result = session.execute(
        text(
            """
            WITH message AS (
                SELECT m.id FROM outbox_messages m JOIN outbound_deliveries d ON d.outbox_id = m.id
                WHERE d.id = :id FOR SHARE OF m
            )
            UPDATE outbound_deliveries
            SET status = 'pending', next_attempt_at = now(), lease_until = NULL, delivered_at = NULL,
                give_up_at = now() + make_interval(secs => :window)
            WHERE id = :id AND outbox_id IN (SELECT id FROM message)
              AND (status <> 'pending' OR lease_until IS NULL OR lease_until < now())
            """
        ),
        {"id": delivery_id, "window": window.total_seconds()},
    )
    return result.rowcount == 1


def counts(session: Session) -> dict[str, int]:
    """Deliveries pending and failed, each read off its partial index.

    Not delivered ones: those are most of the table (RETENTION_OUTBOUND_DAYS of
    them), and counting them on every scrape would read it all;
    ``payhooks_outbound_attempts_total{outcome="delivered"}`` counts them as they happen.
    """
    row = session.execute(
        text(
            """
            SELECT (SELECT count(*) FROM outbound_deliveries WHERE status = 'pending'),
                   (SELECT count(*) FROM outbound_deliveries WHERE status = 'failed')
            """
        )
    ).one()
    return {PENDING: row[0], FAILED: row[1]}


def oldest_pending_age(session: Session) -> float:
    """Age in seconds of the oldest outbox message with a delivery still pending (0 if none)."""
    oldest = session.scalar(
        text(
            """
            SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(m.created_at)), 0)
            FROM outbound_deliveries d JOIN outbox_messages m ON m.id = d.outbox_id
            WHERE d.status = 'pending'
            """
        )
    )
    return float(oldest or 0)
