"""Celery queue and task names: part of the wire format, since messages name them.

Provider deliveries do not travel as Celery messages: the receiver pushes them
onto the events queue (transport/queue.py), which the batch consumers take
from. The ``webhooks`` Celery queue remains for ``process_event`` messages
published before that change (an upgrade drains them) and for tools that
apply one event through Celery; renaming a name here strands queued messages.
"""

WEBHOOKS_QUEUE = "webhooks"
MAINTENANCE_QUEUE = "maintenance"  # sweeps, reconciliation, replay, lookups, pruning
# Telling the host application (application/outbound.py): its own queue, so a slow
# endpoint delays webhooks to the application, never provider events or sweeps.
OUTBOUND_QUEUE = "outbound"

PROCESS_EVENT = "payhooks.process_event"
RETRY_HELD_EVENTS = "payhooks.retry_held_events"
LOOK_UP_SESSION = "payhooks.look_up_session"
SWEEP_PENDING = "payhooks.sweep_pending"
RECONCILE_EVENTS = "payhooks.reconcile_events"
PRUNE_INBOX = "payhooks.prune_inbox"
EXPIRE_MANUAL_PAYMENTS = "payhooks.expire_manual_payments"
REPLAY_DEAD_LETTERS = "payhooks.replay_dead_letters"  # a bulk replay job (application/jobs.py)
DISPATCH_OUTBOX = "payhooks.outbound.dispatch"
DELIVER = "payhooks.outbound.deliver"
KICK_OUTBOUND = "payhooks.outbound.kick"

ROUTES = {
    PROCESS_EVENT: {"queue": WEBHOOKS_QUEUE, "routing_key": WEBHOOKS_QUEUE},
    "payhooks.outbound.*": {"queue": OUTBOUND_QUEUE, "routing_key": OUTBOUND_QUEUE},
    "payhooks.*": {"queue": MAINTENANCE_QUEUE, "routing_key": MAINTENANCE_QUEUE},
}
