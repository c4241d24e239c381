"""End to end: signed deliveries in, credits granted, payhooks against the synchronous ORM peer.

Systems, each started as the Procfile starts it (bench/stacks.py):

* **payhooks**: the gunicorn receiver and a Celery worker (``--concurrency``),
  a fresh migrated database and a private Redis (AOF on), on one box;
* **peer**: bench/peer_app.py — Stripe SDK verify, then dedupe, payment and
  grant in one ORM transaction inside the request — on a database of its own
  on the same PostgreSQL;
* with ``--prefill N``, **payhooks prefilled**: a second payhooks whose inbox,
  payments, ledger and balances hold N rows (bench/prefill.py) before the first
  round;
* with ``--hot-user``, **payhooks hot user**: the first payhooks again, every
  event of the round for one user (one balance row, one lock).

Each round POSTs ``--events`` distinct checkout.session.completed events (one
session and, except hot user, one user each; 100 credits) over
``--post-connections``, signing each as it is sent, and polls the system's
ledger (``count(*) WHERE id > mark``, every 20 ms) until N grants exist. The
rate is N / (first POST → last grant seen). Rounds alternate the systems'
order (A B C, C B A, ...); the figures are medians. After each round the books
are checked: every event processed, one grant each, the round's balances add up.

CPU per event: psutil user+system time of the system's processes (payhooks'
Celery workers, parent and pool; the receiver's gunicorn; the peer's gunicorn)
and of the PostgreSQL backends serving that database, over the round.
"""

from __future__ import annotations

import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psutil
import redis

from bench import load, prefill
from bench.figures import ratio
from bench.procs import SECRET, group
from bench.stacks import CREDITS, Payhooks, Peer
from providers.stripe import sign
from tests.support import stripe_events

MAX_WAIT = 900  # seconds after the last POST, however steady the progress
POLL = 0.02


@dataclass
class Round:
    system: str
    events: int
    seconds: float  # first POST to last grant seen
    granted: int
    post: load.LoadResult
    app_cpu_ms: float  # per event: payhooks' workers, or the peer's gunicorn
    web_cpu_ms: float  # per event: payhooks' receiver (the peer's web is its app)
    pg_cpu_ms: float  # per event: the PostgreSQL backends of the system's database
    checks: dict[str, tuple[int, int]]

    @property
    def rate(self) -> float:
        return self.granted / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return all(found == expected for found, expected in self.checks.values())


@dataclass
class Series:
    label: str
    rounds: list[Round] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(r, attribute) for r in self.rounds)


@dataclass
class E2EReport:
    events: int
    connections: int
    concurrency: int
    postgres: str
    series: dict[str, Series]
    prefilled: int = 0
    prefill_seconds: float = 0.0
    drained: dict[str, list] = field(default_factory=dict)  # label -> drain.Drain per round (with --prefill)

    @property
    def ok(self) -> bool:
        return all(r.ok for s in self.series.values() for r in s.rounds)

    def ratio(self, a: str, b: str, attribute: str = "rate") -> float:
        return ratio(self.series[a].median(attribute), self.series[b].median(attribute))

    def drained_median(self, label: str, attribute: str) -> float:
        return statistics.median(getattr(d, attribute) for d in self.drained[label])

    def drained_cost_ratio(self, label: str) -> float:
        """Worker + PostgreSQL CPU per event, prefilled over empty, at full batches."""
        cost = lambda name: (self.drained_median(name, "worker_cpu_ms")  # noqa: E731
                             + self.drained_median(name, "pg_cpu_ms"))
        return ratio(cost(label), cost("payhooks"))


def events(n: int, tag: str, *, hot: bool = False) -> tuple[list[bytes], list[str], list[str]]:
    """N signed-later bodies, their event ids and their users (one user for all if hot)."""
    bodies, ids, users = [], [], []
    for i in range(n):
        user = f"bench_{tag}_hot" if hot else f"bench_{tag}_{i:06d}"
        evt = stripe_events.completed_event(user_id=user, credits=str(CREDITS))
        bodies.append(stripe_events.encode(evt))
        ids.append(evt["id"])
        users.append(user)
    return bodies, ids, users


