"""Telling the host application: outbox messages fanned out to their consumers, and delivered.

Three kinds of consumer read the outbox, the same way: webhook endpoints
(signed per the Standard Webhooks specification), the e-mail receipt, and
in-process hooks (application/hooks.py). ``dispatch`` turns undispatched
messages into one delivery per consumer that wants them, after the money
transaction committed, never inside it. ``deliver`` leases one delivery, tries
it outside any transaction, and records the attempt: delivered; retried later
with full-jitter backoff (infra/backoff.py) capped at
``OUTBOUND_RETRY_MAX_SECONDS`` until ``OUTBOUND_RETRY_WINDOW_SECONDS`` after it
was created (3 days by default), then failed; or, on 410 Gone, failed and its
endpoint disabled.

Every message is delivered at least once per consumer and idempotent by its
id (``webhook-id``): a worker killed after the endpoint answered but before
the attempt was recorded delivers it again once the lease runs out. Order per
user is best effort: deliveries are created and first tried in outbox order,
but a retried message does not hold back the ones after it.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from sqlalchemy import select, text
from standardwebhooks import Webhook

from application import hooks, receipts
from application.endpoints import ALL_TYPES, Endpoints
from infra import metrics
from infra.backoff import backoff_seconds
from infra.settings import Settings, redact_url
from models import outbound
from models.db import Database
from models.outbound import EMAIL, Announced, Leased
from models.tables import WebhookEndpoint

log = logging.getLogger("payhooks.outbound")

USER_AGENT = "payhooks-webhooks/1"
PARALLEL = 10  # deliveries a worker process tries side by side


@dataclass(frozen=True)
class Attempt:
    outcome: str  # delivered, retry, gone
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Result:
    delivery_id: int
    outcome: str  # delivered, retry, failed, gone; "skipped" if it was not ours to try
    retry_in: float | None = None


def body_of(message: Announced) -> bytes:
    """The Standard Webhooks payload: type, timestamp (when the change was written), data."""
    return orjson.dumps({"type": message.type, "timestamp": message.created_at.isoformat(), "data": message.data})


def sign(secrets: tuple[str, ...], message_id: str, at: datetime, body: bytes) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per secret, space-separated."""
    data = body.decode()
    return " ".join(Webhook(secret).sign(message_id, at, data) for secret in secrets)


