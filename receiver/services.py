"""The receiver's side effects, built lazily once per process (after gunicorn forks)."""

from __future__ import annotations

from flask import current_app

from models.db import Database
from workers.dlq import DeadLetters
from workers.jobs import Jobs
from workers.publish import EventPublisher
from workers.settings import Settings
from workers.tracker import PaymentTracker


class Services:
    def __init__(
        self,
        settings: Settings,
        *,
        publisher: EventPublisher | None = None,
        database: Database | None = None,
    ) -> None:
        self.settings = settings
        self._publisher = publisher
        self._database = database
        self._tracker: PaymentTracker | None = None

    @property
    def publisher(self) -> EventPublisher:
        if self._publisher is None:
            self._publisher = EventPublisher(
                self.settings.require("redis_url", "the receiver enqueues into Redis"),
                timeout=self.settings.publish_timeout_seconds,
                attempts=self.settings.publish_attempts,
            )
        return self._publisher

    @property
    def database(self) -> Database:
        if self._database is None:
            url = self.settings.require("database_url", "the API reads PostgreSQL")
            self._database = Database(url, pool_size=2)
        return self._database

    @property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.database, self.settings.rules())

    @property
    def jobs(self) -> Jobs:
        return Jobs(self.database, self.settings.rules(), self.publisher.client)

    @property
    def tracker(self) -> PaymentTracker:
        if self._tracker is None:
            self._tracker = PaymentTracker(self.database, self.settings)
        return self._tracker


def services() -> Services:
    return current_app.extensions["payhooks"]
