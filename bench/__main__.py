"""python -m bench [receiver|steps|e2e|deliveries|latency|scale|costs|attack|aof|soak|all] [options]   (make bench BENCH_ARGS="...")

receiver: payhooks' receiver vs its floor (bare Flask: verify + LPUSH), alternated.
steps:    a delivery taken apart: CPU µs of each step of the receiver, in one process.
e2e:      payhooks end to end (first POST → last grant) vs the synchronous ORM peer, alternated;
          --prefill N adds payhooks on a database of N rows per table, --hot-user one user for all.
deliveries: worker CPU per outbound webhook delivered (--profile: where it goes); not in all.
latency:  POST-to-grant p50/p90/p99 at a trickle and at half of the measured capacity.
scale:    1 → 2 → 4 worker processes draining the same queue.
costs:    per-event CPU of receiver, worker, PostgreSQL and Redis; the model of N hosts.
aof:      the receiver into Redis with appendfsync everysec vs always, alternated.
attack:   valid deliveries beside slow and idle clients, per gunicorn worker model.
soak:     the chaos soak (make soak): N events delivered 1–3 times in shuffled order while
          workers, the receiver, Redis and PostgreSQL connections are killed at random.
all:      receiver, steps, e2e --hot-user --prefill 1000000, latency, scale, costs, and a summary table (the default).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COMMANDS = ("receiver", "steps", "e2e", "deliveries", "latency", "scale", "costs", "attack", "aof", "soak", "all")
ALL_PREFILL = 1_000_000
MAX_SECONDS = 240  # one signature must stay inside the 300 s tolerance for a whole run


def _counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(","))
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("positive counts, comma-separated")
    return counts


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=COMMANDS, default="all")
    parser.add_argument("--web-concurrency", type=int, default=2, metavar="N",
                        help="gunicorn worker processes, receiver and floor alike (default 2)")
    parser.add_argument("--worker-class", choices=("sync", "gevent", "gthread"), default=None,
                        help="receiver: gunicorn worker class for receiver and floor alike "
                             "(default: receiver/gunicorn_conf.py's)")
    parser.add_argument("--front", choices=("nginx",), default=None,
                        help="receiver: an nginx buffering requests in front of each, receiver and floor alike")
    recv = parser.add_argument_group("receiver")
    recv.add_argument("--seconds", type=float, default=8.0, help="length of each run (default 8)")
    recv.add_argument("--warmup", type=float, default=2.0, help="warm-up per server (default 2)")
    recv.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    recv.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    recv.add_argument("--paypal", action="store_true",
                      help="PayPal deliveries against Stripe's to the same receiver, instead of receiver vs floor")
    recv.add_argument("--light-connections", type=int, default=8,
                      help="then the same rounds at this many connections, for p99 (default 8; 0: not)")
    recv.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                      help="load generator: wrk if on the PATH (auto), or the Python client")
    deliveries = parser.add_argument_group("deliveries")
    deliveries.add_argument("--profile", action="store_true", help="also profile the sending (cProfile)")
    steps = parser.add_argument_group("steps")
    steps.add_argument("--step-iterations", type=int, default=5000, help="calls per step and loop (default 5000)")
    attack = parser.add_argument_group("attack")
    attack.add_argument("--models", default="sync,gthread,gevent,nginx",
                        help="worker models to attack, comma-separated (default: all four)")
    attack.add_argument("--attackers", type=int, default=64, help="hostile connections (default 64)")
    attack.add_argument("--probes", type=int, default=200, help="valid deliveries per phase (default 200)")
    attack.add_argument("--threads", type=int, default=32, help="gthread threads per worker (default 32)")
    attack.add_argument("--deadline", type=int, default=10,
                        help="nginx client_header/body_timeout in seconds (default 10)")
    attack.add_argument("--settle", type=float, default=3.0,
                        help="seconds between opening the hostile connections and probing (default 3)")
    e2e = parser.add_argument_group("e2e")
    e2e.add_argument("--events", type=int, default=2000, help="events to post (default 2000)")
    e2e.add_argument("--post-connections", type=int, default=16, help="posting connections (default 16)")
    e2e.add_argument("--worker-concurrency", type=int, default=2, help="celery --concurrency (default 2)")
    e2e.add_argument("--prefill", type=int, default=None, metavar="N",
                     help="also run payhooks on a database pre-filled with N rows per table "
                          f"(all: {ALL_PREFILL:,} unless given; 0: not)")
    e2e.add_argument("--hot-user", action="store_true",
                     help="also run payhooks with every event of a round for one user (all: always)")
    e2e.add_argument("--stall", type=float, default=60.0,
                     help="give up when no event was processed for this long (default 60 s; "
                          "900 s after the last POST at most)")
    latency = parser.add_argument_group("latency")
    latency.add_argument("--trickle-rate", type=float, default=5.0, help="events/s of the trickle (default 5)")
    latency.add_argument("--latency-seconds", type=float, default=20.0,
                         help="length of each paced phase (default 20)")
    parser.add_argument("--scale-workers", type=_counts, default=(1, 2, 4), metavar="1,2,4",
                        help="scale: worker process counts to compare (default 1,2,4)")
    parser.add_argument("--costs-seconds", type=float, default=3.0,
                        help="costs: how long to time PostgreSQL's commit rate (default 3)")
    soak = parser.add_argument_group("soak")
    soak.add_argument("--soak-events", type=int, default=10_000, help="events (default 10000)")
    soak.add_argument("--seed", type=int, default=1, help="workload, order and fault seed (default 1)")
    soak.add_argument("--soak-workers", type=int, default=2, help="Celery worker instances (default 2)")
    soak.add_argument("--soak-concurrency", type=int, default=1, help="prefork children each (default 1)")
    soak.add_argument("--senders", type=int, default=8, help="concurrent senders (default 8)")
    soak.add_argument("--rate", type=float, default=200.0,
                      help="deliveries/s, all senders together; 0 = as fast as answered (default 200)")
    soak.add_argument("--fault-every", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"),
                      help="seconds between faults, drawn uniformly (default 2 6)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS or not 0 <= args.warmup <= MAX_SECONDS:
        parser.error(f"--seconds and --warmup must be within (0, {MAX_SECONDS}]")
    counts = ("rounds", "connections", "step_iterations", "events", "post_connections", "worker_concurrency",
              "web_concurrency", "soak_events", "soak_workers", "soak_concurrency", "senders")
    if args.command == "all":
        args.hot_user = True
        args.prefill = ALL_PREFILL if args.prefill is None else args.prefill
    args.prefill = args.prefill or 0
    if (any(getattr(args, name) < 1 for name in counts) or args.stall <= 0 or args.prefill < 0
            or args.light_connections < 0):
        parser.error("counts, and --stall, must be positive")
    return args


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = " " + line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores{model}, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def revision() -> str:
    """The commit measured, and whether tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return f"commit {commit or '?'}{' + uncommitted changes' if dirty else ''}"


