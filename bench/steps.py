"""Where a delivery's CPU goes in the receiver: each step timed alone, in one process.

The ``receiver`` bench measures whole requests through gunicorn; this one takes
a signed Stripe delivery apart. Each step runs ``--step-iterations`` times in a
loop and the median of three loops is reported as CPU µs per call
(``time.process_time``), plus, for the steps that wait on Redis, wall µs.
Whole requests through the WSGI apps (payhooks' receiver and the floor, no
HTTP server) and a do-nothing Flask route put the steps in proportion.

It runs in a child process that gevent monkey-patches first, as gunicorn's gevent
worker does (the body deadline is armed and sockets are gevent's), against a
private redis-server with AOF off; the lists it fills are emptied as it goes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BIN, SECRET, service_env
from infra.embedded import EmbeddedRedis


@dataclass
class StepsReport:
    iterations: int
    steps: list[tuple[str, float, float]]  # name, CPU µs, wall µs

    def cpu(self, name: str) -> float:
        return next(cpu for step, cpu, _ in self.steps if step == name)


def run(args) -> StepsReport:
    print(f"steps: {args.step_iterations:,} calls per step, median of 3 loops, gevent-patched child process",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="payhooks-bench-") as tmp:
        broker = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        try:
            broker.start()
            env = service_env({"REDIS_URL": broker.url, "STRIPE_WEBHOOK_SECRET": SECRET})
            done = subprocess.run([str(BIN / "python"), "-m", "bench.steps", str(args.step_iterations)],
                                  env=env, capture_output=True, text=True, timeout=600, check=False)
        finally:
            broker.stop()
    if done.returncode != 0:
        raise RuntimeError(f"bench.steps exited {done.returncode}:\n{done.stderr[-3000:]}")
    steps = [tuple(step) for step in json.loads(done.stdout.strip().splitlines()[-1])]
    return StepsReport(args.step_iterations, steps)


def print_report(report: StepsReport) -> None:
    print(f"\nsteps — one signed Stripe delivery taken apart, {report.iterations:,} calls per step, medians")
    print(f"  {'':<52}{'CPU µs':>8}{'wall µs':>9}")
    for name, cpu, wall in report.steps:
        print(f"  {name:<52}{cpu:>8.1f}{wall:>9.1f}")
    parts = sum(cpu for name, cpu, _ in report.steps if name.startswith("  ") and "of which" not in name)
    whole = report.cpu("payhooks receiver, whole request (WSGI)")
    print(f"  the receiver's steps add up to {parts:.0f} of its {whole:.0f} µs; the rest is dispatch, settings and building the request")


def summary(report: StepsReport) -> list[tuple[str, str, str]]:
    return [("receiver CPU per request in-process, payhooks / floor",
             f"{report.cpu('payhooks receiver, whole request (WSGI)'):.0f} / "
             f"{report.cpu('floor, whole request (Flask)'):.0f} µs", "")]


def _measure(iterations: int) -> list[tuple[str, float, float]]:
    import io
    import statistics
    import time

    import gevent
    import redis
    from flask import Flask

    from bench.floor_app import app as floor_app
    from infra import metrics
    from infra.logs import log_context
    from infra.settings import Settings
    from providers import stripe
    from receiver import create_app
    from receiver.bodies import BodyReader
    from receiver.webhooks import Answer
    from tests.support import stripe_events
    from transport.queue import EVENTS, Envelope, Publisher, connect

    settings = Settings.from_env()
    secret = settings.reveal("stripe_webhook_secrets")[0]
    body = stripe_events.encode(stripe_events.completed_event(user_id="bench_user", credits="100"))
    signed = {"header": stripe.sign(body, secret, int(time.time()))}  # signed again before every loop
    event = stripe.parse_event(body)
    client = redis.Redis.from_url(settings.redis_url)

    def environ(path: str = "/webhooks/stripe") -> dict:
        return {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "bench", "SERVER_PORT": "80",
                "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                "wsgi.input_terminated": True, "wsgi.errors": sys.stderr, "CONTENT_LENGTH": str(len(body)),
                "CONTENT_TYPE": "application/json", "HTTP_STRIPE_SIGNATURE": signed["header"]}

    def request(app, path: str = "/webhooks/stripe"):
        statuses = []
        b"".join(app(environ(path), lambda status, headers, exc_info=None: statuses.append(status)))
        if not statuses[0].startswith("200"):
            raise RuntimeError(f"{path}: {statuses[0]}")

    receiver_app = create_app(settings)
    noop = Flask("noop")
    noop.post("/noop")(lambda: {"received": True, "id": event.id})
    reader = BodyReader(settings)
    publisher = Publisher(connect(settings.redis_url, timeout=1.0), attempts=1)
    delivered = metrics.DELIVERIES.labels(stripe.NAME, event.type, "accepted")
    matched = metrics.SIGNATURE_MATCHES.labels(stripe.NAME, "0")
    enqueue_seconds = metrics.ENQUEUE_SECONDS.labels(stripe.NAME)

    def read_body():
        reader.read(environ(), settings.webhook_max_bytes)

    def log_scope():
        with log_context(provider=stripe.NAME, event_id=event.id, event_type=event.type):
            pass

    def deadline():
        with gevent.Timeout(10):
            pass

    def count():
        matched.inc()
        enqueue_seconds.observe(0.0002)
        delivered.inc()

    def answer():
        Answer(200, {"received": True, "id": event.id})(lambda status, headers: None)

    steps = [
        ("floor, whole request (Flask)", lambda: request(floor_app)),
        ("payhooks receiver, whole request (WSGI)", lambda: request(receiver_app)),
        ("a do-nothing Flask route answering JSON", lambda: request(noop, "/noop")),
        ("  read the body (limit, deadline)", read_body),
        ("    of which: arm and cancel the deadline", deadline),
        ("  verify the signature (HMAC-SHA256)", lambda: stripe.verify_signature(
            body, signed["header"], [secret], tolerance=300, now=time.time())),
        ("  parse the event (orjson, checks)", lambda: stripe.parse_event(body)),
        ("  encode the envelope", lambda: Envelope(stripe.NAME, event.id, time.time(), body).encode()),
        ("  LPUSH (redis-py, one round trip)", lambda: publisher.publish(stripe.NAME, event.id, body)),
        ("  metrics (2 counters, 1 histogram)", count),
        ("  log context", log_scope),
        ("  answer (orjson, start_response)", answer),
    ]
    results = []
    for name, step in steps:
        for _ in range(min(iterations, 500)):
            step()
        cpu, wall = [], []
        for _ in range(3):
            signed["header"] = stripe.sign(body, secret, int(time.time()))
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            for _ in range(iterations):
                step()
            cpu.append((time.process_time() - started_cpu) / iterations * 1e6)
            wall.append((time.perf_counter() - started_wall) / iterations * 1e6)
            client.delete(EVENTS, "floor")
        results.append((name, statistics.median(cpu), statistics.median(wall)))
    return results


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()
    print(json.dumps(_measure(int(sys.argv[1]))))
