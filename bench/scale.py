"""Scale out: 1, 2, 4 worker processes draining the same queue into the same PostgreSQL.

Each worker process is a Celery worker of its own, as the Procfile's ``worker``
runs it with ``WORKER_CONCURRENCY=1`` (a parent and one pool child holding one
batch consumer). For each count the workers are started, ``--events`` items
are released to them (bench/drain.py) and timed to the last grant, and the
workers are stopped; with the most workers, a second queue of ``--events``
items all for one user (one balance row, one lock) is drained too. Rounds alternate the order (1 2 4, 4 2 1, ...); medians.
On one 2-core box the workers share the cores with PostgreSQL and Redis, so
past two processes the figure shows the box saturating, not the design.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import redis

from bench import drain
from bench.figures import ratio
from bench.procs import group
from bench.stacks import Payhooks


@dataclass
class ScaleReport:
    events: int
    counts: tuple[int, ...]
    drains: dict[int, list[drain.Drain]] = field(default_factory=dict)
    hot: list[drain.Drain] = field(default_factory=list)  # the most workers, every event for one user

    @property
    def hot_rate(self) -> float:
        return statistics.median(d.rate for d in self.hot)

    def median(self, count: int, attribute: str) -> float:
        return statistics.median(getattr(d, attribute) for d in self.drains[count])


def run(args) -> ScaleReport:
    counts = args.scale_workers
    print(f"scale: {args.events} events drained by {', '.join(map(str, counts))} Celery workers "
          f"(--concurrency 1 each), {args.rounds} rounds", flush=True)
    report = ScaleReport(args.events, counts, {count: [] for count in counts})
    with group() as processes:
        system = Payhooks(processes, args.web_concurrency, name="scale")
        try:
            system.start(workers=0, receiver=False)
            client = redis.Redis.from_url(system.stack.redis_url)
            for number in range(args.rounds):
                for count in counts if number % 2 == 0 else counts[::-1]:
                    system.start_workers(count, 1)
                    drain.fill(client, args.events)
                    report.drains[count].append(_show(f"{count} worker{'s' if count > 1 else ''}", drain.drain(
                        system, client, args.events, stall=args.stall)))
                    if count == max(counts):
                        drain.fill(client, args.events, hot=True)
                        report.hot.append(_show(f"{count} workers, one user", drain.drain(
                            system, client, args.events, stall=args.stall)))
                    system.stop_workers()
        finally:
            processes.stop()
            system.close()
    return report


def _show(label: str, result: drain.Drain) -> drain.Drain:
    print(f"  {label:<20} {result.rate:8,.0f} events/s  ({result.granted:,} in {result.seconds:.2f} s, first grant "
          f"after {result.first_ms:.0f} ms)  worker CPU {result.worker_cpu_ms:5.2f} ms/event  "
          f"PostgreSQL CPU {result.pg_cpu_ms:5.2f} ms/event", flush=True)
    return result


def print_report(report: ScaleReport) -> None:
    one = report.median(report.counts[0], "rate")
    print(f"\nscale — {report.events:,} queued events drained, Celery workers of --concurrency 1, medians of "
          f"{len(report.drains[report.counts[0]])} alternated rounds")
    print(f"  {'workers':<10}{'events/s':>10}{f'vs {report.counts[0]}':>7}{'worker CPU ms/ev':>18}{'PG CPU ms/ev':>14}")
    for count in report.counts:
        print(f"  {count:<10}{report.median(count, 'rate'):>10,.0f}{ratio(report.median(count, 'rate'), one):>7.2f}"
              f"{report.median(count, 'worker_cpu_ms'):>18.2f}{report.median(count, 'pg_cpu_ms'):>14.2f}")
    top = max(report.counts)
    print(f"  {f'{top}, one user':<10}{report.hot_rate:>10,.0f}{ratio(report.hot_rate, one):>7.2f}"
          f"{statistics.median(d.worker_cpu_ms for d in report.hot):>18.2f}"
          f"{statistics.median(d.pg_cpu_ms for d in report.hot):>14.2f}   (every event for one balance row)")


def summary(report: ScaleReport) -> list[tuple[str, str, str]]:
    rates = " → ".join(f"{report.median(count, 'rate'):,.0f}" for count in report.counts)
    counts = " → ".join(map(str, report.counts))
    return [(f"drain, {counts} worker processes (events/s)", rates, "reported"),
            (f"drain, {max(report.counts)} worker processes, one user (events/s)", f"{report.hot_rate:,.0f}", "")]
