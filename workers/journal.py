"""The accepted-events journal: no 2xx without a way back to the event.

kombu's Redis transport takes a message with ``BRPOP`` — which removes it —
and only then records it as unacknowledged. A worker killed between the two
(SIGKILL, OOM, a lost machine) loses that message for good; the test suite's
SIGKILL test saw it happen to 1 message in 400. So the receiver also writes
each accepted event to this journal, in the same ``MULTI``/``EXEC`` as the
``LPUSH`` (one round trip, all or nothing), and a worker forgets the entry once
the event is durably in PostgreSQL (applied, ignored, held or dead-lettered).

``reap`` runs on a schedule: entries older than a grace period whose event the
inbox still lacks are published again; entries whose event the inbox has are
forgotten. A republished event that was merely slow is recognized by the inbox
as a duplicate, so the grace period trades duplicate work under a long backlog
against how soon a lost event comes back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

import redis

JOURNAL = "payhooks:journal"  # hash: "<provider>:<event id>" -> [provider, event id, body, received_at]
DUE = "payhooks:journal:due"  # sorted set: same key, scored by when it was (re)published


def key(provider: str, event_id: str) -> str:
    return f"{provider}:{event_id}"


def record(pipe: redis.client.Pipeline, provider: str, event_id: str, body: str, received_at: float) -> None:
    """Add the journal writes to the publisher's MULTI."""
    entry = key(provider, event_id)
    pipe.hset(JOURNAL, entry, json.dumps([provider, event_id, body, received_at]))
    pipe.zadd(DUE, {entry: received_at})


def forget(client: redis.Redis, provider: str, event_id: str) -> None:
    """The event is durable in PostgreSQL: the journal no longer needs it."""
    entry = key(provider, event_id)
    pipe = client.pipeline(transaction=True)
    pipe.hdel(JOURNAL, entry)
    pipe.zrem(DUE, entry)
    pipe.execute()


def reap(
    client: redis.Redis,
    known: Callable[[list[tuple[str, str]]], set[tuple[str, str]]],
    republish: Callable[[str, str, str, float], None],
    *,
    grace_seconds: float,
    batch_size: int = 500,
    now: float | None = None,
) -> dict[str, int]:
    """Forget journal entries the inbox has; publish again those it lacks after the grace period."""
    now = time.time() if now is None else now
    counts = {"forgotten": 0, "republished": 0}
    while True:
        entries = client.zrangebyscore(DUE, "-inf", now - grace_seconds, start=0, num=batch_size)
        if not entries:
            return counts
        raw = client.hmget(JOURNAL, entries)
        pending = [json.loads(item) for item in raw if item is not None]
        have = known([(provider, event_id) for provider, event_id, _, _ in pending])
        for entry, item in zip(entries, raw, strict=True):
            if item is None:  # forgotten meanwhile
                client.zrem(DUE, entry)
                continue
            provider, event_id, body, received_at = json.loads(item)
            if (provider, event_id) in have:
                forget(client, provider, event_id)
                counts["forgotten"] += 1
            else:
                republish(provider, event_id, body, received_at)
                client.zadd(DUE, {entry: now})
                counts["republished"] += 1
        if len(entries) < batch_size:
            return counts


def size(client: redis.Redis) -> int:
    return client.zcard(DUE)


def entries(client: redis.Redis) -> Iterable[str]:
    return (entry.decode() for entry in client.zrange(DUE, 0, -1))
