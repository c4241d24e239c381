"""Prometheus metrics, correct under gunicorn and Celery prefork.

Counters and histograms live in the process that observes them. With
``PROMETHEUS_MULTIPROC_DIR`` set (Settings.metrics_dir) (``payhooks run`` sets it; set it in
production for every process on a machine, to an empty directory at start),
prometheus-client writes them to files there and ``GET /metrics`` sums every
process's files; dead processes are marked so their gauges disappear. Without
it each process reports only itself.

Gauges of state — queue depth, open dead letters, pending payments, held
events — are read from Redis and PostgreSQL at scrape time by ``StateCollector``
instead of being pushed, so they are right however many processes there are.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Counter_
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("payhooks.metrics")

# -- receiver ------------------------------------------------------------------------

DELIVERIES = Counter(
    "payhooks_deliveries_total", "Webhook deliveries answered, by outcome", ["provider", "type", "outcome"]
)
SIGNATURE_MATCHES = Counter(
    "payhooks_signature_matches_total",
    "Verified deliveries by the configured secret that matched (its position in the list): "
    "a secret that never matches is misconfigured or retired",
    ["provider", "secret"],
)
SIGNATURE_FAILURES = Counter(
    "payhooks_signature_failures_total", "Deliveries rejected by signature checks, by reason", ["provider", "reason"]
)
ENQUEUE_SECONDS = Histogram(
    "payhooks_enqueue_seconds",
    "Time to put a verified event on the queue",
    ["provider"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

# -- workers -------------------------------------------------------------------------

EVENTS = Counter(
    "payhooks_events_total",
    "Events handled by workers, by outcome (processed, ignored, held, failed, duplicate)",
    ["provider", "type", "outcome", "source"],
)
RETRIES = Counter("payhooks_event_retries_total", "Transient failures retried", ["provider", "type"])
DEAD_LETTERS = Counter(
    "payhooks_dead_letters_total", "Events dead-lettered", ["provider", "type", "error_class"]
)
LAG = Histogram(
    "payhooks_event_lag_seconds",
    "From the provider's created time (since=created) or our receipt (since=received) to applied",
    ["since"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
CREDITS = Counter("payhooks_credits_total", "Credits moved by the ledger", ["kind"])
RECONCILE_MISSING = Gauge(
    "payhooks_reconciliation_missing_events",
    "Events the most recent reconciliation found missing from the inbox (drift)",
    multiprocess_mode="mostrecent",
)
AMOUNT_MISMATCHES = Counter(
    "payhooks_payment_amount_mismatches_total",
    "Payments whose captured amount or currency differs from the amount recorded beforehand",
    ["provider"],
)
BATCH_SIZE = Histogram(
    "payhooks_batch_events",
    "Events applied per transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
RECLAIMED = Counter(
    "payhooks_events_reclaimed_total",
    "Events taken back from consumers that stopped beating (a killed worker) and queued again",
)
OUTBOUND_ATTEMPTS = Counter(
    "payhooks_outbound_attempts_total",
    "Outbound delivery attempts (consumer: webhook, email, hook) by outcome (delivered, retry, failed, gone)",
    ["consumer", "outcome"],
)
SWEEP_RESULTS = Counter("payhooks_sweep_results_total", "Pending payments checked by the sweep", ["outcome"])


def observe(report) -> None:
    """Count what a committed batch did (application/unit.py calls this after every commit, on every path)."""
    now = time.time()
    events: Counter_ = Counter_()
    for result in report.results:
        outcome = "duplicate" if result.duplicate else result.status
        events[(result.provider, result.event_type, outcome, result.source)] += 1
        if result.duplicate:
            continue
        if result.status == "failed" and result.error_class:
            DEAD_LETTERS.labels(result.provider, result.event_type, result.error_class).inc()
        if result.status == "processed":
            if result.created:
                LAG.labels("created").observe(max(0.0, now - result.created))
            if result.received_at:
                LAG.labels("received").observe(max(0.0, now - result.received_at))
    for labels, count in events.items():
        EVENTS.labels(*labels).inc(count)
    credits: Counter_ = Counter_()
    for kind, amount in report.posted:
        credits[kind] += abs(amount)
    for kind, amount in credits.items():
        CREDITS.labels(kind).inc(amount)
    for provider, _ in report.mismatches:
        AMOUNT_MISMATCHES.labels(provider).inc()
    if report.results:
        BATCH_SIZE.observe(len(report.results))


def mark_process_dead(pid: int, multiprocess_dir: str | None) -> None:
    if multiprocess_dir:
        multiprocess.mark_process_dead(pid, multiprocess_dir)


class StateCollector:
    """Gauges read at scrape time; a probe that fails is reported, not raised."""

    def __init__(self, probes: dict[str, tuple[str, Callable[[], dict[tuple[str, ...], float]], list[str]]]) -> None:
        self.probes = probes

    def collect(self):
        errors = GaugeMetricFamily("payhooks_state_scrape_errors", "State gauges that could not be read", labels=["gauge"])
        for name, (doc, probe, labels) in self.probes.items():
            try:
                values = probe()
            except Exception as exc:  # a scrape must not fail because Redis or PostgreSQL did
                log.warning("metrics probe %s failed: %s", name, exc.__class__.__name__)
                errors.add_metric([name], 1)
                continue
            family = GaugeMetricFamily(name, doc, labels=labels)
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family
        yield errors


def render(state: StateCollector | None, multiprocess_dir: str | None) -> tuple[bytes, str]:
    """The Prometheus text for this process, or every process sharing the multiprocess directory."""
    states = CollectorRegistry()
    if state is not None:
        states.register(state)
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
        return generate_latest(registry) + generate_latest(states), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY) + generate_latest(states), CONTENT_TYPE_LATEST
