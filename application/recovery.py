"""Recovery: credit what the provider took even when no webhook for it arrives.

Three ways to ask the provider, all applying its answer through the same path
as a webhook (the unit of work), so the idempotency keys are the same and a
sweep, a verify and a webhook racing on one session grant once:

* ``sweep_pending``: payments still pending or processing after a minimum age
  are looked up (Stripe: retrieve the Checkout Session). Paid → completed and
  granted; expired at the provider, or past ``expires_at`` plus a grace period
  and confirmed unpaid → expired; still open → left alone. Payments are claimed
  in batches with ``FOR UPDATE SKIP LOCKED`` and a lease (``next_check_at``),
  so two beats or many workers never look at one payment at once, and no
  transaction stays open across a provider call. A provider outage stops the
  batch and leaves the rest for the next sweep.
* ``reconcile_events``: the provider's events since a stored cursor (minus an
  overlap) of the types we handle; those missing from the inbox are processed,
  marked as found by reconciliation. The cursor moves only after a clean run.
* ``verify``: one session, now (the success page loaded before the webhook).

A provider answer becomes a synthetic event whose id names its source and the
state it saw (``sweep:cs_…:paid:complete``), so each distinct answer is applied
once and recorded in the inbox like any event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from application import lookups
from application.batch import EventResult, Incoming
from application.errors import is_transient
from application.unit import UnitOfWork
from models.enums import EventStatus
from models.payments import claim_for_check, release_claims
from models.reconciliation import advance_cursor, read_cursor
from models.tables import CreditLedger, Payment, WebhookEvent
from providers import stripe
from providers.changes import ProviderEvent
from providers.errors import ProviderRequestError
from providers.stripe_api import ProviderUnavailableError, StripeAPI

log = logging.getLogger("payhooks.recovery")


def session_event(source: str, checkout_session: dict, now: datetime) -> ProviderEvent | None:
    """The event a provider's view of a session amounts to; None while it is still open and unpaid."""
    paid = checkout_session.get("payment_status") in ("paid", "no_payment_required")
    status = checkout_session.get("status")
    if paid:
        event_type = "checkout.session.completed"
    elif status == "expired":
        event_type = "checkout.session.expired"
    else:
        return None
    event_id = f"{source}:{checkout_session['id']}:{checkout_session.get('payment_status')}:{status}"
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(now.timestamp()),
        "data": {"object": checkout_session},
    }
    return stripe.parse_event(json.dumps(body, separators=(",", ":")))


def expired_event(source: str, checkout_session: dict, now: datetime) -> ProviderEvent:
    """Past its expiry plus grace and confirmed unpaid: expire it on our side."""
    body = {
        "id": f"{source}:{checkout_session['id']}:unpaid:overdue",
        "object": "event",
        "type": "checkout.session.expired",
        "created": int(now.timestamp()),
        "data": {"object": checkout_session},
    }
    return stripe.parse_event(json.dumps(body, separators=(",", ":")))


@dataclass
class SweepReport:
    checked: int = 0
    completed: int = 0
    expired: int = 0
    still_open: int = 0
    unavailable: bool = False
    errors: list[str] = field(default_factory=list)
    decisions: list[tuple[int, str, str]] = field(default_factory=list)  # (payment id, session id, outcome)


