"""What a worker process holds on to: its settings, its connections and the one unit of work.

Built lazily, once per process (after a prefork child is forked, never before:
``forget_connections``), so no connection is ever shared across a fork.
"""

from __future__ import annotations

import logging

import redis

from application.dlq import DeadLetters
from application.outbound import Outbound
from application.recovery import Recovery
from application.unit import UnitOfWork, unit_of_work
from infra.settings import Settings
from models.db import Database
from providers.paypal_api import PayPalAPI
from providers.stripe_api import StripeAPI
from transport import queue

log = logging.getLogger("payhooks.runtime")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Database | None = None
        self._unit: UnitOfWork | None = None
        self._redis: redis.Redis | None = None
        self._paypal_api: PayPalAPI | None = None
        self._outbound: Outbound | None = None
        self.follow_ups: list = []  # after-commit hooks the Celery app adds (lookups)

    @property
    def db(self) -> Database:
        if self._db is None:
            url = self.settings.require("database_url", "the workers need PostgreSQL")
            self._db = Database(url, pre_ping=False, lock_timeout_seconds=self.settings.database_lock_timeout_seconds)
        return self._db

    @property
    def unit(self) -> UnitOfWork:
        if self._unit is None:
            self._unit = unit_of_work(self.db, self.settings, *self.follow_ups)
        return self._unit

    @property
    def redis(self) -> redis.Redis:
        """The events queue's Redis (the broker's), for consumers and queue gauges."""
        if self._redis is None:
            url = self.settings.require("redis_url", "the workers need a Redis broker")
            # Long enough for a blocking claim (1 s) with margin; the consumer retries on its own.
            self._redis = queue.connect(url, timeout=10.0)
        return self._redis

    @property
    def outbound(self) -> Outbound:
        """Outbox fan-out and delivery (webhooks, e-mail receipts, in-process hooks)."""
        if self._outbound is None:
            self._outbound = Outbound(self.db, self.settings)
        return self._outbound

    DISPATCH_FLAG = "payhooks:outbox:dispatch-requested"

    def dispatch_requested(self, requested: bool = True) -> bool:
        """Coalesce dispatch requests: True if this call is the one that should send the task.

        Set by batches after commit (at most one dispatch message waits at a time), cleared
        by the dispatch task when it starts. Expires, so a lost message costs seconds at most
        (beat's kick dispatches anyway).
        """
        if not requested:
            self.redis.delete(self.DISPATCH_FLAG)
            return False
        return bool(self.redis.set(self.DISPATCH_FLAG, b"1", nx=True, ex=10))

    def recovery(self) -> Recovery:
        """Sweeps, reconciliation and verify; StripeNotConfiguredError without STRIPE_API_KEY."""
        return Recovery(self.unit, StripeAPI(self.settings.reveal("stripe_api_key"), self.settings.stripe_api_base))

    def recoveries(self) -> list:
        """The recovery of every provider with API credentials (Stripe's, PayPal's); skipped ones are logged."""
        from application.paypal_recovery import PayPalRecovery
        from providers.paypal_api import PayPalNotConfiguredError
        from providers.stripe_api import StripeNotConfiguredError

        found = []
        for provider, build in (("stripe", self.recovery), ("paypal", lambda: PayPalRecovery(self.unit, self.provider_api("paypal")))):
            try:
                found.append(build())
            except (StripeNotConfiguredError, PayPalNotConfiguredError) as exc:
                log.info("%s recovery skipped: %s", provider, exc)
        return found

    def provider_api(self, provider: str):
        """The provider's API client (PayPal's is kept: its OAuth token is cached in it).

        StripeNotConfiguredError / PayPalNotConfiguredError without credentials.
        """
        if provider == "paypal":
            if self._paypal_api is None:
                s = self.settings
                self._paypal_api = PayPalAPI(s.paypal_client_id, s.reveal("paypal_client_secret"), s.paypal_api_url)
            return self._paypal_api
        return StripeAPI(self.settings.reveal("stripe_api_key"), self.settings.stripe_api_base)

    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.unit)

    def forget_connections(self) -> None:
        """After fork: never share a parent's pooled connections with a child."""
        if self._db is not None:
            self._db.engine.dispose(close=False)
        self._db = None
        self._unit = None
        self._redis = None
        self._paypal_api = None
        self._outbound = None
