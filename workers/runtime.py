"""What a worker process holds on to: its settings and its database handle."""

from __future__ import annotations

from models.db import Database
from models.rules import Rules
from providers.stripe_api import StripeAPI
from workers.publish import EventPublisher
from workers.recovery import Recovery
from workers.settings import Settings


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules: Rules = settings.rules()
        self._db: Database | None = None
        self._publisher: EventPublisher | None = None

    @property
    def publisher(self) -> EventPublisher:
        """For the journal: forgetting settled events and publishing lost ones again."""
        if self._publisher is None:
            self._publisher = EventPublisher(
                self.settings.require("redis_url", "the workers need a Redis broker"),
                timeout=max(self.settings.publish_timeout_seconds, 2.0),
                attempts=self.settings.publish_attempts,
            )
        return self._publisher

    @property
    def db(self) -> Database:
        if self._db is None:
            url = self.settings.require("database_url", "the workers need PostgreSQL")
            self._db = Database(url, pre_ping=False)
        return self._db

    def recovery(self) -> Recovery:
        """Sweeps, reconciliation and verify; StripeNotConfiguredError without STRIPE_API_KEY."""
        return Recovery(self.db, self.rules, StripeAPI(self.settings.stripe_api_key, self.settings.stripe_api_base))

    def forget_connections(self) -> None:
        """After fork: never share a parent's pooled connections with a child."""
        if self._db is not None:
            self._db.engine.dispose(close=False)
            self._db = None
        self._publisher = None