class RateLimit:
    """At most ``per_second`` provider calls a second, for one sweep."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic, sleep=time.sleep) -> None:
        self.interval = 1.0 / per_second
        self.clock, self.sleep = clock, sleep
        self.next_at = clock()

    def wait(self) -> None:
        now = self.clock()
        if now < self.next_at:
            self.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


@dataclass(frozen=True)
class Claimed:
    """A pending payment a sweep claimed, to ask its provider about."""

    payment_id: int
    status: str  # pending or processing
    session_id: str
    expires_at: datetime | None

    def overdue(self, now: datetime, grace: timedelta) -> bool:
        return self.expires_at is not None and now - grace > self.expires_at  # no overflow near year 9999


class ProviderRecovery:
    """What every provider's recovery shares: the sweep loop and applying what it found.

    A subclass names its ``provider`` and says in ``look`` how to ask about one
    claimed payment and what the answer means.
    """

    provider: str

    def __init__(self, unit: UnitOfWork) -> None:
        self.unit = unit
        self.database = unit.database

    def look(self, claim: Claimed, *, now: datetime, expiry_grace: timedelta) -> tuple[str, ProviderEvent | None]:
        """An outcome ("completed", "expired", "failed", "still open", ...) and the event to apply, if any."""
        raise NotImplementedError

    def sweep_pending(
        self,
        *,
        min_age: timedelta,
        expiry_grace: timedelta,
        batch_size: int = 100,
        calls_per_second: float = 20.0,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> SweepReport:
        """Claim this provider's pending payments, ask about each at a bounded rate, apply what is found.

        The one sweep loop: claims (``SKIP LOCKED`` and a lease, no transaction across
        a call), the rate limit, a provider outage (stop, and hand the unasked claims
        back at once), one payment's failure (reported, the sweep goes on) and the
        counting.
        """
        now = now or datetime.now(UTC)
        unit, provider = self.unit, self.provider
        report = SweepReport()
        with unit.database.transaction() as session:
            rows = claim_for_check(
                session, now=now, older_than=now - min_age, lease_until=now + timedelta(seconds=60), limit=batch_size,
                dry_run=dry_run, providers=[provider],
            )
        claimed = [Claimed(*row) for row in rows]
        limit = RateLimit(calls_per_second)
        for index, claim in enumerate(claimed):
            limit.wait()
            try:
                outcome, event = self.look(claim, now=now, expiry_grace=expiry_grace)
            except ProviderUnavailableError as exc:
                report.unavailable = True
                report.errors.append(str(exc))
                unchecked = [c.payment_id for c in claimed[index:]]
                log.warning("%s sweep stopped: %s; %d payments left for the next sweep", provider, exc, len(unchecked))
                if not dry_run:
                    with unit.database.transaction() as session:
                        release_claims(session, unchecked)
                break
            except Exception as exc:  # one bad session must not stop the sweep
                report.errors.append(f"{claim.session_id}: {exc}")
                continue
            report.checked += 1
            if event is not None and not dry_run:
                try:
                    self._apply(event, source="sweep")
                except ProviderUnavailableError:
                    raise
                except Exception as exc:  # one bad session must not stop the sweep
                    log.exception("%s sweep could not apply %s", provider, claim.session_id)
                    report.errors.append(f"{claim.session_id}: {exc.__class__.__name__}: {exc}")
                    continue
            report.decisions.append((claim.payment_id, claim.session_id, outcome))
            if outcome == "completed":
                report.completed += 1
            elif outcome in ("expired", "failed"):
                report.expired += 1
            else:
                report.still_open += 1
        return report

    def _apply(self, event: ProviderEvent, *, source: str) -> EventResult:
        return apply_found(self.unit, event, source=source)


def apply_found(unit: UnitOfWork, event: ProviderEvent, *, source: str) -> EventResult:
    """Apply what recovery found (a sweep, reconciliation, verify); a failure is logged, and dead-lettered by the unit."""
    result = unit.apply_one(Incoming(event, source))
    if result.status == EventStatus.FAILED:
        log.error("%s could not apply %s: %s", source, event.id, result.error)
    return result


class Recovery(ProviderRecovery):
    provider = stripe.NAME

    def __init__(self, unit: UnitOfWork, stripe_api: StripeAPI) -> None:
        super().__init__(unit)
        self.stripe_api = stripe_api

    def look(self, claim: Claimed, *, now: datetime, expiry_grace: timedelta) -> tuple[str, ProviderEvent | None]:
        """A session paid is completed; expired at Stripe, or past its expiry plus the grace and unpaid, expired."""
        checkout = self.stripe_api.retrieve_checkout_session(claim.session_id)
        event = session_event("sweep", checkout, now)
        if event is None and claim.overdue(now, expiry_grace):
            event = expired_event("sweep", checkout, now)
        if event is None:
            return "still open", None
        return ("completed" if event.type.endswith("completed") else "expired"), event

    # -- reconcile ------------------------------------------------------------------

    def reconcile_events(
        self,
        *,
        overlap: timedelta,
        initial_lookback: timedelta,
        since: datetime | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> dict:
        """Process every provider event we handle that the inbox lacks; return what was found."""
        return reconcile_listed(
            self.database, stripe.NAME,
            lambda start: self.stripe_api.list_events(created_gte=int(start.timestamp()), types=stripe.HANDLED_TYPES),
            created_of=lambda raw: datetime.fromtimestamp(raw["created"], UTC),
            handled=lambda raw: True,  # the listing asks for the handled types only
            parse=lambda raw: stripe.parse_event(json.dumps(raw, separators=(",", ":"))),
            apply=self._apply,
            overlap=overlap, initial_lookback=initial_lookback, since=since, dry_run=dry_run, now=now,
        )

    # -- verify -------------------------------------------------------------------

    def verify(self, session_id: str, *, now: datetime | None = None) -> dict:
        """Ask the provider about one session now and apply its answer."""
        now = now or datetime.now(UTC)
        checkout = self.stripe_api.retrieve_checkout_session(session_id)
        event = session_event("verify", checkout, now)
        credits_added = 0
        if event is not None:
            result = self._apply(event, source="verify")
            look_up_now(self.unit, self.stripe_api, stripe.NAME, session_id, result)
            credits_added = self._credits_added(event.id) if not result.duplicate else 0
        return verification(
            self.database, stripe.NAME, session_id, credits_added,
            provider_status=checkout.get("status"), provider_payment_status=checkout.get("payment_status"),
        )

    # -- shared -----------------------------------------------------------------

    def _credits_added(self, cause: str) -> int:
        return credits_added(self.database, cause)


def look_up_now(unit: UnitOfWork, api, provider: str, session_id: str, result: EventResult) -> None:
    """A verified event held for a lookup (a session's line items, a PayPal capture): look it up now.

    Workers do it after their commit through the lookup task; verify runs in the
    web process while the buyer waits on the return page, so it does it here,
    after its own commit, rather than leave it to the next retry of held events.
    Whatever fails leaves the event held, as it would be anyway.
    """
    if result.status != EventStatus.HELD:
        return
    try:
        lookups.look_up_session(unit, api, provider, session_id)
    except (ProviderRequestError, ProviderUnavailableError) as exc:
        log.warning("verify could not look %s %s up now (%s); the held event waits for its retry",
                    provider, session_id, exc.__class__.__name__)
    except Exception as exc:  # verify's own event is committed: answer what stands, never an error for this
        if is_transient(exc):
            log.warning("verify's lookup of %s %s met %s; the held event waits for its retry",
                        provider, session_id, exc.__class__.__name__)
        else:
            log.exception("verify's lookup of %s %s failed; the held event waits for its retry", provider, session_id)


def verification(
    database, provider: str, session_id: str, credits_added: int, *, provider_status, provider_payment_status
) -> dict:
    """What verify answers: the payment as it now stands, and what the provider said."""
    with database.transaction() as session:
        payment = session.scalars(
            select(Payment).where(Payment.provider == provider, Payment.provider_session_id == session_id)
        ).one_or_none()
        balance = None
        if payment is not None:
            balance = int(session.scalar(
                select(func.coalesce(func.sum(CreditLedger.amount), 0)).where(CreditLedger.user_id == payment.user_id)
            ))
    return {
        "session_id": session_id,
        "payment_verified": bool(payment is not None and payment.paid_at is not None),
        "status": payment.status if payment is not None else None,
        "provider_status": provider_status,
        "provider_payment_status": provider_payment_status,
        "credits_added": credits_added,
        "balance": balance,
    }


def credits_added(database, cause: str) -> int:
    with database.transaction() as session:
        return int(session.scalar(
            select(func.coalesce(func.sum(CreditLedger.amount), 0)).where(CreditLedger.cause == cause)
        ))


def reconcile_listed(
    database,
    provider: str,
    list_since: Callable[[datetime], Iterator[dict]],
    *,
    created_of: Callable[[dict], datetime | None],
    handled: Callable[[dict], bool],
    parse: Callable[[dict], ProviderEvent],
    apply: Callable[..., EventResult],
    overlap: timedelta,
    initial_lookback: timedelta,
    since: datetime | None,
    dry_run: bool,
    now: datetime | None,
) -> dict:
    """Walk a provider's event listing from its cursor (less an overlap) and apply what the inbox lacks.

    One inbox query per page of 100; the cursor advances to the newest event
    seen, so the next run starts there (a dry run moves nothing).
    """
    now = now or datetime.now(UTC)
    with database.transaction() as session:
        cursor = read_cursor(session, provider)
    if since is None:
        since = cursor - overlap if cursor else now - initial_lookback
    report = {"since": since.isoformat(), "listed": 0, "missing": 0, "applied": 0, "missing_ids": []}
    newest = cursor
    for page in _pages(list_since(since), 100):
        page = [raw for raw in page if isinstance(raw.get("id"), str)]
        report["listed"] += len(page)
        with database.transaction() as session:
            known = set(session.scalars(
                select(WebhookEvent.provider_event_id).where(
                    WebhookEvent.provider == provider,
                    WebhookEvent.provider_event_id.in_([raw["id"] for raw in page]),
                )
            ))
        for raw in page:
            created = created_of(raw)
            if created is not None:
                newest = max(newest, created) if newest else created
            if raw["id"] in known or not handled(raw):
                continue
            report["missing"] += 1
            report["missing_ids"].append(raw["id"])
            if not dry_run:
                apply(parse(raw), source="reconcile")
                report["applied"] += 1
    if not dry_run and newest is not None:
        with database.transaction() as session:
            advance_cursor(session, provider, newest)
    report["cursor"] = newest.isoformat() if newest else None
    return report


def _pages(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    page: list[dict] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page
