"""Outbound tasks on the ``outbound`` queue: fan the outbox out, deliver, and the safety net.

``dispatch_outbox`` is sent after a batch that wrote outbox messages commits
(workers/celery_app.py); ``deliver`` tries one delivery and, if it must be
tried again soon, sends itself again with that countdown. A countdown past
half the broker's visibility timeout is not handed to the broker (Redis would
deliver it early): beat's ``kick_outbound`` finds such deliveries once due, as
it finds those whose message was lost with a killed worker (the lease ran
out) and messages that were never dispatched.
"""

from __future__ import annotations

import logging

from celery import shared_task

from application.errors import is_transient
from tasks.base import PayhooksTask
from workers.queues import DELIVER, DISPATCH_OUTBOX, KICK_OUTBOUND

log = logging.getLogger("payhooks.outbound")


@shared_task(bind=True, base=PayhooksTask, name=DISPATCH_OUTBOX)
def dispatch_outbox(self: PayhooksTask) -> int:
    try:
        return send_deliveries(self.runtime.outbound.dispatch)
    except Exception as exc:
        if is_transient(exc):
            log.warning("outbox dispatch skipped: %s (beat's kick tries again)", exc.__class__.__name__)
            return 0
        raise


def send_deliveries(dispatch) -> int:
    """Dispatch until the outbox is drained; one deliver message per new delivery."""
    total = 0
    while True:
        created = dispatch()
        for delivery_id in created:
            deliver.apply_async((delivery_id,))
        total += len(created)
        if not created:
            return total


@shared_task(bind=True, base=PayhooksTask, name=DELIVER, public_args=("delivery_id",))
def deliver(self: PayhooksTask, delivery_id: int) -> str:
    try:
        result = self.runtime.outbound.deliver(delivery_id)
    except Exception as exc:
        if is_transient(exc):  # the database is away: the lease runs out and the kick sends it again
            log.warning("delivery %d not tried: %s", delivery_id, exc.__class__.__name__)
            return "skipped"
        raise
    if result.retry_in is not None and result.retry_in < self.runtime.settings.broker_visibility_timeout / 2:
        deliver.apply_async((delivery_id,), countdown=result.retry_in)
    return result.outcome


@shared_task(bind=True, base=PayhooksTask, name=KICK_OUTBOUND)
def kick_outbound(self: PayhooksTask) -> dict:
    """Beat's safety net: dispatch what was never dispatched, re-send what is due and unheld."""
    settings = self.runtime.settings
    outbound = self.runtime.outbound
    try:
        dispatched = send_deliveries(outbound.dispatch)
        # Due for a whole interval: its own countdown message, if any, was lost (a killed worker).
        due = outbound.due(late=settings.outbound_kick_interval_seconds)
    except Exception as exc:
        if is_transient(exc):
            log.warning("outbound kick skipped: %s", exc.__class__.__name__)
            return {"skipped": 1}
        raise
    for delivery_id in due:
        deliver.apply_async((delivery_id,))
    if dispatched or due:
        log.info("outbound kick: %d deliveries dispatched, %d due sent again", dispatched, len(due))
    return {"dispatched": dispatched, "due": len(due)}
