"""Metrics after traffic, across real gunicorn and Celery prefork processes; JSON logs that follow an event."""

from __future__ import annotations

import json

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text

from infra.embedded import free_port
from models.tables import CreditLedger
from tests.conftest import PRIMARY_SECRET, ROTATED_SECRET
from tests.support import leaks, processes
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode, signed_headers


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture
def stack(process_env, test_services, tmp_path):
    """gunicorn and a prefork worker sharing one multiprocess metrics directory and their own Redis db."""
    url = test_services.redis_url.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(url).flushdb()
    env = {**process_env, "REDIS_URL": url, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "DATABASE_LOCK_TIMEOUT_SECONDS": "0.5"}
    port = free_port()
    web = processes.gunicorn(env, port)
    worker = processes.celery_worker(env, name="observed")
    try:
        yield f"http://127.0.0.1:{port}", worker
    finally:
        worker.stop()
        web.stop()
        redis.Redis.from_url(url).flushdb()


def test_metrics_after_a_burst_cover_every_process(stack):
    base, worker = stack
    events = [completed_event(user_id=f"user_metrics_{n}", credits="5") for n in range(6)]
    for n, evt in enumerate(events):
        body = encode(evt)
        secret = ROTATED_SECRET if n == 0 else PRIMARY_SECRET
        assert requests.post(f"{base}/webhooks/stripe", data=body, headers=signed_headers(body, secret), timeout=5).ok
    bad = encode(completed_event())
    assert requests.post(f"{base}/webhooks/stripe", data=bad, headers=signed_headers(bad, "whsec_wrong"), timeout=5).status_code == 400

    def scraped():
        found = samples(requests.get(f"{base}/metrics", timeout=5).text)
        return found if value(found, "payhooks_events_total", outcome="processed") >= 6 else None

    found = wait_until(scraped, 30, what="the worker's events to show in the receiver's /metrics")
    # Metric labels are searched for canaries like log lines (tests/support/leaks.py).
    leaks.CAPTURE.add_text("metrics", "GET /metrics (gunicorn, every process)", requests.get(f"{base}/metrics", timeout=5).text)
    assert value(found, "payhooks_deliveries_total", outcome="accepted") == 6
    assert value(found, "payhooks_deliveries_total", outcome="invalid_signature") == 1
    assert value(found, "payhooks_signature_matches_total", secret="1") == 1  # the rotated secret, seen working
    assert value(found, "payhooks_signature_failures_total", reason="mismatch") == 1
    assert value(found, "payhooks_enqueue_seconds_count") == 6
    assert value(found, "payhooks_credits_total", kind="grant") == 30
    assert value(found, "payhooks_event_lag_seconds_count", since="received") == 6
    assert ("payhooks_queue_depth", (("queue", "webhooks"),)) in found
    assert value(found, "payhooks_dead_letters_open") == 0
    assert value(found, "payhooks_payments_pending") == 0
    assert value(found, "payhooks_state_scrape_errors") == 0


def test_a_batch_behind_a_stuck_lock_is_retried_counted_and_applied(stack, database):
    base, worker = stack
    evt = completed_event(user_id="user_behind_a_lock", credits="4")
    body = encode(evt)
    with database.transaction() as session:  # someone's transaction holding the payments table
        session.execute(text("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE"))
        assert requests.post(f"{base}/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET),
                             timeout=5).ok

        def retried():
            found = samples(requests.get(f"{base}/metrics", timeout=5).text)
            return value(found, "payhooks_event_retries_total", type="checkout.session.completed") >= 2

        wait_until(retried, 30, what="the lock timeout to fail the batch and the retries to be counted")
        assert lines_saying(worker, f"transient failure applying a batch of 1 [{evt['id']}] (OperationalError")
    with database.transaction() as session:
        wait_until(lambda: session.scalar(
            select(func.count()).select_from(CreditLedger).where(CreditLedger.user_id == "user_behind_a_lock")
        ) == 1, 30, what="the event applied once the lock is gone")


def lines_saying(worker, text_: str) -> list[str]:
    return [line for line in list(worker.output) if text_ in line]


def test_json_logs_follow_one_event_from_task_to_ledger(stack):
    base, worker = stack
    evt = completed_event(user_id="user_logged", credits="7")
    body = encode(evt)
    assert requests.post(f"{base}/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET), timeout=5).ok

    def line_for_event():
        for raw in list(worker.output):
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if record.get("event_id") == evt["id"] and record.get("outcome"):
                return record
        return None

    record = wait_until(line_for_event, 30, what="a JSON log line for the event")
    assert record["provider"] == "stripe"
    assert record["event_type"] == "checkout.session.completed"
    assert record["outcome"] == "processed"
    assert record["batch"] and record["payment_ids"]
    assert record["credits"] == [["grant", 7]]
    assert body.decode() not in "".join(worker.output)  # raw bodies never reach the logs


def test_sentry_reports_from_the_gevent_web_process(process_env, test_services):
    """Under gevent's monkey-patching Sentry's sender still delivers, scrubbed, and deliveries go on."""
    import gzip
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[bytes] = []

    class Ingest(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    env = {
        **process_env,
        "SENTRY_DSN": f"http://publickey@127.0.0.1:{server.server_address[1]}/1",
        # a broker nobody listens on: every delivery is logged as an error, which Sentry reports
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PUBLISH_ATTEMPTS": "1",
    }
    web = processes.gunicorn(env, port)
    try:
        body = encode(completed_event(user_id="user_sentry"))
        headers = signed_headers(body, PRIMARY_SECRET)
        answers = [requests.post(f"http://127.0.0.1:{port}/webhooks/stripe", data=body, headers=headers, timeout=5)
                   for _ in range(3)]
        wait_until(lambda: any(b"could not enqueue" in envelope for envelope in received), 20,
                   what="Sentry to receive the error from the gevent web process")
    finally:
        web.stop()
        server.shutdown()
    assert [answer.status_code for answer in answers] == [503] * 3
    everything = b"".join(received)
    assert headers["Stripe-Signature"].encode() not in everything
    assert b"user_sentry" not in everything and PRIMARY_SECRET.encode() not in everything
