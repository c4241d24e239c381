"""Scheduled work on the ``maintenance`` queue. Every task is safe to run twice at once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import partial

from celery import shared_task

from application import lookups
from application.errors import is_transient
from application.held import retry_held
from application.manual import ManualPayments
from application.tracker import PaymentTracker
from infra import metrics
from models import retention
from providers.paypal_api import PayPalNotConfiguredError
from providers.stripe_api import ProviderUnavailableError, StripeNotConfiguredError
from tasks.base import PayhooksTask
from workers.queues import (
    EXPIRE_MANUAL_PAYMENTS,
    LOOK_UP_SESSION,
    PRUNE_INBOX,
    RECONCILE_EVENTS,
    RETRY_HELD_EVENTS,
    SWEEP_PENDING,
)

log = logging.getLogger("payhooks.maintenance")


@shared_task(bind=True, base=PayhooksTask, name=RETRY_HELD_EVENTS)
def retry_held_events(self: PayhooksTask) -> dict:
    settings = self.runtime.settings
    try:
        counts = retry_held(self.runtime.unit, hold_window=timedelta(seconds=settings.hold_window_seconds))
    except Exception as exc:
        if is_transient(exc):
            log.warning("held-event retry skipped: %s (the next run will try again)", exc.__class__.__name__)
            return {"skipped": 1}
        raise
    if any(counts.values()):
        log.info("held events: %s", counts)
    return counts


@shared_task(bind=True, base=PayhooksTask, name=SWEEP_PENDING)
def sweep_pending(self: PayhooksTask) -> dict:
    """Each provider with API credentials checks its own pending payments."""
    settings = self.runtime.settings
    results = {}
    for recovery in self.runtime.recoveries():
        report = recovery.sweep_pending(
            min_age=timedelta(seconds=settings.sweep_min_age_seconds),
            expiry_grace=timedelta(seconds=settings.sweep_expiry_grace_seconds),
            batch_size=settings.sweep_batch_size,
            calls_per_second=settings.sweep_calls_per_second,
        )
        for outcome in ("completed", "expired", "still_open"):
            metrics.SWEEP_RESULTS.labels(outcome).inc(getattr(report, outcome))
        if report.checked or report.errors:
            log.info(
                "%s sweep: checked %d, completed %d, expired %d, still open %d%s",
                recovery.provider, report.checked, report.completed, report.expired, report.still_open,
                f", provider unavailable: {report.errors[-1]}" if report.unavailable else "",
            )
        results[recovery.provider] = {
            "checked": report.checked, "completed": report.completed, "expired": report.expired,
            "still_open": report.still_open, "provider_unavailable": report.unavailable,
        }
    return results or {"skipped": "not configured"}


@shared_task(bind=True, base=PayhooksTask, name=RECONCILE_EVENTS)
def reconcile_events(self: PayhooksTask) -> dict:
    """Each provider with API credentials lists its events since its own cursor."""
    settings = self.runtime.settings
    results, missing = {}, 0
    for recovery in self.runtime.recoveries():
        try:
            report = recovery.reconcile_events(
                overlap=timedelta(seconds=settings.reconcile_overlap_seconds),
                initial_lookback=timedelta(seconds=settings.reconcile_initial_lookback_seconds),
            )
        except ProviderUnavailableError as exc:
            log.warning("%s reconciliation failed, cursor unchanged, next run retries: %s", recovery.provider, exc)
            results[recovery.provider] = {"provider_unavailable": True}
            continue
        missing += report["missing"]
        log_line = log.warning if report["missing"] else log.info
        log_line("%s reconciliation since %s: %d listed, %d missing from the inbox, %d applied",
                 recovery.provider, report["since"], report["listed"], report["missing"], report["applied"])
        results[recovery.provider] = {k: report[k] for k in ("listed", "missing", "applied")}
    metrics.RECONCILE_MISSING.set(missing)
    return results or {"skipped": "not configured"}


def prune(
    db, *, payload_days: int, inbox_days: int, outbound_days: int, batch_size: int = 1000, now: datetime | None = None
) -> dict:
    """Drop old raw payloads, old inbox rows, then settled outbox messages, a batch per transaction until none is left."""
    now = now or datetime.now(UTC)
    inbox_days = max(inbox_days, retention.MIN_INBOX_RETENTION_DAYS)
    steps = {
        "payloads_pruned": partial(retention.prune_payloads, older_than=now - timedelta(days=payload_days)),
        "rows_deleted": partial(retention.delete_old_rows, older_than=now - timedelta(days=inbox_days)),
        "outbox_deleted": retention.OutboxPruner(now - timedelta(days=outbound_days)),
    }
    totals = dict.fromkeys(steps, 0)
    for key, step in steps.items():
        while True:
            with db.transaction() as session:
                done = step(session, batch_size=batch_size)
            totals[key] += done
            if done < batch_size:
                break
    return totals


@shared_task(bind=True, base=PayhooksTask, name=PRUNE_INBOX)
def prune_inbox(self: PayhooksTask) -> dict:
    settings = self.runtime.settings
    totals = prune(self.runtime.db, payload_days=settings.retention_payload_days,
                   inbox_days=settings.retention_inbox_days, outbound_days=settings.retention_outbound_days)
    if any(totals.values()):
        log.info("retention: %s", totals)
    return totals


@shared_task(bind=True, base=PayhooksTask, name=LOOK_UP_SESSION)
def look_up_session(self: PayhooksTask, provider: str, session_id: str) -> dict:
    """Ask the provider what events held for a session wait for (line items, a capture) and apply them."""
    runtime = self.runtime
    try:
        report = lookups.look_up_session(runtime.unit, runtime.provider_api(provider), provider, session_id)
    except (StripeNotConfiguredError, PayPalNotConfiguredError) as exc:
        log.warning("cannot look up %s session %s: %s", provider, session_id, exc)
        return {"skipped": "not configured"}
    except ProviderUnavailableError as exc:
        raise self.retry_later(exc) from exc
    except Exception as exc:
        if is_transient(exc):  # the database away or a conflict: the same lookup again, not a wait for the sweep
            raise self.retry_later(exc) from exc
        raise
    return {"applied": sum(r.status == "processed" for r in report.results)}


@shared_task(bind=True, base=PayhooksTask, name=EXPIRE_MANUAL_PAYMENTS)
def expire_manual_payments(self: PayhooksTask) -> dict:
    """Manual payments pending for longer than MANUAL_PAYMENT_EXPIRE_AFTER_DAYS: expired, each by an event of its own."""
    settings = self.runtime.settings
    manual = ManualPayments(PaymentTracker(self.runtime.unit, settings))
    expired = manual.expire_overdue(max_age=timedelta(days=settings.manual_payment_expire_after_days))
    if expired:
        log.info("expired %d manual payments pending for more than %d days", len(expired), settings.manual_payment_expire_after_days)
    return {"expired": len(expired)}
