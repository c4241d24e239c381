"""End to end: signed deliveries in, credits granted, timed until the last one is applied.

Starts a fresh migrated PostgreSQL database and a private Redis
(tests.support.services), a Celery worker and the gunicorn receiver as the
Procfile runs them, posts N distinct checkout.session.completed events (one
session and one user each) as fast as the receiver answers, and polls the inbox
until N events are processed. Then checks the books: N ledger rows, and
Σ balances == Σ ledger amounts == N × credits.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

from bench import load
from bench.procs import API_TOKEN, BIN, SECRET, cpu_seconds, group, service_env
from infra.embedded import free_port
from providers.stripe import sign
from tests.support import services, stripe_events

CREDITS = 100
MAX_WAIT = 900  # seconds after the last POST, however steady the progress


@dataclass
class E2EReport:
    events: int
    post: load.LoadResult
    seconds: float  # first POST to last event processed
    processed: int
    drain_rate: float  # events/s applied after the last POST was answered
    checks: dict[str, tuple[int, int]]  # name -> (found, expected)
    postgres: str
    commit_ms: float  # one single-row INSERT + COMMIT on this PostgreSQL (fsync), for context
    worker_cpu_ms: float  # CPU time of the Celery worker (parent and pool) per event processed
    outbound: str = "off"  # off; dispatch (on commit, no endpoint); endpoint (and one webhook endpoint, a local sink)
    delivered_seconds: float | None = None  # first POST to the last webhook delivered
    started: float = 0.0  # perf_counter at the first POST

    @property
    def rate(self) -> float:
        return self.processed / self.seconds

    @property
    def ok(self) -> bool:
        return all(found == expected for found, expected in self.checks.values())


# A Fernet key for endpoint secrets at rest (bench only).
OUTBOUND_KEY = "YmVuY2gtb3V0Ym91bmQta2V5LWZvci1mZXJuZXQtMzI="


def run(args, mode: str | None = None) -> E2EReport:
    """``mode``: off (the outbox is written, never dispatched), dispatch (on commit, no endpoint), endpoint (one)."""
    mode = mode or args.outbound
    outbound = mode != "off"
    print(f"e2e: {args.events} events, {args.post_connections} connections, Celery prefork "
          f"--concurrency {args.worker_concurrency}, WEB_CONCURRENCY={args.web_concurrency}, outbox: {mode}",
          flush=True)
    stack = services.start()
    try:
        dsn = make_url(stack.database_url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        env = service_env({
            "DATABASE_URL": stack.database_url,
            "REDIS_URL": stack.redis_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "API_TOKEN": API_TOKEN,
            "WEB_CONCURRENCY": str(args.web_concurrency),
            "OUTBOX_DISPATCH_ON_COMMIT": "on" if outbound else "off",
            "OUTBOUND_SECRET_KEY": OUTBOUND_KEY,
        })
        sink = _sink(stack.database_url, env) if mode == "endpoint" else None
        with group() as processes, psycopg.connect(dsn, autocommit=True) as db:
            commit_ms = _commit_latency(db)
            worker = processes.celery_worker("worker", [
                str(BIN / "celery"), "-A", "workers", "worker",
                "--queues", "webhooks,maintenance,outbound" if outbound else "webhooks,maintenance",
                "--concurrency", str(args.worker_concurrency), "--loglevel", "INFO",
            ], env)
            port = free_port()
            processes.http_server("web", [
                str(BIN / "gunicorn"), "--config", "python:receiver.gunicorn_conf",
                "receiver.wsgi:app",
            ], {**env, "PORT": str(port)}, port)
            url = f"http://127.0.0.1:{port}/webhooks/stripe"
            report = _measure(args, db, url, stack, commit_ms, worker.proc.pid)
            report.outbound = mode
            if sink is not None:
                report.delivered_seconds = _delivered(sink, args.events, report)
            if not report.ok:
                print(f"  the worker's last lines:\n{worker.log(20)}", flush=True)
            return report
    finally:
        if sink is not None:
            sink.__exit__(None, None, None)
        stack.close()
        shutil.rmtree(stack.redis.directory, ignore_errors=True)


def _measure(args, db: psycopg.Connection, url: str, stack, commit_ms: float,
             worker_pgid: int) -> E2EReport:
    n = args.events
    bodies = [
        stripe_events.encode(stripe_events.completed_event(
            user_id=f"bench_user_{i:06d}", credits=str(CREDITS)))
        for i in range(n)
    ]
    worker_cpu = cpu_seconds(worker_pgid)
    start = time.perf_counter()
    post = load.post_all(url, bodies, lambda body: sign(body, SECRET, int(time.time())),
                         connections=args.post_connections)
    posted_at = time.perf_counter()
    processed_at_post = processed = _processed(db)
    print(f"  posted {post.requests} in {post.seconds:.2f} s ({post.rps:,.0f} req/s, "
          f"p50 {post.p50_ms:.2f} ms, p99 {post.p99_ms:.2f} ms, errors {post.errors}); "
          f"{processed} already processed", flush=True)

    # Wait while the worker makes progress: give up after `stall` seconds without any, or at MAX_WAIT.
    deadline, progressed_at = posted_at + MAX_WAIT, posted_at
    while processed < n and time.perf_counter() < min(deadline, progressed_at + args.stall):
        time.sleep(0.02)
        now_processed = _processed(db)
        if now_processed != processed:
            processed, progressed_at = now_processed, time.perf_counter()
    done = time.perf_counter()
    worker_cpu = cpu_seconds(worker_pgid) - worker_cpu
    if processed < n:
        print(f"  WARNING: gave up with {processed}/{n} processed, {done - posted_at:.0f} s "
              f"after the last POST", flush=True)
    drain = done - posted_at
    checks = _books(db, n)
    return E2EReport(
        events=n,
        post=post,
        seconds=done - start,
        processed=processed,
        drain_rate=(processed - processed_at_post) / drain if drain > 0.05 else float("nan"),
        checks=checks,
        postgres=stack.postgres_origin,
        commit_ms=commit_ms,
        worker_cpu_ms=worker_cpu / max(processed, 1) * 1000,
        started=start,
    )


def _commit_latency(db: psycopg.Connection, commits: int = 50) -> float:
    """Milliseconds per durable commit of one small row (autocommit: each INSERT commits)."""
    db.execute("CREATE TABLE bench_commit_probe (id serial PRIMARY KEY, note text)")
    try:
        start = time.perf_counter()
        for _ in range(commits):
            db.execute("INSERT INTO bench_commit_probe (note) VALUES ('x')")
        return (time.perf_counter() - start) / commits * 1000
    finally:
        db.execute("DROP TABLE bench_commit_probe")


def _processed(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM webhook_events WHERE status = 'processed'").fetchone()[0]


def _books(db: psycopg.Connection, n: int) -> dict[str, tuple[int, int]]:
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    return {
        "events processed": (_processed(db), n),
        "events not processed": (one("SELECT count(*) FROM webhook_events WHERE status <> 'processed'"), 0),
        "payments completed": (one("SELECT count(*) FROM payments WHERE status = 'completed'"), n),
        "ledger rows": (one("SELECT count(*) FROM credit_ledger"), n),
        "sum of ledger amounts": (one("SELECT coalesce(sum(amount), 0) FROM credit_ledger"), n * CREDITS),
        "sum of balances": (one("SELECT coalesce(sum(balance), 0) FROM credit_accounts"), n * CREDITS),
    }


def _sink(database_url: str, env: dict[str, str]):
    """A local webhook receiver, registered as an endpoint for credits.granted."""
    from application.endpoints import Endpoints
    from infra.settings import Settings
    from models.db import Database
    from models.migrate import upgrade
    from tests.support.endpoint import Endpoint

    upgrade(database_url)
    sink = Endpoint()
    sink.__enter__()
    database = Database(database_url)
    try:
        Endpoints(database, Settings.from_env(env)).add(sink.url, ["credits.granted"])
    finally:
        database.dispose()
    return sink


def _delivered(sink, n: int, report: E2EReport) -> float | None:
    """Seconds from the first POST until every grant reached the sink (None if they did not within the stall)."""
    start = report.started
    deadline = time.perf_counter() + MAX_WAIT
    while len({r.message_id for r in list(sink.received)}) < n and time.perf_counter() < deadline:
        time.sleep(0.05)
    if len({r.message_id for r in list(sink.received)}) < n:
        return None
    return time.perf_counter() - start
