"""The Celery application, assembled in one place from Settings.

Provider events are applied by batch consumers (workers/consumer.py) that run
inside this worker: one in each prefork child (``--concurrency N`` gives N
consumers in N processes), or one in the main process under the threads or
solo pool. They take events from the events queue (transport/queue.py), whose
reliable fetch and heartbeats bring a killed worker's events back within
seconds. The Celery queues carry the rest: maintenance (sweeps,
reconciliation, lookups, replays, pruning) and ``process_event`` messages.

At-least-once delivery of Celery messages:

* ``task_acks_late``: a message is acknowledged after its task returns, so a
  worker that dies mid-task leaves it to be delivered again;
* ``task_reject_on_worker_lost``: a prefork child killed mid-task (SIGKILL, OOM)
  puts its message straight back on the queue;
* ``worker_prefetch_multiplier = 1``: a worker holds one unstarted message per
  process, so a crash strands little and a busy worker does not hoard work;
* Redis ``visibility_timeout``: a message taken but not acknowledged within this
  many seconds (the whole worker died) is restored to the queue. Every retry
  countdown is capped below it (Settings checks), because Redis would otherwise
  redeliver a message still waiting for its countdown;
* no result backend: PostgreSQL is the truth, nothing reads task results.

Redelivery is therefore normal, and it is safe because processing is idempotent
(the inbox row and the ledger's idempotency keys).
"""

from __future__ import annotations

import os

from celery import Celery, bootsteps
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown
from kombu import Queue

from application import hooks
from infra import metrics
from infra.logs import configure_logging
from infra.settings import Settings
from transport.queue import Claims
from workers.consumer import Consumer, rejected_item
from workers.handoff import Handoff
from workers.queues import (
    DISPATCH_OUTBOX,
    EXPIRE_MANUAL_PAYMENTS,
    KICK_OUTBOUND,
    LOOK_UP_SESSION,
    MAINTENANCE_QUEUE,
    OUTBOUND_QUEUE,
    PRUNE_INBOX,
    RECONCILE_EVENTS,
    RETRY_HELD_EVENTS,
    ROUTES,
    SWEEP_PENDING,
    WEBHOOKS_QUEUE,
)
from workers.runtime import Runtime


def celery_config(settings: Settings) -> dict:
    return {
        "broker_url": settings.require("redis_url", "the workers need a Redis broker"),
        # kombu's Redis transport, minus a crash on a lost connection (workers/broker.py)
        "broker_transport": "workers.broker:Transport",
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            # kombu looks for expired unacknowledged messages every 10 s but, by
            # default, acts on only every 10th look; look every time, so a dead
            # worker's messages return within visibility_timeout + 10 s.
            "unacked_restore_throttle": 1,
            # The restore holds a Redis mutex for milliseconds; if a worker is killed
            # holding it, the default 300 s expiry would stall every restore that long.
            "unacked_mutex_expire": 30,
        },
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": WEBHOOKS_QUEUE,
        "task_queues": [
            Queue(WEBHOOKS_QUEUE, routing_key=WEBHOOKS_QUEUE),
            Queue(MAINTENANCE_QUEUE, routing_key=MAINTENANCE_QUEUE),
            Queue(OUTBOUND_QUEUE, routing_key=OUTBOUND_QUEUE),
        ],
        "task_routes": ROUTES,
        "imports": ["tasks"],
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
        # Celery's, minus the raw body it would log for a message it cannot handle.
        "worker_consumer": "workers.celery_consumer:Consumer",
        "beat_schedule": beat_schedule(settings),
    }


def beat_schedule(settings: Settings) -> dict:
    """Periodic work. Each task is safe if a second beat runs by mistake (rows are claimed with SKIP LOCKED)."""

    def every(task: str, seconds: int, queue: str = MAINTENANCE_QUEUE) -> dict:
        # A run that could not start within its interval is dropped: the next one does the same work.
        return {"task": task, "schedule": float(seconds), "options": {"queue": queue, "expires": seconds}}

    return {
        "retry-held-events": every(RETRY_HELD_EVENTS, settings.held_retry_interval_seconds),
        "sweep-pending": every(SWEEP_PENDING, settings.sweep_interval_seconds),
        "reconcile-events": every(RECONCILE_EVENTS, settings.reconcile_interval_seconds),
        "prune-inbox": every(PRUNE_INBOX, settings.retention_interval_seconds),
        "expire-manual-payments": every(EXPIRE_MANUAL_PAYMENTS, settings.sweep_interval_seconds),
        "kick-outbound": every(KICK_OUTBOUND, settings.outbound_kick_interval_seconds, OUTBOUND_QUEUE),
    }


def start_consumer(runtime: Runtime) -> Consumer:
    settings = runtime.settings
    unit = runtime.unit

    def reject(item: bytes, reason: str) -> None:
        unit.reject(*rejected_item(item), reason)

    return Consumer(
        Claims(runtime.redis),
        unit,
        batch_size=settings.event_batch_size,
        heartbeat_seconds=settings.consumer_heartbeat_seconds,
        dead_after_seconds=settings.consumer_dead_after_seconds,
        backoff_max_seconds=settings.consumer_retry_max_seconds,
        retry_limit=settings.retry_max_attempts,
        reject=reject,
    ).start()


class EventConsumers(bootsteps.StartStopStep):
    """Runs a batch consumer in the main process when the pool does not fork (threads, solo).

    Under prefork each child runs its own (``worker_process_init`` below): threads
    started here before the pool forks more children would be copied into them
    mid-flight.
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker, **kwargs):
        self.consumer: Consumer | None = None

    def start(self, worker):
        if _forks(worker):
            return
        self.consumer = start_consumer(worker.app.payhooks)

    def stop(self, worker):
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer = None


def _forks(worker) -> bool:
    from celery.concurrency.prefork import TaskPool

    return isinstance(worker.pool, TaskPool)


def make_celery(settings: Settings) -> Celery:
    app = Celery("payhooks", set_as_current=True)
    app.config_from_object(celery_config(settings))
    app.payhooks = runtime = Runtime(settings)
    app.steps["worker"].add(EventConsumers)
    consumers: list[Consumer] = []
    # After-commit messages leave from a thread of their own: a send blocked on a broker
    # that is away must not stop the consumer that committed (workers/handoff.py).
    handoff = Handoff(app.send_task)

    def schedule_lookups(report) -> None:
        """After commit: look up the sessions a batch found without credits (a Payment Link's, say)."""
        for provider, session_id in sorted(report.lookups):
            handoff.submit(LOOK_UP_SESSION, (provider, session_id), repr((provider, session_id)))

    runtime.follow_ups.append(schedule_lookups)

    def schedule_dispatch(report) -> None:
        """After commit: fan the batch's outbox messages out to their consumers."""
        if report.announced and runtime.dispatch_requested():
            handoff.submit(DISPATCH_OUTBOX, (), "()")

    if settings.outbox_dispatch_on_commit:
        runtime.follow_ups.append(schedule_dispatch)
    hooks.load(settings.hook_modules)

    @worker_process_init.connect(weak=False)
    def _after_fork(**_: object) -> None:
        runtime.forget_connections()
        consumers.append(start_consumer(runtime))

    @worker_process_shutdown.connect(weak=False)
    def _child_gone(**_: object) -> None:
        while consumers:
            consumers.pop().stop()
        metrics.mark_process_dead(os.getpid(), settings.metrics_dir)

    @setup_logging.connect(weak=False)
    def _logging(**_: object) -> None:
        # Connected, this replaces Celery's own logging setup: every line is JSON with the event's context.
        configure_logging(settings.log_level, settings.log_format)

    return app
