"""Per-event cost of each component, and what N hosts would reach (BENCHMARKS.md, "model of N hosts").

One payhooks (bench/stacks.py), in two steps so each cost is counted where it is paid:

1. **ingest**: the receiver alone (no worker running) takes ``--events`` POSTs;
   receiver CPU (psutil, gunicorn master and workers), Redis CPU (``INFO cpu``)
   and Redis commands (``INFO commandstats``) per event.
2. **apply**: the queued items go to one idle Celery worker (``--concurrency 1``,
   bench/drain.py): worker CPU (psutil, parent and child), Redis as above,
   PostgreSQL backends' CPU (psutil on the pids pg_stat_activity lists for the
   database), and from ``pg_stat_database`` (read after the worker disconnected,
   which flushes its counters; the bench's own poll queries are subtracted):
   transactions committed, time spent executing statements (``active_time``)
   and rows written, per event. If ``pg_stat_statements`` is preloaded, its
   statement count and execution time per event are printed too; it is not on
   a stock PostgreSQL, and ``active_time`` measures the same time in aggregate.

Then it times PostgreSQL's commit rate on this box (8 connections, one
single-row INSERT per transaction, ``--costs-seconds``) and prints the model:
the rate one host reaches from its CPU per event, the ceilings PostgreSQL
(CPU, commits) and Redis (one thread) put on any number of hosts, and which
one N hosts reach first.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psycopg
import redis

from bench import drain, e2e, load
from bench.figures import ratio
from bench.procs import SECRET, group
from bench.stacks import Payhooks, plain_dsn
from providers.stripe import sign
from transport.queue import EVENTS

# Commands our Lua scripts call inside EVALSHA (transport/queue.py): not round trips of their own.
SCRIPT_INTERNAL = {"lmove", "zadd", "time", "zrangebyscore", "zrem"}
HOSTS = (1, 2, 4, 8)
PGSTAT_IDLE_FLUSH_SECONDS = 11  # PostgreSQL 15 flushes an idle session's counters within 10 s


@dataclass
class RedisCounters:
    cpu: float
    calls: dict[str, int]

    @classmethod
    def read(cls, client: redis.Redis) -> RedisCounters:
        cpu = client.info("cpu")
        stats = client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
        return cls(float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls)

    def since(self, before: RedisCounters, n: int, *, ignore: dict[str, int] | None = None) -> RedisCost:
        calls = {name: count - before.calls.get(name, 0) - (ignore or {}).get(name, 0)
                 for name, count in self.calls.items()}
        calls = {name: count / n for name, count in calls.items() if count > 0}
        return RedisCost((self.cpu - before.cpu) / n * 1000, calls)


@dataclass
class RedisCost:
    cpu_ms: float
    calls: dict[str, float]  # per event

    @property
    def round_trips(self) -> float:
        return sum(count for name, count in self.calls.items() if name not in SCRIPT_INTERNAL)

    def describe(self) -> str:
        return ", ".join(f"{name} {count:.2f}" for name, count in sorted(self.calls.items(), key=lambda kv: -kv[1]))


@dataclass
class CostsReport:
    events: int
    receiver_cpu_ms: float
    ingest_redis: RedisCost
    apply: drain.Drain
    apply_redis: RedisCost
    pg: dict[str, float]  # per event: commits, active_ms, rows written
    statements: dict[str, float] | None  # pg_stat_statements per event, when available
    commit_rate: float  # small transactions per second, 8 connections
    commit_ms: float  # one durable commit, one connection
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def host_rate(self) -> float:
        """Events/s one host of this many cores reaches running receiver and workers, by CPU."""
        return ratio(self.cores * 1000, self.receiver_cpu_ms + self.apply.worker_cpu_ms)

    def ceilings(self) -> dict[str, float]:
        return {
            f"PostgreSQL CPU ({self.cores} cores)": ratio(self.cores * 1000, self.apply.pg_cpu_ms),
            "PostgreSQL commits": ratio(self.commit_rate, self.pg["commits"]),
            "Redis (one thread)": ratio(1000, self.ingest_redis.cpu_ms + self.apply_redis.cpu_ms),
        }


def run(args) -> CostsReport:
    n = args.events
    print(f"costs: {n} events through the receiver alone, then one worker (--concurrency 1) alone", flush=True)
    with group() as processes:
        system = Payhooks(processes, args.web_concurrency, name="costs")
        try:
            system.start(workers=0)
            client = redis.Redis.from_url(system.stack.redis_url)
            statements = _statements_available(system.db)

            # 1. ingest
            bodies, _, _ = e2e.events(n, "costs")
            before, web_before = RedisCounters.read(client), system.web_cpu()
            post = load.post_all(system.url, bodies, lambda body: sign(body, SECRET, int(time.time())),
                                 connections=args.post_connections)
            receiver_cpu_ms = (system.web_cpu() - web_before) / n * 1000
            ingest_redis = RedisCounters.read(client).since(before, n, ignore={"info": 1})
            print(f"  ingest: {post.rps:,.0f} req/s, {post.errors} errors; receiver CPU {receiver_cpu_ms:.2f} ms/event, "
                  f"Redis CPU {ingest_redis.cpu_ms * 1000:.0f} µs/event", flush=True)

            # 2. apply
            client.rename(EVENTS, drain.HOLD)
            system.start_workers(1, 1)
            name = system.db.info.dbname
            with psycopg.connect(plain_dsn(system.stack._admin_url), autocommit=True) as admin:
                if _sessions(admin, name) > 1:
                    # The worker opened sessions at start: let their counters reach pg_stat_database first.
                    time.sleep(PGSTAT_IDLE_FLUSH_SECONDS)
                _reconnect(system, admin, name)
                pg_before, statements_before = _pg_database(admin, name), _statements(system.db, statements)
                counted = system.db = _Counted(system.db)
                before = RedisCounters.read(client)
                marks: dict[str, RedisCounters] = {}
                result = drain.drain(system, client, n, stall=args.stall,
                                     on_done=lambda: marks.setdefault("after", RedisCounters.read(client)))
                apply_redis = marks["after"].since(before, n, ignore={"info": 1, "rename": 1})
                system.stop_workers()
                _reconnect(system, admin, name)  # every session that ran in the window has exited and flushed
                pg_after, statements_after = _pg_database(admin, name), _statements(system.db, statements)
            pg = {
                "commits": (pg_after["xact_commit"] - pg_before["xact_commit"] - counted.queries) / n,
                "active_ms": (pg_after["active_time"] - pg_before["active_time"] - counted.seconds * 1000) / n,
                "rows": (pg_after["rows"] - pg_before["rows"]) / n,
            }
            statements_used = None
            if statements:
                statements_used = {
                    "statements": (statements_after[0] - statements_before[0] - counted.queries) / n,
                    "exec_ms": (statements_after[1] - statements_before[1]) / n,
                }
            print(f"  apply: {result.rate:,.0f} events/s; worker CPU {result.worker_cpu_ms:.2f} ms/event, PostgreSQL "
                  f"CPU {result.pg_cpu_ms:.2f} ms/event, {pg['commits']:.3f} commits/event", flush=True)
            commit_ms = _commit_latency(system.db)
            commit_rate = _commit_rate(system.stack.database_url, args.costs_seconds)
        finally:
            processes.stop()
            system.close()
    return CostsReport(n, receiver_cpu_ms, ingest_redis, result, apply_redis, pg, statements_used,
                       commit_rate, commit_ms)


class _Counted:
    """A connection that counts the statements it sends and the time they take (to subtract them)."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self.connection = connection
        self.queries = 0
        self.seconds = 0.0

    def execute(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.connection.execute(*args, **kwargs)
        finally:
            self.queries += 1
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self.connection.close()


def _reconnect(system: Payhooks, admin: psycopg.Connection, name: str, timeout: float = 10.0) -> None:
    """Close the bench's session and wait until no session of the database is left, then open a new one.

    A backend flushes its counters to pg_stat_database as it exits.
    """
    system.db.close()
    time.sleep(0.05)
    deadline = time.monotonic() + timeout
    while _sessions(admin, name) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    system.db = psycopg.connect(plain_dsn(system.stack.database_url), autocommit=True)


def _sessions(admin: psycopg.Connection, name: str) -> int:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]