def print_receiver(report) -> None:
    print(f"\nreceiver — {report.worker_class} workers, {report.generator}, {report.connections} connections, "
          f"{report.rounds} rounds × {report.seconds:g} s, medians; body {report.body_bytes:,} B")
    print(f"  {'':<34}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}")
    labels = (("Stripe deliveries (HMAC)", "PayPal deliveries (RSA)") if report.mode == "paypal"
              else ("floor (Flask: verify + LPUSH)", "payhooks receiver (Procfile web)"))
    for label, target in zip(labels, (report.floor, report.receiver), strict=True):
        print(f"  {label:<34}{target.median('rps'):>8,.0f}{target.median('p50_ms'):>9.2f}"
              f"{target.median('p99_ms'):>9.2f}{target.median('cpu_us'):>12,.0f}")
    rounds = ", ".join(f"{ratio:.0%}" for ratio in report.round_ratios)
    if report.mode == "paypal":
        print(f"  paypal / stripe = {report.ratio:.0%}   (req/s medians; per round: {rounds})")
    else:
        print(f"  receiver / floor = {report.ratio:.0%}   (req/s medians; per round: {rounds}; "
              f"DESIGN.md: naive send_task ≈ 55%, goal ≥ 90%)")
    cpu = report.floor.median("cpu_us") / report.receiver.median("cpu_us")
    ratio = "stripe / paypal" if report.mode == "paypal" else "floor / receiver"
    print(f"  {ratio} gunicorn CPU per request = {cpu:.0%}   (the same ratio, "
          f"less sensitive to other load on the machine)")
    if report.light_connections:
        print(f"  at {report.light_connections} connections: p50 / p99 ms, receiver "
              f"{report.receiver.median('p50_ms', light=True):.2f} / {report.receiver.median('p99_ms', light=True):.2f}, "
              f"floor {report.floor.median('p50_ms', light=True):.2f} / {report.floor.median('p99_ms', light=True):.2f} "
              f"(goal: receiver p99 ≤ 15 ms)")
    if report.errors:
        print(f"  WARNING: {report.errors} failed requests")


