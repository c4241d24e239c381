"""Slow and idle clients against the receiver: do valid deliveries still answer promptly?

For each worker model, start the receiver (gunicorn, WEB_CONCURRENCY processes,
the receiver's own config with the worker class overridden), then:

1. quiet: send N signed deliveries, 4 at a time, each on a new connection;
2. attacked: open C hostile connections (tests/support/slow_clients.py: bodies
   trickled at 1 byte/s, idle connections, headers trickled at 1 byte/s — a
   new one whenever the server cuts one), wait until all are open, then send
   the same N deliveries again.

It prints p50/p99/max of the deliveries in both phases, how many failed
(a 10 s client timeout), and how long the server let each kind of hostile
connection live. The models:

  sync      gunicorn sync workers (the old Procfile web)
  gthread   gunicorn gthread workers, --threads THREADS each
  gevent    gunicorn gevent workers (the Procfile web now)
  nginx     nginx buffering requests (client_body/header_timeout) in front of sync workers

Figures only, never pass/fail: tests/fault/test_slow_clients.py holds the bar.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BIN, SECRET, group, service_env
from infra.embedded import EmbeddedRedis, free_port
from providers.stripe import sign
from tests.support import slow_clients, stripe_events

MODELS = ("sync", "gthread", "gevent", "nginx")


@dataclass
class AttackReport:
    model: str
    quiet: slow_clients.ProbeResult
    attacked: slow_clients.ProbeResult
    cuts: dict[str, list[float]]  # mode -> seconds each hostile connection lived
    answers: dict[str, dict]  # mode -> {status: count}


def _delivery() -> tuple[bytes, dict[str, str]]:
    body = stripe_events.encode(stripe_events.completed_event(user_id="bench_user", credits="100"))
    return body, {"Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET, int(time.time()))}


def nginx_conf(directory: Path, listen: int, upstream: int, timeout: int) -> Path:
    """nginx buffering whole requests (client_header/body_timeout `timeout`) in front of one upstream."""
    conf = directory / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        worker_processes 1;
        pid {directory}/nginx.pid;
        error_log {directory}/error.log warn;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            client_body_temp_path {directory}/body;
            proxy_temp_path {directory}/proxy;
            client_header_timeout {timeout}s;
            client_body_timeout {timeout}s;
            client_max_body_size 1m;
            upstream receiver {{ server 127.0.0.1:{upstream}; }}
            server {{
                listen 127.0.0.1:{listen};
                location / {{
                    proxy_pass http://receiver;
                    proxy_request_buffering on;
                    proxy_http_version 1.1;
                    proxy_set_header Host $host;
                }}
            }}
        }}
    """))
    return conf


def run_model(args, model: str, broker_url: str, tmp: Path) -> AttackReport:
    port = free_port()
    env = service_env({
        "REDIS_URL": broker_url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "WEB_CONCURRENCY": str(args.web_concurrency),
    })
    worker_class = "sync" if model == "nginx" else model
    argv = [str(BIN / "gunicorn"), "--config", "python:receiver.gunicorn_conf", "--worker-class", worker_class]
    if model == "gthread":
        argv += ["--threads", str(args.threads)]
    argv.append("receiver.wsgi:app")
    with group() as processes:
        upstream = free_port() if model == "nginx" else port
        processes.http_server(f"receiver-{model}", argv, {**env, "PORT": str(upstream)}, upstream)
        if model == "nginx":
            if not shutil.which("nginx"):
                raise SystemExit("model nginx: nginx is not on the PATH (apt-get install -y nginx-light)")
            directory = tmp / "nginx"
            directory.mkdir(exist_ok=True)
            conf = nginx_conf(directory, port, upstream, args.deadline)
            processes.http_server("nginx", ["nginx", "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
                                  env, port)
        url = f"http://127.0.0.1:{port}/webhooks/stripe"
        quiet = slow_clients.probe(url, _delivery, count=args.probes)
        print(f"  {model:<8} quiet     {quiet.summary()}", flush=True)
        with slow_clients.SlowClients("127.0.0.1", port, connections=args.attackers) as attackers:
            try:
                attackers.wait_until_open(15)
            except AssertionError as exc:
                print(f"  {model:<8} {exc}", flush=True)
            time.sleep(args.settle)
            attacked = slow_clients.probe(url, _delivery, count=args.probes)
            print(f"  {model:<8} attacked  {attacked.summary()}", flush=True)
            time.sleep(max(0.0, args.deadline + 3 - args.settle))
            cuts = {mode: sorted(c.lived for c in attackers.cuts_of(mode)) for mode in slow_clients.MODES}
            answers = {}
            for mode in slow_clients.MODES:
                counts: dict = {}
                for cut in attackers.cuts_of(mode):
                    counts[cut.status] = counts.get(cut.status, 0) + 1
                answers[mode] = counts
    return AttackReport(model, quiet, attacked, cuts, answers)


def run(args) -> list[AttackReport]:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; choose from {MODELS}")
    print(f"attack: {args.attackers} hostile connections, {args.probes} deliveries per phase, "
          f"WEB_CONCURRENCY={args.web_concurrency}, models {models}", flush=True)
    reports = []
    with tempfile.TemporaryDirectory(prefix="payhooks-attack-") as tmp:
        broker = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        try:
            broker.start()
            for model in models:
                reports.append(run_model(args, model, broker.url, Path(tmp)))
                subprocess.run([str(BIN / "redis-cli"), "-u", broker.url, "flushall"], capture_output=True)
        finally:
            broker.stop()
    return reports


def print_reports(reports: list[AttackReport]) -> None:
    print("\nattack — valid deliveries (4 at a time, new connection each), quiet vs under attack")
    print(f"  {'model':<8}{'quiet p50':>10}{'p99':>8}{'attacked p50':>14}{'p99':>8}{'max':>8}{'failed':>8}"
          "   hostile connections: median lifetime (answers)")
    for r in reports:
        lived = "; ".join(
            f"{mode} {_median(r.cuts[mode])} ({', '.join(f'{k}:{v}' for k, v in r.answers[mode].items()) or 'none cut'})"
            for mode in slow_clients.MODES
        )
        print(f"  {r.model:<8}{r.quiet.p50 * 1000:>8.0f}ms{r.quiet.p99 * 1000:>6.0f}ms"
              f"{r.attacked.p50 * 1000:>12.0f}ms{r.attacked.p99 * 1000:>6.0f}ms"
              f"{max(r.attacked.latencies, default=float('inf')) * 1000:>6.0f}ms"
              f"{len(r.attacked.failures):>8}   {lived}")


def _median(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{values[len(values) // 2]:.1f}s"
