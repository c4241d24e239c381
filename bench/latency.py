"""POST-to-grant latency of payhooks at a trickle and at half its measured capacity.

One payhooks (bench/stacks.py: receiver, a Celery worker, its own database and
Redis). Its capacity is the end-to-end rate of a burst of ``--events`` (or
the e2e figure when ``all`` ran it first). Then, for each phase, events are
sent at a steady pace (evenly spaced, each on a new connection, not waiting
for the previous answer) for ``--latency-seconds``: ``--trickle-rate`` events/s,
then half the capacity.

For every event: ``sent`` is the wall clock just before its request is written.
A poller on its own connection looks every 10 ms for the ledger rows of the
users sent and not yet seen (``… WHERE id > mark AND user_id = ANY(pending)``):

* **seen** − sent: the grant was visible (committed) at most one poll interval
  plus one query earlier — resolution ≈ 10 ms, an upper bound;
* **created_at** − sent: the ledger row's ``created_at`` is ``now()`` of the
  transaction that applied it, i.e. when that transaction began, before its
  statements and commit — a lower bound, microsecond resolution (same host,
  same clock).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field

import psycopg

from bench import e2e, load
from bench.procs import SECRET, group
from bench.stacks import Payhooks, plain_dsn
from providers.stripe import sign

POLL = 0.01


@dataclass
class Phase:
    label: str
    rate: float
    sent: int
    granted: int
    answer_errors: int
    seen_ms: list[float] = field(default_factory=list)  # sorted
    created_ms: list[float] = field(default_factory=list)  # sorted
    answered_ms: list[float] = field(default_factory=list)  # sorted: POST written to its answer read

    def percentile(self, kind: str, p: float) -> float:
        series = {"seen": self.seen_ms, "created": self.created_ms, "answered": self.answered_ms}[kind]
        return load._percentile(series, p)


@dataclass
class LatencyReport:
    capacity: float
    capacity_source: str
    seconds: float
    phases: list[Phase]


def run(args, capacity: float | None = None) -> LatencyReport:
    print(f"latency: {args.trickle_rate:g} events/s, then half of capacity, {args.latency_seconds:g} s each",
          flush=True)
    with group() as processes:
        system = Payhooks(processes, args.web_concurrency)
        try:
            system.start(concurrency=args.worker_concurrency)
            e2e.run_round(system, "latency warm-up", min(200, args.events),
                          connections=args.post_connections, stall=args.stall)
            source = "the e2e median"
            if capacity is None:
                capacity = e2e.run_round(system, "capacity burst", args.events,
                                         connections=args.post_connections, stall=args.stall).rate
                source = f"a burst of {args.events:,}"
            phases = [measure(system, "trickle", args.trickle_rate, args.latency_seconds),
                      measure(system, "50% of capacity", capacity / 2, args.latency_seconds)]
        finally:
            processes.stop()
            system.close()
    return LatencyReport(capacity, source, args.latency_seconds, phases)


def measure(system: Payhooks, label: str, rate: float, seconds: float) -> Phase:
    count = max(10, round(rate * seconds))
    tag = uuid.uuid4().hex[:8]
    bodies, _, users = e2e.events(count, f"lat{tag}")
    sent: dict[str, float] = {}
    seen: dict[str, tuple[float, float]] = {}  # user -> (seen, created_at), epoch seconds
    mark = system.mark()
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(system, mark, sent, seen, stop, count), daemon=True)
    poller.start()
    errors, answered = asyncio.run(_paced(system.url, bodies, users, rate, sent))
    poller.join(timeout=max(30.0, seconds))
    stop.set()
    phase = Phase(label, rate, count, len(seen), errors,
                  sorted((seen[u][0] - sent[u]) * 1000 for u in seen if u in sent),
                  sorted((seen[u][1] - sent[u]) * 1000 for u in seen if u in sent),
                  sorted(seconds * 1000 for seconds in answered))
    print(f"  {label:<16} {rate:7.1f} events/s × {seconds:g} s: {phase.granted}/{count} granted ({errors} POSTs failed); POST to grant "
          f"seen p50 {phase.percentile('seen', 50):.0f} p90 {phase.percentile('seen', 90):.0f} "
          f"p99 {phase.percentile('seen', 99):.0f} ms", flush=True)
    return phase


def _poll(system: Payhooks, mark: int, sent: dict, seen: dict, stop: threading.Event, count: int) -> None:
    """Look for the grants of the users sent and not yet seen.

    Not "ids above the last one seen": two consumers commit out of id order, and
    a batch that commits after a later one would be missed.
    """
    with psycopg.connect(plain_dsn(system.stack.database_url), autocommit=True) as db:
        while len(seen) < count and not stop.is_set():
            pending = [user for user in list(sent) if user not in seen]
            if pending:
                rows = db.execute("SELECT user_id, extract(epoch FROM created_at)::float8 FROM credit_ledger "
                                  "WHERE id > %s AND user_id = ANY(%s)", (mark, pending)).fetchall()
                now = time.time()
                for user, created in rows:
                    seen[user] = (now, created)
            time.sleep(POLL)


async def _paced(
    url: str, bodies: list[bytes], users: list[str], rate: float, sent: dict[str, float]
) -> tuple[int, list[float]]:
    """POST each body at its slot (i / rate after the start), without waiting for answers; errors, answer times."""
    host, port = load._address(url)
    latencies: list[float] = []
    start = time.perf_counter()
    tasks = []

    async def one(body: bytes, user: str) -> bool:
        raw = load._raw_request(url, body, sign(body, SECRET, int(time.time())))
        sent[user] = time.time()
        return await load._send(host, port, raw, latencies)

    for i, (body, user) in enumerate(zip(bodies, users, strict=True)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body, user)))
    answers = await asyncio.gather(*tasks)
    return sum(not ok for ok in answers), latencies


def print_report(report: LatencyReport) -> None:
    print(f"\nlatency — POST to grant, evenly paced, {report.seconds:g} s per phase; capacity "
          f"{report.capacity:,.0f} events/s ({report.capacity_source})")
    print(f"  {'':<18}{'events/s':>9}{'granted':>11}  {'seen (poll 10 ms) p50/p90/p99 ms':>34}"
          f"   {'created_at p50/p90/p99 ms':>27}   {'answered p50/p90/p99 ms':>25}")
    for phase in report.phases:
        seen, created, answered = ("/".join(f"{phase.percentile(kind, p):.0f}" for p in (50, 90, 99))
                                   for kind in ("seen", "created", "answered"))
        print(f"  {phase.label:<18}{phase.rate:>9.1f}{phase.granted:>6}/{phase.sent:<5} {seen:>34}   {created:>27}"
              f"   {answered:>25}")
    print("  seen: when a poller every 10 ms first saw the committed ledger row (upper bound, ±10 ms); "
          "created_at: the applying transaction's start (lower bound); answered: the receiver's 200 "
          "(each POST on a new connection). Goal: trickle p99 ≤ 250 ms.")
    failed = sum(phase.answer_errors for phase in report.phases)
    if failed:
        print(f"  WARNING: {failed} POSTs failed (timeout or refused); their events were never sent")


def summary(report: LatencyReport) -> list[tuple[str, str, str]]:
    rows = []
    for phase in report.phases:
        goal = "p99 ≤ 250 ms" if phase.label == "trickle" else ""
        rows.append((f"POST → grant at {phase.label} ({phase.rate:.0f}/s), p50/p90/p99",
                     " / ".join(f"{phase.percentile('seen', p):.0f}" for p in (50, 90, 99)) + " ms", goal))
    return rows
