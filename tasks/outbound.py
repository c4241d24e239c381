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


# Deliveries per deliver message: one Celery message's cost shared by many deliveries,
# few enough that one slow endpoint holds back little behind it.
CHUNK = 20  # two rounds of application.outbound.PARALLEL


@shared_task(bind=True, base=PayhooksTask, name=DISPATCH_OUTBOX)
def dispatch_outbox(self: PayhooksTask) -> int:
    self.runtime.dispatch_requested(False)  # what commits from now on asks for another dispatch
    try:
        return send_deliveries(self.runtime.outbound.dispatch)
    except Exception as exc:
        if is_transient(exc):
            log.warning("outbox dispatch skipped: %s (beat's kick tries again)", exc.__class__.__name__)
            return 0
        raise


def send_deliveries(dispatch) -> int:
    """Dispatch until the outbox is drained; a deliver message per CHUNK new deliveries."""
    total = 0
    while True:
        created = dispatch()
        send_in_chunks(created)
        total += len(created)
        if not created:
            return total


def send_in_chunks(delivery_ids: list[int]) -> None:
    for i in range(0, len(delivery_ids), CHUNK):
        chunk = delivery_ids[i:i + CHUNK]
        deliver.apply_async((chunk,), argsrepr=repr((chunk,)))


@shared_task(bind=True, base=PayhooksTask, name=DELIVER)
def deliver(self: PayhooksTask, delivery_ids: list[int]) -> dict:
    """Try these deliveries; one that must be tried again soon is sent again with its countdown."""
    outcomes: dict[str, int] = {}
    try:
        results = self.runtime.outbound.deliver_many(delivery_ids)
    except Exception as exc:
        if is_transient(exc):  # the database is away: the leases run out and the kick sends them again
            log.warning("%d deliveries not tried: %s", len(delivery_ids), exc.__class__.__name__)
            return {"skipped": len(delivery_ids)}
        raise
    for result in results:
        delivery_id = result.delivery_id
        if result.retry_in is not None and result.retry_in < self.runtime.settings.broker_visibility_timeout / 2:
            deliver.apply_async(([delivery_id],), countdown=result.retry_in, argsrepr=repr(([delivery_id],)))
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    return outcomes


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
    send_in_chunks(due)
    if dispatched or due:
        log.info("outbound kick: %d deliveries dispatched, %d due sent again", dispatched, len(due))
    return {"dispatched": dispatched, "due": len(due)}
