"""Celery messages a consumer sends after its commit, sent from a thread of their own.

A batch's follow-up work (look up a session's line items, dispatch the outbox)
goes out as Celery messages once the batch has committed. Sending one goes
through kombu's producer pool and connection, which can block for as long as
Redis is away (a dead pooled connection, a pool exhausted by failed publishes)
— and the consumer must never wait on it: its claims would sit unacknowledged
and the events behind them unapplied. So the consumer only hands the message
to this thread and goes on.

What is lost if a send fails or the hand-off is full is only a nudge: each has
a safety net that does the same work on a timer (beat's outbound kick, the
held-events retry). Sends are retried briefly, then given up with a warning.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("payhooks.handoff")

# kombu's publish retry: a few quick tries, never a long wait inside this thread.
RETRY_POLICY = {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.5, "interval_max": 1.0}


class Handoff:
    """A bounded queue of (task name, args, argsrepr) and the one thread per process that sends them."""

    def __init__(self, send: Callable[..., object], *, capacity: int = 1000) -> None:
        self._send = send
        self._capacity = capacity
        self._pending: queue.Queue | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def submit(self, name: str, args: tuple, argsrepr: str) -> None:
        """Queue a message; never blocks. A full hand-off drops it (the safety nets do the work later)."""
        try:
            self._queue().put_nowait((name, args, argsrepr))
        except queue.Full:
            log.warning("after-commit hand-off full: %s not sent now; its periodic safety net will do it", name)

    def _queue(self) -> queue.Queue:
        # One thread per process: a prefork child does not inherit its parent's thread.
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._pending = queue.Queue(maxsize=self._capacity)
                threading.Thread(target=self._run, args=(self._pending,), name="payhooks-handoff", daemon=True).start()
            return self._pending

    def _run(self, pending: queue.Queue) -> None:
        while True:
            name, args, argsrepr = pending.get()
            try:
                self._send(name, args, argsrepr=argsrepr, retry=True, retry_policy=RETRY_POLICY)
            except Exception as exc:  # the broker away: the safety net covers it
                log.warning("could not send %s after commit (%s); its periodic safety net will", name,
                            exc.__class__.__name__)
