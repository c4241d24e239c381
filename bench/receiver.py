"""Receiver throughput: payhooks' receiver against its floor, measured in the same run.

A: the receiver exactly as the Procfile runs it
   (gunicorn --config python:receiver.gunicorn_conf receiver.wsgi:app, WEB_CONCURRENCY=2).
B: the floor, bench/floor_app.py: verify the signature, LPUSH the raw body, answer 200 JSON;
   gunicorn with the same config file, so the same worker count, class and keep-alive.

--worker-class overrides the class for both (sync, to compare with the old Procfile);
--front nginx puts an nginx of its own in front of each (the buffering-proxy
alternative to a non-blocking worker class; CPU per request then counts gunicorn only).

--paypal measures the receiver against itself instead: Stripe deliveries
(/webhooks/stripe, HMAC) vs PayPal deliveries (/webhooks/paypal, RSA with the
signing certificate cached after the first delivery) to the same gunicorn.
The certificate is served once by an in-process fake PayPal; PAYPAL_CA_FILE
trusts its test root. The Python load generator sends PayPal's five headers.

Both push into one private redis-server that nothing consumes; the lists are
emptied before every run. After a warm-up of each, A and B alternate (A B, B A,
A B, ...) and the medians are compared. Each run re-signs the body with the
current time, so it stays inside the 300 s tolerance.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import load
from bench.attack import nginx_conf
from bench.procs import BIN, SECRET, cpu_seconds, group, service_env
from infra.embedded import EmbeddedRedis, free_port
from providers.stripe import sign
from tests.support import stripe_events
from transport.queue import EVENTS

FLOOR_QUEUE = "floor"


@dataclass
class Target:
    name: str
    queue: str
    port: int
    pgid: int = 0  # gunicorn's process group: master and workers
    redis: redis.Redis | None = None  # where it pushes; emptied before and after every run
    runs: list[load.LoadResult] = field(default_factory=list)
    light: list[load.LoadResult] = field(default_factory=list)  # at --light-connections, for p99
    cpu_us: list[float] = field(default_factory=list)  # gunicorn CPU time per answered request
    path: str = "/webhooks/stripe"
    body: bytes = b""
    signer: Callable[[bytes], str | dict[str, str]] | None = None  # headers for a body, signed now

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def median(self, attribute: str, *, light: bool = False) -> float:
        if attribute == "cpu_us":
            return statistics.median(self.cpu_us)
        return statistics.median(getattr(run, attribute) for run in (self.light if light else self.runs))


@dataclass
class ReceiverReport:
    worker_class: str
    generator: str
    body_bytes: int
    connections: int
    rounds: int
    seconds: float
    floor: Target
    receiver: Target
    mode: str = "floor"  # or "paypal": floor is the receiver's Stripe route, receiver its PayPal route
    light_connections: int = 0  # the p99 pass at few connections (0: not run)

    @property
    def ratio(self) -> float:
        return self.receiver.median("rps") / self.floor.median("rps")

    @property
    def round_ratios(self) -> list[float]:
        return [r.rps / f.rps for r, f in zip(self.receiver.runs, self.floor.runs, strict=True)]

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.floor.runs + self.receiver.runs)


def run(args) -> ReceiverReport:
    if getattr(args, "paypal", False):
        return run_paypal(args)
    generator = load.choose(args.generator)
    worker_class = args.worker_class or "the config's"
    front = f", behind {args.front}" if args.front else ""
    print(f"receiver: load generator {load.describe(generator)}, {args.connections} connections, "
          f"WEB_CONCURRENCY={args.web_concurrency}, {worker_class} worker class{front}", flush=True)
    body = stripe_events.encode(stripe_events.completed_event(user_id="bench_user", credits="100"))
    floor = Target("floor", FLOOR_QUEUE, free_port())
    receiver = Target("receiver", EVENTS, free_port())
    with tempfile.TemporaryDirectory(prefix="payhooks-bench-") as tmp:
        broker = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        try:
            broker.start()
            with group() as processes:
                env = service_env({
                    "REDIS_URL": broker.url,
                    "STRIPE_WEBHOOK_SECRET": SECRET,
                    "WEB_CONCURRENCY": str(args.web_concurrency),
                    "FLOOR_QUEUE": FLOOR_QUEUE,
                })
                gunicorn = gunicorn_command(args)
                for target, app in ((floor, "bench.floor_app:app"), (receiver, "receiver.wsgi:app")):
                    port = free_port() if args.front else target.port
                    target.pgid = processes.http_server(
                        target.name, [*gunicorn, app], {**env, "PORT": str(port)}, port
                    ).proc.pid
                    if args.front == "nginx":
                        directory = Path(tmp) / f"nginx-{target.name}"
                        directory.mkdir()
                        conf = nginx_conf(directory, target.port, port, timeout=10)
                        processes.http_server(f"nginx-{target.name}", ["nginx", "-p", str(directory), "-c", str(conf),
                                                                       "-g", "daemon off;"], env, target.port)
                floor.redis = receiver.redis = redis.Redis.from_url(broker.url)
                alternate(args, generator, body, receiver, floor)
                if args.light_connections:
                    alternate(args, generator, body, receiver, floor, connections=args.light_connections)
        finally:
            broker.stop()
    label = (args.worker_class or "config (gevent)") + (f" behind {args.front}" if args.front else "")
    return ReceiverReport(worker_class=label, generator=load.describe(generator), body_bytes=len(body),
                          connections=args.connections, rounds=args.rounds, seconds=args.seconds,
                          floor=floor, receiver=receiver, light_connections=args.light_connections)


def run_paypal(args) -> ReceiverReport:
    """The receiver's PayPal route against its Stripe route, same server, alternated."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.support import paypal_events
    from tests.support.fake_paypal import FakePayPal

    generator = load.choose("python" if args.generator == "auto" else args.generator)
    print(f"receiver, stripe vs paypal: load generator {load.describe(generator)}, {args.connections} connections, "
          f"WEB_CONCURRENCY={args.web_concurrency}, {args.worker_class or 'the config'}'s worker class", flush=True)
    stripe_body = stripe_events.encode(stripe_events.completed_event(user_id="bench_user", credits="100"))
    paypal_body = paypal_events.encode(paypal_events.event(
        "PAYMENT.CAPTURE.COMPLETED", paypal_events.capture("BENCHCAPTURE0001", order_id="BENCHORDER000001")))
    port = free_port()
    stripe_target = Target("stripe", EVENTS, port, body=stripe_body,
                           signer=lambda body: sign(body, SECRET, int(time.time())))
    paypal_target = Target("paypal", EVENTS, port, path="/webhooks/paypal", body=paypal_body,
                           signer=lambda body: paypal_events.sign_headers(body))
    with tempfile.TemporaryDirectory(prefix="payhooks-bench-") as tmp, FakePayPal() as fake:
        roots = Path(tmp) / "roots.pem"
        roots.write_bytes(fake.pki.root.public_bytes(Encoding.PEM))
        broker = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        try:
            broker.start()
            with group() as processes:
                env = service_env({
                    "REDIS_URL": broker.url,
                    "STRIPE_WEBHOOK_SECRET": SECRET,
                    "PAYPAL_WEBHOOK_ID": paypal_events.WEBHOOK_ID,
                    "PAYPAL_API_BASE": fake.url,
                    "PAYPAL_CA_FILE": str(roots),
                    "WEB_CONCURRENCY": str(args.web_concurrency),
                    "PORT": str(port),
                })
                gunicorn = gunicorn_command(args)
                pgid = processes.http_server("receiver", [*gunicorn, "receiver.wsgi:app"], env, port).proc.pid
                for target in (stripe_target, paypal_target):
                    target.pgid = pgid
                    target.redis = redis.Redis.from_url(broker.url)
                alternate(args, generator, stripe_body, paypal_target, stripe_target)
                downloads = sum(1 for _, path, _ in fake.requests if "/notifications/certs/" in path)
                print(f"  certificate downloads from the fake PayPal: {downloads} "
                      f"(one per gunicorn worker at most; the rest from Redis or the process)", flush=True)
        finally:
            broker.stop()
    return ReceiverReport(worker_class=args.worker_class or "config (gevent)", generator=load.describe(generator),
                          body_bytes=len(paypal_body), connections=args.connections, rounds=args.rounds,
                          seconds=args.seconds, floor=stripe_target, receiver=paypal_target, mode="paypal")