def _pg_database(admin: psycopg.Connection, name: str) -> dict[str, float]:
    row = admin.execute(
        "SELECT xact_commit, active_time, tup_inserted + tup_updated + tup_deleted "
        "FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
    return {"xact_commit": row[0], "active_time": row[1] or 0.0, "rows": row[2]}


def _statements_available(db) -> bool:
    loaded = db.execute("SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'").fetchone()
    if not loaded or "pg_stat_statements" not in loaded[0]:
        return False
    db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return True


def _statements(db, available: bool) -> tuple[int, float]:
    """Statements run in this database and their execution time, so far (updated as each ends)."""
    if not available:
        return 0, 0.0
    row = db.execute(
        "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()
    return int(row[0]), float(row[1])


def _commit_latency(db, commits: int = 50) -> float:
    """Milliseconds per durable commit of one small row, one connection."""
    db.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (id bigserial PRIMARY KEY, note text)")
    start = time.perf_counter()
    for _ in range(commits):
        db.execute("INSERT INTO bench_commit_probe (note) VALUES ('x')")
    return (time.perf_counter() - start) / commits * 1000


def _commit_rate(database_url: str, seconds: float, connections: int = 8) -> float:
    """Small transactions committed per second by `connections` connections at once."""
    counts = [0] * connections
    deadline = time.perf_counter() + seconds

    def loop(index: int) -> None:
        with psycopg.connect(plain_dsn(database_url), autocommit=True) as db:
            while time.perf_counter() < deadline:
                db.execute("INSERT INTO bench_commit_probe (note) VALUES ('x')")
                counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def print_report(report: CostsReport, hot_user_rate: float | None = None, hot_workers: int = 0) -> None:
    apply, pg = report.apply, report.pg
    print(f"\ncosts — per event, {report.events:,} events: receiver alone, then one worker (--concurrency 1) alone")
    print(f"  receiver CPU           {report.receiver_cpu_ms:6.2f} ms   (gunicorn master + workers, psutil)")
    print(f"  worker CPU (Python)    {apply.worker_cpu_ms:6.2f} ms   (Celery parent + child, psutil; "
          f"drained at {apply.rate:,.0f} events/s)")
    print(f"  PostgreSQL CPU         {apply.pg_cpu_ms:6.2f} ms   (backends of the database, psutil)")
    print(f"  PostgreSQL active time {pg['active_ms']:6.2f} ms   (pg_stat_database.active_time: statements "
          f"incl. commit waits)")
    print(f"  PostgreSQL commits     {pg['commits']:6.3f}      ({ratio(1, pg['commits']):.0f} "
          f"events per transaction); rows written {pg['rows']:.1f}")
    if report.statements:
        print(f"  pg_stat_statements     {report.statements['statements']:6.2f} statements, "
              f"{report.statements['exec_ms']:.2f} ms executing")
    else:
        print("  pg_stat_statements     not preloaded on this server (active_time above is the aggregate)")
    print(f"  Redis CPU              {(report.ingest_redis.cpu_ms + report.apply_redis.cpu_ms) * 1000:6.0f} µs   "
          f"(INFO cpu: ingest {report.ingest_redis.cpu_ms * 1000:.0f} + apply {report.apply_redis.cpu_ms * 1000:.0f})")
    print(f"  Redis round trips      {report.ingest_redis.round_trips + report.apply_redis.round_trips:6.2f}      "
          f"(ingest: {report.ingest_redis.describe()}; apply: {report.apply_redis.describe()}; "
          f"{', '.join(sorted(SCRIPT_INTERNAL))} run inside EVALSHA)")
    print(f"  PostgreSQL here: one durable commit {report.commit_ms:.2f} ms on one connection; "
          f"{report.commit_rate:,.0f} commits/s on 8")
    print_model(report, hot_user_rate, hot_workers)


def model(report: CostsReport) -> tuple[float, dict[str, float]]:
    return report.host_rate, report.ceilings()


def print_model(report: CostsReport, hot_user_rate: float | None, hot_workers: int) -> None:
    apply, cores = report.apply, report.cores
    host, ceilings = model(report)
    per_commit = ratio(1, report.pg["commits"])
    redis_us = (report.ingest_redis.cpu_ms + report.apply_redis.cpu_ms) * 1000
    print(f"\nmodel of N hosts — each host {cores} cores running receiver + workers; one PostgreSQL and one Redis")
    print(f"  one host:            {cores} × 1000 / ({report.receiver_cpu_ms:.2f} + {apply.worker_cpu_ms:.2f} ms) "
          f"= {host:,.0f} events/s")
    print(f"  PostgreSQL CPU:      {cores} × 1000 / {apply.pg_cpu_ms:.2f} ms = "
          f"{ceilings[f'PostgreSQL CPU ({cores} cores)']:,.0f} events/s (a {cores}-core PostgreSQL)")
    print(f"  PostgreSQL commits:  {report.commit_rate:,.0f} commits/s × {per_commit:.0f} events per commit = "
          f"{ceilings['PostgreSQL commits']:,.0f} events/s")
    print(f"  Redis:               1,000,000 / {redis_us:.0f} µs = {ceilings['Redis (one thread)']:,.0f} events/s")
    if hot_user_rate:
        print(f"  one hot user:        {hot_user_rate:,.0f} events/s measured (scale: {hot_workers} workers draining "
              f"one user's events): every batch holding that user's events takes its balance row lock, so those "
              f"batches commit one after another, however many hosts there are")
    else:
        print("  one hot user:        run `scale` (or `all`) for the rate one balance row allows")
    first_name, first = min(ceilings.items(), key=lambda kv: kv[1])
    for hosts in HOSTS:
        reach = min(hosts * host, first)
        limit = "the hosts' CPU" if hosts * host < first else first_name
        print(f"  N = {hosts}: min({hosts} × {host:,.0f}, {first:,.0f}) = {reach:,.0f} events/s — limited by {limit}")
    print(f"  first to saturate: {first_name}, at N ≈ {first / host:.1f} hosts")


def summary(report: CostsReport) -> list[tuple[str, str, str]]:
    host, ceilings = model(report)
    first_name, first = min(ceilings.items(), key=lambda kv: kv[1])
    redis_us = (report.ingest_redis.cpu_ms + report.apply_redis.cpu_ms) * 1000
    return [
        ("per event: receiver / worker / PostgreSQL CPU",
         f"{report.receiver_cpu_ms:.2f} / {report.apply.worker_cpu_ms:.2f} / {report.apply.pg_cpu_ms:.2f} ms", ""),
        ("per event: PostgreSQL commits, Redis CPU, Redis round trips",
         f"{report.pg['commits']:.3f}, {redis_us:.0f} µs, "
         f"{report.ingest_redis.round_trips + report.apply_redis.round_trips:.2f}", ""),
        ("model: one host / first ceiling", f"{host:,.0f} / {first:,.0f} events/s ({first_name})", ""),
    ]
