"""The batch consumer: takes events off the queue in batches and applies each batch in one transaction.

One loop per consumer, on a thread of its own:

    claim up to BATCH items (waiting for the first, so a lone event never waits
    for company) → decode → apply them through the unit of work → acknowledge
    exactly those items

Only what was committed is acknowledged: after a claim that failed (Redis gone
mid-claim, the reply lost) and at start, whatever this consumer's claims hold
goes back to the queue before it claims again.

An event that can be neither applied nor dead-lettered (a database constraint
refusing even its inbox row) is kept aside in ``payhooks:events:parked`` and
reported; the consumer goes on with the rest. A transient failure keeps the batch claimed and tries it again with capped,
jittered backoff. An outage (PostgreSQL away) is retried for as long as it
lasts — there is no limit to fall out of — and once the database is back the
batch is applied within one backoff interval. A conflict (a lock not granted,
a deadlock) is counted: past ``retry_limit`` the batch is split and applied one
event at a time, and an event that still conflicts past the limit on its own
is dead-lettered, so one locked row does not stall everything behind it. A second thread beats the
heartbeat (so a consumer stuck on a slow database is not mistaken for a dead
one) and hands back the claims of consumers that stopped beating.

Consumers run inside the Celery worker (workers/celery_app.py): one per
prefork child, or one in the main process under the threads or solo pool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import orjson
import redis

from application.batch import Incoming
from application.errors import is_conflict, is_transient
from application.unit import UnitOfWork
from infra import metrics
from infra.backoff import backoff_seconds
from models.enums import ErrorClass
from providers import registry
from providers.changes import InvalidEventError
from providers.registry import UnknownProviderError
from transport.queue import PARKED, Claims, Envelope

log = logging.getLogger("payhooks.consumer")


class Consumer:
    def __init__(
        self,
        claims: Claims,
        unit: UnitOfWork,
        *,
        batch_size: int,
        heartbeat_seconds: float,
        dead_after_seconds: float,
        backoff_max_seconds: float,
        retry_limit: int,
        reject: Callable[[bytes, str], None],
    ) -> None:
        self.claims = claims
        self.unit = unit
        self.batch_size = batch_size
        self.heartbeat_seconds = heartbeat_seconds
        self.dead_after_seconds = dead_after_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.retry_limit = retry_limit
        self.reject = reject
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._items: dict[tuple[str, str], bytes] = {}  # the batch in hand, by event, to park one

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Consumer:
        self._threads = [
            threading.Thread(target=self._guard(self.run_loop), name="payhooks-consumer", daemon=True),
            threading.Thread(target=self._guard(self.run_heartbeat), name="payhooks-heartbeat", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("event consumer %s started (batches of up to %d)", self.claims.consumer, self.batch_size)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, then give back anything still claimed and deregister."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            returned = self.claims.release()
            if returned:
                log.info("returned %d unacknowledged events to the queue", returned)
        except redis.RedisError as exc:
            log.warning("could not return claims on stop (%s); a peer reclaims them", exc.__class__.__name__)

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except Exception:  # a thread that dies silently would stop this consumer for good
                log.exception("consumer thread crashed; the worker must be restarted")
                raise

        return run

    # -- the loop ---------------------------------------------------------------

    def run_loop(self) -> None:
        # At start, after a claim whose reply never came, and whenever idle, our claims may hold
        # items that are not in hand (a previous life of this consumer, a reply lost after Redis
        # moved them): they go back to the queue before anything else is claimed, never
        # acknowledged unapplied.
        unsure = True
        while not self.stopping.is_set():
            try:
                if unsure:
                    returned = self.claims.requeue()
                    if returned:
                        log.warning("put %d claimed but unapplied events back on the queue", returned)
                    unsure = False
                items = self.claims.claim(self.batch_size, block=1.0)
            except redis.RedisError as exc:
                unsure = True
                log.warning("queue unreachable (%s); trying again", exc.__class__.__name__)
                self.stopping.wait(1.0)
                continue
            if not items:
                unsure = True  # idle, nothing in hand: anything on our claims list is a stray; look once a wait
                continue
            if self._apply_until_done(items):
                self._ack(items)

    def _ack(self, items: list[bytes]) -> None:
        while True:
            try:
                self.claims.ack(items)
                return
            except redis.RedisError as exc:
                # Applied and committed: a second application is only a duplicate, but keep trying to say so.
                log.warning("could not acknowledge a batch (%s); trying again", exc.__class__.__name__)
                if self.stopping.wait(0.5):
                    return

    def _apply_until_done(self, items: list[bytes]) -> bool:
        """Apply a batch, retrying transient failures; False if stopped first."""
        self._items = {}
        return self._apply(self._decode(items))

    def _apply(self, batch: list[Incoming]) -> bool:
        attempt = conflicts = 0
        while True:
            try:
                self.unit.apply(batch)
                return True
            except Exception as exc:
                if not is_transient(exc):
                    # The unit of work dead-letters what it can; this is an event it could not
                    # even dead-letter. Find it, keep it aside, and go on with the rest.
                    if len(batch) > 1:
                        return all(self._apply([incoming]) for incoming in batch)
                    self._park(batch[0], exc)
                    return True
                conflicts += is_conflict(exc)
                if conflicts > self.retry_limit:
                    return self._past_the_limit(batch, exc)
                delay = backoff_seconds(attempt, base=0.1, cap=self.backoff_max_seconds)
                for incoming in batch:
                    metrics.RETRIES.labels(incoming.event.provider, incoming.event.type).inc()
                log.warning(
                    "transient failure applying %s (%s, attempt %d); retrying in %.1f s",
                    _named(batch), exc.__class__.__name__, attempt + 1, delay,
                )
                attempt += 1
                if self.stopping.wait(delay):
                    return False

    def _past_the_limit(self, batch: list[Incoming], exc: Exception) -> bool:
        """A conflict that will not pass: find the event it is about, dead-letter only that one."""
        if len(batch) > 1:
            log.warning("a batch of %d kept conflicting; applying its events one at a time", len(batch))
            return all(self._apply([incoming]) for incoming in batch)
        while True:
            try:
                self.unit.dead_letter(batch[0], exc, ErrorClass.TRANSIENT)
                return True
            except Exception as again:  # even the dead letter cannot be written: keep the event, keep trying
                if not is_transient(again):
                    raise
                log.warning("could not dead-letter %s (%s); retrying", batch[0].event.id, again.__class__.__name__)
                if self.stopping.wait(self.backoff_max_seconds):
                    return False
                try:
                    self.unit.apply(batch)
                    return True
                except Exception as retry:
                    if not is_transient(retry):
                        raise

    def _park(self, incoming: Incoming, exc: BaseException) -> None:
        item = self._items[(incoming.event.provider, incoming.event.id)]
        log.error(
            "could neither apply nor dead-letter %s; kept in %s for an operator", incoming.event.id, PARKED, exc_info=exc
        )
        self._keep(item)

    def _keep(self, item: bytes) -> None:
        while True:
            try:
                self.claims.park(item)
                return
            except redis.RedisError as again:
                log.warning("could not park an item (%s); trying again", again.__class__.__name__)
                if self.stopping.wait(1.0):
                    return

    def _decode(self, items: list[bytes]) -> list[Incoming]:
        batch = []
        for item in items:
            try:
                envelope = Envelope.decode(item)
                event = registry.get(envelope.provider).parse_event(envelope.body)
                if event.id != envelope.event_id:
                    raise ValueError("the envelope's event id is not the body's")
            except (ValueError, KeyError, TypeError, InvalidEventError, UnknownProviderError, UnicodeDecodeError) as exc:
                # The receiver verified and parsed it; only a hand-made or corrupted item lands here.
                self._reject(item, f"{exc.__class__.__name__}: {exc}")
                continue
            self._items[(event.provider, event.id)] = item
            batch.append(Incoming(event, "webhook", envelope.received_at))
        return batch

    def _reject(self, item: bytes, reason: str) -> None:
        """An unreadable item becomes a dead letter; if even that cannot be written, it is parked."""
        try:
            self.reject(item, reason)
        except Exception as exc:
            log.error("could not dead-letter an unreadable item (%s); kept in %s", exc.__class__.__name__, PARKED)
            self._keep(item)

    # -- liveness -------------------------------------------------------------------

    def run_heartbeat(self) -> None:
        next_reclaim = 0.0
        while not self.stopping.wait(self.heartbeat_seconds):
            try:
                self.claims.beat()
                if time.monotonic() >= next_reclaim:
                    moved, dead = self.claims.reclaim_dead(self.dead_after_seconds)
                    if moved or dead:
                        metrics.RECLAIMED.inc(moved)
                        log.warning("took back %d events from %d consumers that stopped beating", moved, dead)
                    next_reclaim = time.monotonic() + self.dead_after_seconds / 2
            except redis.RedisError as exc:
                log.warning("heartbeat failed (%s)", exc.__class__.__name__)


def _named(batch: list[Incoming]) -> str:
    """A batch in a log line: its size, and the event ids of a small one (ids only, never bodies)."""
    ids = ", ".join(incoming.event.id for incoming in batch[:5])
    return f"a batch of {len(batch)} [{ids}{', …' if len(batch) > 5 else ''}]"


def rejected_item(item: bytes) -> tuple[str, str, bytes]:
    """What can be read of an item the consumer could not decode: (provider, event id, body)."""
    header, _, body = item.partition(b"\n")
    try:
        fields = orjson.loads(header)
        return str(fields.get("p") or "unknown")[:32], str(fields.get("id") or "")[:200], body
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown", "", item