def gunicorn_command(args) -> list[str]:
    """gunicorn as the Procfile runs it, with --worker-class if the bench was given one."""
    command = [str(BIN / "gunicorn"), "--config", "python:receiver.gunicorn_conf"]
    return command + (["--worker-class", args.worker_class] if args.worker_class else [])


def alternate(args, generator: str, body: bytes, a: Target, b: Target, *, connections: int = 0) -> None:
    """A warm-up of each, then --rounds rounds in the order A B, B A, A B...

    With ``connections`` (fewer than --connections), a light pass for latency:
    no warm-up, results in ``Target.light``, CPU not recorded.
    """
    light = bool(connections)
    connections = connections or args.connections

    def measure(target: Target, seconds: float) -> tuple[load.LoadResult, float]:
        target.redis.delete(target.queue)
        sent = target.body or body
        signature = target.signer(sent) if target.signer else sign(sent, SECRET, int(time.time()))
        cpu_before = cpu_seconds(target.pgid)
        result = load.timed_load(target.url, sent, signature, connections=connections,
                                 seconds=seconds, generator=generator)
        cpu_us = (cpu_seconds(target.pgid) - cpu_before) / max(result.requests, 1) * 1e6
        pushed = target.redis.llen(target.queue)
        target.redis.delete(target.queue)
        if result.errors or pushed < result.requests:
            print(f"  WARNING {target.name}: {result.errors} errors, {pushed} pushed "
                  f"for {result.requests} answers", flush=True)
        return result, cpu_us

    if args.warmup > 0 and not light:
        for target in (b, a):
            measure(target, args.warmup)
    for number in range(args.rounds):
        order = (a, b) if number % 2 == 0 else (b, a)
        for target in order:
            result, cpu_us = measure(target, args.seconds)
            if light:
                target.light.append(result)
            else:
                target.runs.append(result)
                target.cpu_us.append(cpu_us)
            print(f"  round {number + 1} {target.name:<8} {result.rps:8,.0f} req/s  "
                  f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                  f"cpu {cpu_us:5.0f} µs/req  errors {result.errors}"
                  f"{f'  ({connections} connections)' if light else ''}", flush=True)



def summary(report: ReceiverReport) -> list[tuple[str, str, str]]:
    if report.mode == "paypal":
        return [("receiver, PayPal / Stripe deliveries (req/s)", f"{report.ratio:.0%}", "")]
    rows = [
        ("receiver / floor (req/s)", f"{report.ratio:.0%}", "≥ 90%"),
        (f"receiver p99 at {report.connections} connections",
         f"{report.receiver.median('p99_ms'):.1f} ms (floor {report.floor.median('p99_ms'):.1f})", ""),
    ]
    if report.light_connections:
        rows.append((f"receiver p99 at {report.light_connections} connections",
                     f"{report.receiver.median('p99_ms', light=True):.1f} ms "
                     f"(floor {report.floor.median('p99_ms', light=True):.1f})", "≤ 15 ms at 8"))
    return rows