def print_summary(args, started: datetime.datetime, rows: list[tuple[str, str, str]]) -> None:
    """One Markdown table of the headline figures, to paste into BENCHMARKS.md."""
    minutes = (datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60
    print(f"\nsummary — `python -m bench {' '.join(sys.argv[1:]) or 'all'}`, {started:%Y-%m-%d %H:%M} UTC, "
          f"{revision()}, {machine()}, {minutes:.1f} min")
    print("\n| figure | value | goal |\n|---|---|---|")
    for figure, value, goal in rows:
        print(f"| {figure} | {value} | {goal} |")


def _interrupt(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops the processes it started."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    from bench import aof, attack, costs, deliveries, e2e, latency, receiver, scale, soak, steps

    started = datetime.datetime.now(datetime.UTC)
    print(f"payhooks bench {args.command} — {started:%Y-%m-%d %H:%M} UTC — {revision()} — {machine()}",
          flush=True)
    receiver_report = steps_report = deliveries_report = e2e_report = latency_report = scale_report = costs_report = None
    attack_reports = []
    aof_report = soak_report = None
    broken: list[str] = []

    def attempt(name: str, run):
        """Run one part; one that fails is reported and the others still run and print."""
        try:
            return run()
        except Exception:
            traceback.print_exc()
            print(f"bench {name} failed (traceback above); going on with the rest", file=sys.stderr, flush=True)
            broken.append(name)
            return None

    try:
        if args.command == "attack":
            attack_reports = attack.run(args)
        if args.command == "aof":
            aof_report = aof.run(args)
        if args.command == "soak":
            soak_report = soak.run(soak.SoakOptions(
                events=args.soak_events, seed=args.seed, senders=args.senders, workers=args.soak_workers,
                concurrency=args.soak_concurrency, web_concurrency=args.web_concurrency, rate=args.rate,
                fault_interval=tuple(args.fault_every)))
        if args.command in ("receiver", "all"):
            receiver_report = attempt("receiver", lambda: receiver.run(args))
        if args.command in ("steps", "all"):
            steps_report = attempt("steps", lambda: steps.run(args))
        if args.command == "deliveries":
            deliveries_report = attempt("deliveries", lambda: deliveries.run(args))
        if args.command in ("e2e", "all"):
            e2e_report = attempt("e2e", lambda: e2e.run(args))
        if args.command in ("latency", "all"):
            capacity = e2e_report.series["payhooks"].median("rate") if e2e_report else None
            latency_report = attempt("latency", lambda: latency.run(args, capacity))
        if args.command in ("scale", "all"):
            scale_report = attempt("scale", lambda: scale.run(args))
        if args.command in ("costs", "all"):
            costs_report = attempt("costs", lambda: costs.run(args))
    except KeyboardInterrupt:
        print("interrupted; the processes the bench started are stopped", file=sys.stderr)
        return 130

    if receiver_report:
        print_receiver(receiver_report)
    if steps_report:
        steps.print_report(steps_report)
    if deliveries_report:
        deliveries.print_report(deliveries_report)
    if e2e_report:
        e2e.print_report(e2e_report)
    if latency_report:
        latency.print_report(latency_report)
    if scale_report:
        scale.print_report(scale_report)
    if costs_report:
        costs.print_report(costs_report, scale_report.hot_rate if scale_report else None,
                           max(scale_report.counts) if scale_report else 0)
    rows = [row for module, report in ((receiver, receiver_report), (steps, steps_report), (deliveries, deliveries_report), (e2e, e2e_report), (latency, latency_report),
                                       (scale, scale_report), (costs, costs_report)) if report
            for row in module.summary(report)]
    if rows:
        print_summary(args, started, rows)
    if attack_reports:
        attack.print_reports(attack_reports)
    if aof_report:
        aof.print_report(aof_report)
    if soak_report:
        soak.print_report(soak_report)
    if broken:
        print(f"\nFAILED: {', '.join(broken)} (tracebacks above)")
    failed = (broken or (receiver_report and receiver_report.errors) or (e2e_report and not e2e_report.ok)
              or (aof_report and aof_report.errors) or (soak_report and not soak_report.ok))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
