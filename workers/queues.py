"""Queue and task names: the contract between the receiver, the broker and the workers.

The receiver publishes by name (it never imports task code), so these strings
are part of the wire format: renaming one strands messages already queued.
"""

WEBHOOKS_QUEUE = "webhooks"  # latency-sensitive: one message per provider delivery
MAINTENANCE_QUEUE = "maintenance"  # sweeps, reconciliation, replay, pruning

PROCESS_EVENT = "payhooks.process_event"
RETRY_HELD_EVENTS = "payhooks.retry_held_events"
SWEEP_PENDING = "payhooks.sweep_pending"
RECONCILE_EVENTS = "payhooks.reconcile_events"
PRUNE_INBOX = "payhooks.prune_inbox"
REAP_JOURNAL = "payhooks.reap_journal"
REPLAY_DEAD_LETTERS = "payhooks.replay_dead_letters"  # a bulk replay job (workers/jobs.py)

ROUTES = {
    PROCESS_EVENT: {"queue": WEBHOOKS_QUEUE, "routing_key": WEBHOOKS_QUEUE},
    "payhooks.*": {"queue": MAINTENANCE_QUEUE, "routing_key": MAINTENANCE_QUEUE},
}
