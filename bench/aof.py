"""What `appendfsync always` costs the receiver, against `everysec`, in the same run.

A: the receiver (Procfile web) pushing into a Redis with AOF on, `appendfsync everysec`,
   as docker-compose and the embedded Redis run it: the write reaches the kernel
   before Redis answers, so a killed redis-server loses nothing; a host that goes
   down loses at most the last second.
B: the same receiver pushing into a Redis with `appendfsync always`: the write is
   on disk before Redis answers. Redis fsyncs once per turn of its event loop, so
   pushes that arrive together share one fsync.

Each Redis keeps its AOF in a directory on the same filesystem as the system's
temporary directory; the bench first times a bare fsync there, for context.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import load
from bench.procs import BIN, SECRET, group, service_env
from bench.receiver import Target, alternate
from infra.embedded import EmbeddedRedis, free_port
from tests.support import stripe_events
from transport.queue import EVENTS


@dataclass
class AofReport:
    generator: str
    connections: int
    rounds: int
    seconds: float
    fsync_ms: float
    everysec: Target
    always: Target

    @property
    def ratio(self) -> float:
        return self.always.median("rps") / self.everysec.median("rps")

    @property
    def round_ratios(self) -> list[float]:
        return [b.rps / a.rps for a, b in zip(self.everysec.runs, self.always.runs, strict=True)]

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.everysec.runs + self.always.runs)


def run(args) -> AofReport:
    generator = load.choose(args.generator)
    print(f"aof: load generator {load.describe(generator)}, {args.connections} connections, "
          f"WEB_CONCURRENCY={args.web_concurrency}", flush=True)
    body = stripe_events.encode(stripe_events.completed_event(user_id="bench_user", credits="100"))
    targets = {policy: Target(f"{policy}", EVENTS, free_port()) for policy in ("everysec", "always")}
    with tempfile.TemporaryDirectory(prefix="payhooks-bench-") as tmp:
        fsync_ms = fsync_latency(Path(tmp))
        brokers = [EmbeddedRedis(Path(tmp) / policy, appendfsync=policy) for policy in targets]
        try:
            with group() as processes:
                for broker, target in zip(brokers, targets.values(), strict=True):
                    broker.start()
                    target.redis = redis.Redis.from_url(broker.url)
                    env = service_env({
                        "REDIS_URL": broker.url,
                        "STRIPE_WEBHOOK_SECRET": SECRET,
                        "WEB_CONCURRENCY": str(args.web_concurrency),
                        "PORT": str(target.port),
                    })
                    argv = [str(BIN / "gunicorn"), "--config", "python:receiver.gunicorn_conf",
                            "receiver.wsgi:app"]
                    target.pgid = processes.http_server(f"receiver-{target.name}", argv, env,
                                                        target.port).proc.pid
                alternate(args, generator, body, targets["everysec"], targets["always"])
        finally:
            for broker in brokers:
                broker.stop()
    return AofReport(generator=load.describe(generator), connections=args.connections,
                     rounds=args.rounds, seconds=args.seconds, fsync_ms=fsync_ms,
                     everysec=targets["everysec"], always=targets["always"])


def fsync_latency(directory: Path, writes: int = 50) -> float:
    """The median time of one small write + fsync in `directory`, in milliseconds."""
    path = directory / "fsync-probe"
    timings = []
    with open(path, "ab") as probe:
        for _ in range(writes):
            started = time.perf_counter()
            probe.write(b"x" * 512)
            probe.flush()
            os.fsync(probe.fileno())
            timings.append((time.perf_counter() - started) * 1000)
    path.unlink()
    return statistics.median(timings)


def print_report(report: AofReport) -> None:
    print(f"\naof — receiver into Redis everysec vs always, {report.generator}, "
          f"{report.connections} connections, {report.rounds} rounds × {report.seconds:g} s, medians; "
          f"one write + fsync takes {report.fsync_ms:.2f} ms on this disk")
    print(f"  {'':<34}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}")
    for label, target in (("appendfsync everysec (compose)", report.everysec),
                          ("appendfsync always", report.always)):
        print(f"  {label:<34}{target.median('rps'):>8,.0f}{target.median('p50_ms'):>9.2f}"
              f"{target.median('p99_ms'):>9.2f}{target.median('cpu_us'):>12,.0f}")
    rounds = ", ".join(f"{ratio:.0%}" for ratio in report.round_ratios)
    print(f"  always / everysec = {report.ratio:.0%}   (req/s medians; per round: {rounds})")
    if report.errors:
        print(f"  WARNING: {report.errors} failed requests")