class Outbound:
    def __init__(self, database: Database, settings: Settings, *, http: httpx.Client | None = None) -> None:
        self.database = database
        self.settings = settings
        self.endpoints = Endpoints(database, settings)
        self._http = http
        self.__pool: ThreadPoolExecutor | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            timeout = self.settings.outbound_timeout_seconds
            self._http = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                                      headers={"user-agent": USER_AGENT})
        return self._http

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.settings.outbound_retry_window_seconds)

    # -- fan out -------------------------------------------------------------------

    def dispatch(self, limit: int = 500) -> list[int]:
        """Fan out up to ``limit`` undispatched messages into deliveries; the new delivery ids, in outbox order."""
        with self.database.transaction() as session:
            messages = outbound.undispatched(session, limit)
            if not messages:
                return []
            endpoints = session.execute(
                select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(WebhookEndpoint.status == "enabled")
            ).all()
            emails = self._with_address(session, messages) if self.settings.email_receipts else set()
            rows = []
            for message in messages:
                for endpoint_id, types in endpoints:
                    if message.type in types or ALL_TYPES in types:
                        rows.append((message.id, outbound.webhook_consumer(endpoint_id), endpoint_id))
                if message.id in emails:
                    rows.append((message.id, EMAIL, None))
                for name in hooks.subscribed(message.type):
                    rows.append((message.id, outbound.hook_consumer(name), None))
            created = outbound.create(session, rows, self.window)
            outbound.mark_dispatched(session, [m.id for m in messages])
        return created

    @staticmethod
    def _with_address(session, messages: list[Announced]) -> set[int]:
        """Receipt messages whose payment has the buyer's address."""
        wanted = {m.id: m.data.get("payment_id") for m in messages if m.type in receipts.RECEIPT_TYPES}
        payment_ids = sorted({p for p in wanted.values() if isinstance(p, int)})
        if not payment_ids:
            return set()
        known = set(
            session.scalars(
                text("SELECT id FROM payments WHERE id = ANY(CAST(:ids AS bigint[])) AND customer_email IS NOT NULL"),
                {"ids": payment_ids},
            )
        )
        return {outbox_id for outbox_id, payment_id in wanted.items() if payment_id in known}

    # -- deliver ---------------------------------------------------------------------

    def deliver(self, delivery_id: int) -> Result:
        """Try one delivery if it is due and nobody holds it; record the attempt."""
        return self.deliver_many([delivery_id])[0]

    def deliver_many(self, delivery_ids: list[int]) -> list[Result]:
        """Try the due ones of these deliveries, PARALLEL at a time, started in outbox order; one result per id.

        One transaction leases them all, one records every attempt: the commits,
        not the requests, are what a delivery costs the database.
        """
        with self.database.transaction() as session:
            leased = outbound.lease(session, delivery_ids, self.lease_seconds(delivery_ids))
            endpoint_ids = {d.endpoint_id for d in leased if d.endpoint_id is not None}
            endpoints = {
                row.id: row for row in session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.id.in_(endpoint_ids)))
            } if endpoint_ids else {}
            session.expunge_all()
        finished = list(self._pool.map(lambda delivery: self._attempt(delivery, endpoints), leased))
        if finished:
            with self.database.transaction() as session:
                # A record lost with PostgreSQL itself means a second delivery of the same id, which
                # receivers dedupe: not worth a disk flush per batch.
                session.execute(text("SET LOCAL synchronous_commit = off"))
                outbound.finish(session, finished)
                gone = sorted({f.leased.endpoint_id for f in finished if f.outcome == "gone" and f.status_code == 410})
                if gone:
                    session.execute(
                        text("UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = :why, updated_at = now() "
                             "WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'enabled'"),
                        {"ids": gone, "why": "the endpoint answered 410 Gone"},
                    )
            self._report(finished, endpoints)
        by_id = {f.leased.id: Result(f.leased.id, f.outcome, f.retry_in) for f in finished}
        return [by_id.get(delivery_id, Result(delivery_id, "skipped")) for delivery_id in delivery_ids]

    def lease_seconds(self, delivery_ids: list[int]) -> float:
        """Longer than the rounds of PARALLEL attempts a chunk takes (each within its connect, write and read timeouts)."""
        return 3 * self.settings.outbound_timeout_seconds * math.ceil(len(delivery_ids) / PARALLEL) + 5

    @property
    def _pool(self) -> ThreadPoolExecutor:
        if self.__pool is None:
            self.__pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="payhooks-outbound")
        return self.__pool

    def _attempt(self, leased: Leased, endpoints: dict[int, WebhookEndpoint]) -> outbound.Finished:
        started = time.monotonic()
        endpoint = endpoints.get(leased.endpoint_id) if leased.endpoint_id is not None else None
        try:
            attempt = self._try(leased, endpoint)
        except Exception as exc:  # a consumer's failure is this delivery's, never the worker's
            attempt = Attempt("retry", error=exc.__class__.__name__)
        latency_ms = int((time.monotonic() - started) * 1000)
        outcome, status, retry_in = attempt.outcome, outbound.DELIVERED, None
        if outcome == "gone":
            status = outbound.FAILED
        elif outcome == "retry":
            retry_in = backoff_seconds(
                leased.attempt - 1,
                base=self.settings.outbound_retry_base_seconds,
                cap=self.settings.outbound_retry_max_seconds,
            )
            if datetime.now(UTC) + timedelta(seconds=retry_in) > leased.give_up_at:
                outcome, status, retry_in = "failed", outbound.FAILED, None
            else:
                status = outbound.PENDING
        return outbound.Finished(leased, outcome, status, attempt.status_code, latency_ms, attempt.error, retry_in)

    def _try(self, leased: Leased, endpoint: WebhookEndpoint | None) -> Attempt:
        if leased.consumer.startswith("webhook:"):
            if endpoint is None or endpoint.status != "enabled":
                return Attempt("gone", error="endpoint disabled")
            return self._post(leased, endpoint)
        if leased.consumer == EMAIL:
            return self._email(leased)
        if leased.consumer.startswith("hook:"):
            return self._hook(leased)
        return Attempt("gone", error="unknown consumer")

    def _post(self, leased: Leased, endpoint: WebhookEndpoint) -> Attempt:
        message = leased.message
        now = datetime.now(UTC)
        body = body_of(message)
        headers = {
            "content-type": "application/json",
            "webhook-id": message.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(self.endpoints.signing(endpoint, now).secrets, message.message_id, now, body),
        }
        try:
            response = self.http.post(endpoint.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Attempt("retry", error=exc.__class__.__name__)
        code = response.status_code
        if 200 <= code < 300:
            return Attempt("delivered", code)
        if code == 410:
            return Attempt("gone", code, "HTTP 410 Gone")
        return Attempt("retry", code, f"HTTP {code}")

    def _email(self, leased: Leased) -> Attempt:
        data = leased.message.data
        with self.database.transaction() as session:
            address = session.scalar(text("SELECT customer_email FROM payments WHERE id = :id"), {"id": data.get("payment_id")})
        if not address:
            return Attempt("gone", error="no address")
        email = receipts.render(leased.message.type, data, address, self.settings.smtp_from)
        try:
            receipts.send(self.settings, email)
        except receipts.SmtpError as exc:
            return Attempt("retry", error=str(exc))
        return Attempt("delivered")

    def _hook(self, leased: Leased) -> Attempt:
        name = leased.consumer.removeprefix("hook:")
        fn = hooks.get(name)
        if fn is None:
            return Attempt("retry", error="hook not registered in this worker (HOOK_MODULES)")
        message = leased.message
        fn(hooks.Announcement(message.message_id, message.type, message.user_id, message.data, message.created_at))
        return Attempt("delivered")

    def _report(self, finished: list[outbound.Finished], endpoints: dict[int, WebhookEndpoint]) -> None:
        for f in finished:
            kind = f.leased.consumer.split(":", 1)[0]
            metrics.OUTBOUND_ATTEMPTS.labels(kind, f.outcome).inc()
            if f.outcome == "delivered":
                continue
            endpoint = endpoints.get(f.leased.endpoint_id) if f.leased.endpoint_id is not None else None
            where = f"endpoint {endpoint.id} ({redact_url(endpoint.url)})" if endpoint is not None else kind
            log.warning("delivery %d of %s to %s, attempt %d: %s (%s)%s", f.leased.id, f.leased.message.message_id, where,
                        f.leased.attempt, f.outcome, f.error, f"; next in {f.retry_in:.1f} s" if f.retry_in is not None else "")
            if f.status_code == 410 and endpoint is not None:
                log.warning("webhook endpoint %d disabled: it answered 410 Gone", endpoint.id)

    # -- recovery and replay ---------------------------------------------------------

    def due(self, *, late: float, limit: int = 1000) -> list[int]:
        with self.database.transaction() as session:
            return outbound.due(session, late=late, limit=limit)

    def replayable(self, endpoint_id: int, *, message_id: str | None = None,
                   since: datetime | None = None, until: datetime | None = None) -> list[int]:
        self.endpoints.get(endpoint_id)  # EndpointNotFoundError
        with self.database.transaction() as session:
            return outbound.replayable(session, endpoint_id, message_id=message_id, since=since, until=until)

    def reopen(self, delivery_id: int) -> bool:
        """Make one delivery due now with a fresh retry window; False if a worker holds it right now."""
        with self.database.transaction() as session:
            return outbound.reopen(session, delivery_id, self.window)
