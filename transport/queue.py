"""The events queue between the receiver and the workers: Redis lists with reliable fetch.

The receiver pushes each verified event (``publish``: one ``LPUSH``, the answer
is 200 only once it returns). A consumer takes a batch by moving it, in one
atomic script, from the queue onto a list of its own — its claims — so an
event is always on exactly one list: there is no moment at which a consumer
that dies holds an event nobody can see. After the batch has committed, the
consumer drops exactly the items it committed (``ack``), never the whole list:
a claim whose reply was lost (the connection cut after Redis moved the items)
leaves items on the claims list the consumer never saw, and the consumer puts
those back at the head of the queue (``requeue``) before it claims again.

Every consumer registers itself with a heartbeat (a sorted set scored by the
Redis server's clock, so hosts' clocks do not matter). A heartbeat older than
the timeout marks a dead consumer — killed, or its host gone — and any live
consumer moves that consumer's claims back to the head of the queue
(``reclaim``), within seconds, not after a fixed grace on every message. A
slow consumer keeps heartbeating (its heartbeat runs on a thread of its own)
and keeps its claims. A consumer that was merely paused past the timeout has
its claims taken, and may process them as well: the inbox recognizes the
second copy. A deep backlog is never republished: only claims move.

Format of an item: one JSON header line, then the raw body as the provider
sent it (bytes, never re-encoded): ``{"p":"stripe","id":"evt_…","at":…}\\n{…}``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

import orjson
import redis

PREFIX = "payhooks"
EVENTS = f"{PREFIX}:events"  # list: LPUSH by the receiver, taken from the right
CONSUMERS = f"{PREFIX}:consumers"  # sorted set: consumer id -> last heartbeat (server ms)
CLAIMS = f"{PREFIX}:claims:"  # + consumer id: list of the items that consumer holds
PARKED = f"{PREFIX}:events:parked"  # list: items that could be neither applied nor dead-lettered

# Redis server time in ms, for heartbeats every host agrees on.
_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)"

# Move up to ARGV[2] items from the queue onto this consumer's claims, and beat.
_CLAIM = f"""
{_NOW}
redis.call('ZADD', KEYS[3], now, ARGV[1])
local items = {{}}
for i = 1, tonumber(ARGV[2]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not item then break end
  items[#items + 1] = item
end
return items
"""

_BEAT = f"""
{_NOW}
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
"""

# Every consumer silent for longer than ARGV[1] ms: its claims go back to the
# head of the queue (the right end, taken next), in the order it took them.
_RECLAIM = f"""
{_NOW}
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1]))
local moved = 0
for _, consumer in ipairs(dead) do
  local claims = ARGV[2] .. consumer
  while redis.call('LMOVE', claims, KEYS[1], 'LEFT', 'RIGHT') do
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[2], consumer)
end
return {{moved, #dead}}
"""

# Claims back to the head of the queue, in the order they were taken.
_REQUEUE = """
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
return moved
"""

# A consumer leaving cleanly gives its claims back at once and deregisters.
_RELEASE = """
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
redis.call('ZREM', KEYS[3], ARGV[1])
return moved
"""

# Drop these items (one occurrence each) from the claims: what was committed, nothing else.
_ACK = """
local dropped = 0
for i = 1, #ARGV do
  dropped = dropped + redis.call('LREM', KEYS[1], 1, ARGV[i])
end
return dropped
"""


class PublishError(RuntimeError):
    """The queue could not be reached in time; nothing was enqueued."""


@dataclass(frozen=True)
class Envelope:
    provider: str
    event_id: str
    received_at: float
    body: bytes

    def encode(self) -> bytes:
        header = orjson.dumps({"p": self.provider, "id": self.event_id, "at": self.received_at})
        return header + b"\n" + self.body

    @classmethod
    def decode(cls, item: bytes) -> Envelope:
        header, _, body = item.partition(b"\n")
        fields = orjson.loads(header)
        return cls(fields["p"], fields["id"], float(fields["at"]), body)


def connect(url: str, *, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=None,  # callers bound their own retries
        retry_on_error=[],
        health_check_interval=0,
    )


class Publisher:
    """The receiver's side: push one verified event, fast, and fail fast."""

    def __init__(self, client: redis.Redis, *, attempts: int) -> None:
        self.client = client
        self._attempts = attempts

    def publish(self, provider: str, event_id: str, body: bytes, received_at: float | None = None) -> None:
        item = Envelope(provider, event_id, time.time() if received_at is None else received_at, body).encode()
        last_error: Exception | None = None
        for attempt in range(self._attempts):
            try:
                self.client.lpush(EVENTS, item)
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                last_error = exc
                if attempt + 1 < self._attempts:
                    time.sleep(0.05 * (attempt + 1))
        raise PublishError(f"queue unreachable after {self._attempts} attempts ({last_error.__class__.__name__})")

    def ping(self) -> None:
        self.client.ping()


def consumer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Claims:
    """A consumer's side: claim batches, acknowledge them, heartbeat, reclaim the dead's."""

    def __init__(self, client: redis.Redis, consumer: str | None = None) -> None:
        self.client = client
        self.consumer = consumer or consumer_id()
        self.claims = CLAIMS + self.consumer
        self._claim = client.register_script(_CLAIM)
        self._beat = client.register_script(_BEAT)
        self._reclaim = client.register_script(_RECLAIM)
        self._release = client.register_script(_RELEASE)
        self._requeue = client.register_script(_REQUEUE)
        self._ack = client.register_script(_ACK)

    def claim(self, limit: int, *, block: float = 0.0) -> list[bytes]:
        """Up to ``limit`` items onto our claims; wait up to ``block`` seconds for the first one."""
        items = self._claim(keys=[EVENTS, self.claims, CONSUMERS], args=[self.consumer, limit])
        if items or block <= 0:
            return items
        first = self.client.blmove(EVENTS, self.claims, block, "RIGHT", "LEFT")
        if first is None:
            return []
        return [first, *(self._claim(keys=[EVENTS, self.claims, CONSUMERS], args=[self.consumer, limit - 1]) if limit > 1 else [])]

    def ack(self, items: list[bytes]) -> int:
        """These items are durable elsewhere now: drop them, and only them, from our claims."""
        if not items:
            return 0
        return int(self._ack(keys=[self.claims], args=items))

    def requeue(self) -> int:
        """Whatever we hold goes back to the head of the queue (items we claimed but are not applying)."""
        return int(self._requeue(keys=[EVENTS, self.claims]))

    def beat(self) -> None:
        self._beat(keys=[CONSUMERS], args=[self.consumer])

    def reclaim_dead(self, timeout_seconds: float) -> tuple[int, int]:
        """Return the claims of consumers silent for longer than the timeout to the queue: (items, consumers)."""
        moved, consumers = self._reclaim(keys=[EVENTS, CONSUMERS], args=[int(timeout_seconds * 1000), CLAIMS])
        return int(moved), int(consumers)

    def park(self, item: bytes) -> None:
        """Keep an item nothing could be done with (not even a dead letter) where an operator finds it."""
        self.client.lpush(PARKED, item)

    def release(self) -> int:
        """Leave: our claims back to the head of the queue, and deregister."""
        return int(self._release(keys=[EVENTS, self.claims, CONSUMERS], args=[self.consumer]))


def depth(client: redis.Redis) -> int:
    return int(client.llen(EVENTS))


def parked(client: redis.Redis) -> int:
    return int(client.llen(PARKED))


def parked_items(client: redis.Redis, limit: int) -> list[bytes]:
    """The parked items, oldest first."""
    return list(reversed(client.lrange(PARKED, -limit, -1)))


def requeue_parked(client: redis.Redis) -> int:
    """Every parked item back at the tail of the queue, one atomic move each: none lost, none doubled."""
    moved = 0
    while client.lmove(PARKED, EVENTS, "RIGHT", "LEFT") is not None:
        moved += 1
    return moved


def claimed(client: redis.Redis) -> int:
    """Items held by consumers right now."""
    total = 0
    for consumer in client.zrange(CONSUMERS, 0, -1):
        total += client.llen(CLAIMS + consumer.decode())
    return total
