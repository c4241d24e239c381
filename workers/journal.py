"""The accepted-events journal: no 2xx without a way back to the event.

kombu's Redis transport takes a message with ``BRPOP`` — which removes it —
and only then records it as unacknowledged. A worker killed between the two
(SIGKILL, OOM, a lost machine) loses that message for good; the test suite's
SIGKILL test saw it happen to 1 message in 400. So the receiver also writes
each accepted event to this journal in the same atomic script as the
``LPUSH`` (one command, all or nothing), and a worker forgets the entry once
the event is durably in PostgreSQL (applied, ignored, held or dead-lettered).

``reap`` runs on a schedule: entries older than a grace period whose event the
inbox still lacks are published again; entries whose event the inbox has are
forgotten. A republished event that was merely slow is recognized by the inbox
as a duplicate, so the grace period trades duplicate work under a long backlog
against how soon a lost event comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import redis

JOURNAL = "payhooks:journal"  # hash: "<provider>:<event id>" -> the Celery message published for it
DUE = "payhooks:journal:due"  # sorted set: same key, scored by when it was (re)published

# The message and its journal entry in one command: atomic, one round trip, one reply
# (a MULTI pipeline costs the receiver half as much again in client time).
PUBLISH_SCRIPT = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return 1
"""


def key(provider: str, event_id: str) -> str:
    return f"{provider}:{event_id}"


def publish_keys(queue: str) -> list[str]:
    return [queue, JOURNAL, DUE]


def publish_args(provider: str, event_id: str, message: bytes, received_at: float) -> list:
    return [message, key(provider, event_id), received_at]


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
    republish: Callable[[bytes], None],
    *,
    grace_seconds: float,
    batch_size: int = 500,
    now: float | None = None,
) -> dict[str, int]:
    """Forget journal entries the inbox has; publish again those it lacks after the grace period."""
    now = time.time() if now is None else now
    counts = {"forgotten": 0, "republished": 0}
    while True:
        entries = [e.decode() for e in client.zrangebyscore(DUE, "-inf", now - grace_seconds, start=0, num=batch_size)]
        if not entries:
            return counts
        messages = client.hmget(JOURNAL, entries)
        have = known([tuple(entry.split(":", 1)) for entry in entries])
        for entry, message in zip(entries, messages, strict=True):
            provider, event_id = entry.split(":", 1)
            if message is None or (provider, event_id) in have:
                forget(client, provider, event_id)
                counts["forgotten"] += message is not None
            else:
                republish(message)
                client.zadd(DUE, {entry: now})
                counts["republished"] += 1
        if len(entries) < batch_size:
            return counts


def size(client: redis.Redis) -> int:
    return client.zcard(DUE)


def entries(client: redis.Redis) -> Iterable[str]:
    return (entry.decode() for entry in client.zrange(DUE, 0, -1))
