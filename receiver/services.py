"""The receiver's side effects, built lazily once per process (after gunicorn forks)."""

from __future__ import annotations

from flask import current_app

from application.dlq import DeadLetters
from application.jobs import Jobs
from application.manual import ManualPayments
from application.outbound import Outbound
from application.tracker import PaymentTracker
from application.unit import UnitOfWork, unit_of_work
from infra.settings import Settings
from models.db import Database
from transport import queue
from workers.queues import DELIVER, REPLAY_DEAD_LETTERS


class Services:
    def __init__(
        self,
        settings: Settings,
        *,
        publisher: queue.Publisher | None = None,
        database: Database | None = None,
    ) -> None:
        self.settings = settings
        self._publisher = publisher
        self._database = database
        self._unit: UnitOfWork | None = None
        self._celery = None
        self._tracker: PaymentTracker | None = None
        self._paypal_verifier = None

    @property
    def publisher(self) -> queue.Publisher:
        if self._publisher is None:
            url = self.settings.require("redis_url", "the receiver enqueues into Redis")
            self._publisher = queue.Publisher(
                queue.connect(url, timeout=self.settings.publish_timeout_seconds),
                attempts=self.settings.publish_attempts,
            )
        return self._publisher

    @property
    def paypal_verifier(self):
        """Checks PayPal deliveries (receiver/verifiers.py); its certificates are cached in the queue's Redis."""
        if self._paypal_verifier is None:
            from receiver.verifiers import PayPalVerifier
            from transport.certificates import RedisCertificateStore

            self._paypal_verifier = PayPalVerifier(self.settings, RedisCertificateStore(self.publisher.client))
        return self._paypal_verifier

    @property
    def database(self) -> Database:
        if self._database is None:
            url = self.settings.require("database_url", "the API reads PostgreSQL")
            self._database = Database(url, pool_size=2, lock_timeout_seconds=self.settings.database_lock_timeout_seconds)
        return self._database

    @property
    def unit(self) -> UnitOfWork:
        """For the API's synchronous paths (verify, replay): the same unit of work as the workers'."""
        if self._unit is None:
            self._unit = unit_of_work(self.database, self.settings)
        return self._unit

    @property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.unit)

    @property
    def jobs(self) -> Jobs:
        return Jobs(self.unit, self._enqueue_job)

    @property
    def celery(self):
        """A Celery client, to hand work to the workers through the broker."""
        if self._celery is None:
            from workers.celery_app import make_celery

            self._celery = make_celery(self.settings)
        return self._celery

    def _enqueue_job(self, job_id: int) -> None:
        self.celery.send_task(REPLAY_DEAD_LETTERS, (job_id,), argsrepr=repr((job_id,)))

    @property
    def outbound(self) -> Outbound:
        return Outbound(self.database, self.settings)

    def send_deliveries(self, delivery_ids: list[int]) -> None:
        """Ask the workers to try these deliveries now (the outbound queue)."""
        if delivery_ids:
            self.celery.send_task(DELIVER, (list(delivery_ids),), argsrepr=repr((list(delivery_ids),)))

    @property
    def tracker(self) -> PaymentTracker:
        if self._tracker is None:
            self._tracker = PaymentTracker(self.unit, self.settings)
        return self._tracker

    @property
    def manual(self) -> ManualPayments:
        return ManualPayments(self.tracker)


def services() -> Services:
    return current_app.extensions["payhooks"]