def pg_backend_cpu(db) -> dict[int, float]:
    """CPU seconds of each client backend connected to this database (but our own).

    Autovacuum workers are left out: they visit a small, growing table after
    nearly every round and a large one rarely, which says nothing per event.
    """
    pids = [row[0] for row in db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'")]
    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        seconds[pid] = times.user + times.system
    return seconds


def pg_cpu_since(db, before: dict[int, float]) -> float:
    after = pg_backend_cpu(db)
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def wait_for_grants(system, mark: int, n: int, stall: float, posted_at: float) -> tuple[int, float]:
    """Poll until n grants past the mark; (grants seen, when the last was seen)."""
    granted = system.granted(mark)
    seen_at = progressed_at = time.perf_counter()
    while granted < n and time.perf_counter() < min(posted_at + MAX_WAIT, progressed_at + stall):
        time.sleep(POLL)
        now_granted = system.granted(mark)
        if now_granted != granted:
            granted, progressed_at = now_granted, time.perf_counter()
        seen_at = time.perf_counter()
    return granted, seen_at


def run_round(system, label: str, n: int, *, connections: int, stall: float, hot: bool = False) -> Round:
    tag = uuid.uuid4().hex[:8]
    bodies, ids, users = events(n, tag, hot=hot)
    mark = system.mark()
    app_cpu, web_cpu = system_cpu(system)
    pg_before = pg_backend_cpu(system.db)
    start = time.perf_counter()
    post = load.post_all(system.url, bodies, lambda body: sign(body, SECRET, int(time.time())),
                         connections=connections)
    granted, done = wait_for_grants(system, mark, n, stall, time.perf_counter())
    pg_cpu = pg_cpu_since(system.db, pg_before)
    app_after, web_after = system_cpu(system)
    if granted < n:
        print(f"  WARNING {label}: gave up with {granted}/{n} granted", flush=True)
    result = Round(
        system=label, events=n, seconds=done - start, granted=granted, post=post,
        app_cpu_ms=(app_after - app_cpu) / max(granted, 1) * 1000,
        web_cpu_ms=(web_after - web_cpu) / max(granted, 1) * 1000,
        pg_cpu_ms=pg_cpu / max(granted, 1) * 1000,
        checks=system.books(mark, ids, users, n),
    )
    failed = [name for name, (found, expected) in result.checks.items() if found != expected]
    print(f"  {label:<24} {result.rate:8,.0f} events/s  ({granted:,} in {result.seconds:.2f} s; posting "
          f"{post.rps:,.0f} req/s, {post.errors} errors)  app CPU {result.app_cpu_ms:5.2f} ms/event  "
          f"PostgreSQL CPU {result.pg_cpu_ms:5.2f} ms/event{'  BOOKS FAILED: ' + ', '.join(failed) if failed else ''}",
          flush=True)
    return result


def system_cpu(system) -> tuple[float, float]:
    """(app, web) CPU seconds: payhooks' workers and receiver, or the peer's gunicorn and 0."""
    if isinstance(system, Payhooks):
        return system.worker_cpu(), system.web_cpu()
    return system.web_cpu(), 0.0


def run(args) -> E2EReport:
    print(f"e2e: {args.events} events per round, {args.rounds} rounds, {args.post_connections} connections, "
          f"Celery prefork --concurrency {args.worker_concurrency}, WEB_CONCURRENCY={args.web_concurrency}"
          f"{f', prefill {args.prefill:,}' if args.prefill else ''}{', hot user' if args.hot_user else ''}",
          flush=True)
    with group() as processes:
        payhooks = Payhooks(processes, args.web_concurrency)
        systems: list = [payhooks]
        try:
            payhooks.open()
            peer = Peer(processes, payhooks.stack._admin_url, args.web_concurrency)
            systems.append(peer)
            plan = [("payhooks", payhooks, False), ("peer", peer, False)]
            starting = [lambda: payhooks.launch(concurrency=args.worker_concurrency), peer.start]
            if args.prefill:
                filled = Payhooks(processes, args.web_concurrency, name="prefilled")
                systems.append(filled)
                starting.append(lambda: _prefilled(filled, args.prefill, args.worker_concurrency))
                plan.append((f"payhooks prefilled {prefill.short(args.prefill)}", filled, False))
            with ThreadPoolExecutor(len(starting)) as pool:  # the systems start side by side
                started = [pool.submit(start) for start in starting]
            prefill_seconds = started[-1].result() if args.prefill else 0.0
            for future in started:
                future.result()
            if args.hot_user:
                plan.append(("payhooks hot user", payhooks, True))
            series = {label: Series(label) for label, _, _ in plan}
            drained = {label: [] for label, system, _ in plan if args.prefill and isinstance(system, Payhooks)
                       and label != "payhooks hot user"}
            for label, system, hot in plan:  # warm-up: connections, caches, the first fork
                run_round(system, f"{label} (warm-up)", min(200, args.events), connections=args.post_connections,
                          stall=args.stall, hot=hot)
            for number in range(args.rounds):
                for system in systems:
                    if isinstance(system, Payhooks):
                        system.analyze()
                order = plan if number % 2 == 0 else plan[::-1]
                for label, system, hot in order:
                    series[label].rounds.append(run_round(
                        system, label, args.events, connections=args.post_connections, stall=args.stall, hot=hot))
                for label, system, _ in order:
                    if label in drained:
                        drained[label].append(_drain(system, label, args.events, args.stall))
            return E2EReport(events=args.events, connections=args.post_connections,
                             concurrency=args.worker_concurrency, postgres=payhooks.stack.postgres_origin,
                             series=series, prefilled=args.prefill, prefill_seconds=prefill_seconds,
                             drained=drained)
        finally:
            processes.stop()
            with ThreadPoolExecutor(len(systems)) as pool:
                list(pool.map(lambda system: system.close(), systems))


def _drain(system: Payhooks, label: str, n: int, stall: float):
    """The per-event cost at full batches: n items queued at once, drained by the idle workers."""
    from bench import drain

    client = redis.Redis.from_url(system.stack.redis_url)
    drain.fill(client, n)
    result = drain.drain(system, client, n, stall=stall)
    print(f"  {label + ', drained':<24} {result.rate:8,.0f} events/s  worker CPU {result.worker_cpu_ms:5.2f} ms/event  "
          f"PostgreSQL CPU {result.pg_cpu_ms:5.2f} ms/event", flush=True)
    return result


def _prefilled(system: Payhooks, rows: int, concurrency: int) -> float:
    """Start a payhooks whose database holds `rows` rows per table first; the seconds the fill took."""
    system.open()
    seconds = prefill.fill(system.db, rows)
    print(f"  prefilled {rows:,} rows per table in {seconds:.0f} s", flush=True)
    system.launch(concurrency=concurrency)
    return seconds


def print_report(report: E2EReport) -> None:
    print(f"\ne2e — {report.events:,} events per round, {report.connections} posting connections, "
          f"medians of {len(report.series['payhooks'].rounds)} alternated rounds; PostgreSQL: {report.postgres}")
    print(f"  {'':<28}{'events/s':>10}{'app CPU ms/ev':>15}{'receiver ms/ev':>16}{'PG CPU ms/ev':>14}"
          f"{'post p99 ms':>13}")
    for s in report.series.values():
        web = f"{s.median('web_cpu_ms'):.2f}" if s.label != "peer" else "(in app)"
        print(f"  {s.label:<28}{s.median('rate'):>10,.0f}{s.median('app_cpu_ms'):>15.2f}{web:>16}"
              f"{s.median('pg_cpu_ms'):>14.2f}{statistics.median(r.post.p99_ms for r in s.rounds):>13.1f}")
    rounds = ", ".join(f"{ratio(p.rate, q.rate):.2f}" for p, q in zip(report.series["payhooks"].rounds,
                                                                 report.series["peer"].rounds, strict=True))
    print(f"  payhooks / peer = {report.ratio('payhooks', 'peer'):.2f}×  (events/s medians; per round: {rounds}; "
          f"goal ≥ 2×)")
    print(f"  payhooks worker CPU per event = {report.series['payhooks'].median('app_cpu_ms'):.2f} ms  "
          f"(Celery parent + pool children, psutil; goal ≤ 1.5 ms)")
    for s in report.series.values():
        if s.label.startswith("payhooks prefilled"):
            print(f"  prefilled / empty, end to end: worker CPU per event "
                  f"{report.ratio(s.label, 'payhooks', 'app_cpu_ms'):.0%}, PostgreSQL CPU per event "
                  f"{report.ratio(s.label, 'payhooks', 'pg_cpu_ms'):.0%}, events/s {report.ratio(s.label, 'payhooks'):.0%}"
                  f"  ({report.prefilled:,} rows per table, filled in {report.prefill_seconds:.0f} s)")
            drained = lambda attribute: ratio(report.drained_median(s.label, attribute),  # noqa: E731
                                              report.drained_median("payhooks", attribute))
            print(f"  prefilled / empty, queue drained (full batches): worker CPU per event "
                  f"{drained('worker_cpu_ms'):.0%}, PostgreSQL CPU per event {drained('pg_cpu_ms'):.0%}, both "
                  f"{report.drained_cost_ratio(s.label):.0%}, events/s {drained('rate'):.0%}  (goal: cost within 10%)")
        if s.label == "payhooks hot user":
            print(f"  hot user / spread users: events/s {report.ratio(s.label, 'payhooks'):.0%}, "
                  f"worker CPU per event {report.ratio(s.label, 'payhooks', 'app_cpu_ms'):.0%}")
    bad = [(r.system, name, found, expected) for s in report.series.values() for r in s.rounds
           for name, (found, expected) in r.checks.items() if found != expected]
    print(f"  books: {'all ok' if not bad else 'FAILED ' + '; '.join(f'{a} {b}: {c} != {d}' for a, b, c, d in bad)}")


def summary(report: E2EReport) -> list[tuple[str, str, str]]:
    rows = [
        ("end to end, payhooks (events/s)", f"{report.series['payhooks'].median('rate'):,.0f}", "≥ 800"),
        ("end to end, sync ORM peer (events/s)", f"{report.series['peer'].median('rate'):,.0f}", ""),
        ("payhooks / peer", f"{report.ratio('payhooks', 'peer'):.2f}×", "≥ 2×"),
        ("payhooks worker CPU per event", f"{report.series['payhooks'].median('app_cpu_ms'):.2f} ms", "≤ 1.5 ms"),
        ("payhooks receiver CPU per event", f"{report.series['payhooks'].median('web_cpu_ms'):.2f} ms", ""),
        ("peer gunicorn CPU per event", f"{report.series['peer'].median('app_cpu_ms'):.2f} ms", ""),
        ("PostgreSQL CPU per event, payhooks / peer",
         f"{report.series['payhooks'].median('pg_cpu_ms'):.2f} / {report.series['peer'].median('pg_cpu_ms'):.2f} ms",
         ""),
    ]
    for s in report.series.values():
        if s.label.startswith("payhooks prefilled"):
            rows.append((f"{s.label} / empty: worker + PostgreSQL CPU per event, drained",
                         f"{report.drained_cost_ratio(s.label):.0%}", "≤ 110%"))
            rows.append((f"{s.label} / empty: events/s end to end", f"{report.ratio(s.label, 'payhooks'):.0%}", ""))
        if s.label == "payhooks hot user":
            rows.append(("hot user / spread users: events/s", f"{report.ratio(s.label, 'payhooks'):.0%}", ""))
    return rows
