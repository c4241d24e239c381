"""Workers alone: a queue filled beforehand, drained by the consumers, timed to the last grant.

The items are the receiver's (transport.queue.Envelope around a signed body),
pushed onto a holding list while the workers are ready and idle, then moved
onto the events queue in one RENAME: the consumers blocked on it wake at once
and the clock starts. The receiver is not involved, so the figure is the
workers' (and PostgreSQL's and Redis's), not the posting rate's.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis

from bench import e2e
from bench.stacks import Payhooks
from transport.queue import EVENTS, Envelope

HOLD = "bench:hold"


@dataclass
class Drain:
    events: int
    granted: int
    seconds: float  # RENAME to the last grant seen
    first_ms: float  # RENAME to the first grant seen
    worker_cpu_ms: float  # per event
    pg_cpu_ms: float  # per event

    @property
    def rate(self) -> float:
        return self.granted / self.seconds if self.seconds else 0.0


def fill(client: redis.Redis, n: int, *, hot: bool = False) -> tuple[list[str], list[str]]:
    """n items on the holding list, in the order the receiver would have pushed them; (event ids, users)."""
    bodies, ids, users = e2e.events(n, uuid.uuid4().hex[:8], hot=hot)
    client.delete(HOLD)
    pipe = client.pipeline(transaction=False)
    for body, event_id in zip(bodies, ids, strict=True):
        pipe.lpush(HOLD, Envelope("stripe", event_id, time.time(), body).encode())
    pipe.execute()
    return ids, users


def drain(system: Payhooks, client: redis.Redis, n: int, *, stall: float = 60.0,
          on_done=None) -> Drain:
    """Release n held items to the idle workers and time them to the last grant.

    ``on_done`` is called right after the last grant was seen, before the
    CPU figures are read (costs.py reads its counters there).
    """
    mark = system.mark()
    worker_cpu = system.worker_cpu()
    pg_before = e2e.pg_backend_cpu(system.db)
    client.rename(HOLD, EVENTS)
    start = time.perf_counter()
    first = None
    granted = 0
    progressed_at = start
    while granted < n and time.perf_counter() < progressed_at + stall:
        time.sleep(e2e.POLL)
        now_granted = system.granted(mark)
        if now_granted != granted:
            granted, progressed_at = now_granted, time.perf_counter()
            first = first or progressed_at
    done = time.perf_counter()
    if on_done:
        on_done()
    pg_cpu = e2e.pg_cpu_since(system.db, pg_before)
    worker_cpu = system.worker_cpu() - worker_cpu
    return Drain(n, granted, done - start, ((first or done) - start) * 1000,
                 worker_cpu / max(granted, 1) * 1000, pg_cpu / max(granted, 1) * 1000)
