"""Apply a batch of events inside the caller's transaction, in a fixed number of round trips.

1. claim every event in the inbox (one upsert; a settled event is a duplicate);
2. translate each into a change (pure);
3. take the advisory locks of everything the batch is about, in key order;
4. lock and load the payments and subscriptions those changes name;
5. apply the changes in order, in memory (application/apply.py, application/world.py):
   each event commits its step or, if it raises, leaves nothing behind;
6. release held events: those held earlier in this batch as soon as what they
   wait for is applied, then those held by earlier transactions (one query per
   wave, usually one wave);
7. write everything back: payments, history, attempts, ledger and balances,
   subscriptions, dead letters, and each event's outcome in the inbox.

An event ends processed, ignored (with the reason), held (with the key of
what it waits for) or failed (dead-lettered with its raw body). A database
error propagates: the whole transaction rolls back and the caller decides
(retry, or one event at a time).
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field, replace

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from application import announcements
from application.apply import (
    CREATES_PAYMENTS,
    NothingToRecordError,
    apply_change,
    payment_refs,
    subject_keys,
    subscription_refs,
)
from application.world import Step, World
from models import dead_letters, history, inbox, keys, ledger, outbox, payments, subscriptions
from models.enums import ErrorClass, EventStatus
from models.errors import LookupNeededError, NotReadyError, StaleEventError, UnknownPaymentError
from models.lifecycle import TransitionError
from models.rules import Rules
from providers import registry
from providers.changes import Change, InvalidEventError, ProviderEvent

log = logging.getLogger("payhooks.batch")

PERMANENT = (InvalidEventError, UnknownPaymentError)
NOTHING_TO_DO = (TransitionError, StaleEventError, NothingToRecordError)


@dataclass(frozen=True)
class Incoming:
    """An event to apply, and where it came from (webhook, sweep, verify, reconcile, replay, retry)."""

    event: ProviderEvent
    source: str = "webhook"
    received_at: float | None = None  # when the receiver accepted it (unix time), for lag


@dataclass(frozen=True)
class EventResult:
    provider: str
    event_id: str
    event_type: str
    source: str
    status: EventStatus
    duplicate: bool = False
    error: str | None = None
    error_class: ErrorClass | None = None
    hold_key: str | None = None
    payment_ids: tuple[int, ...] = ()
    credits: tuple[tuple[str, int], ...] = ()  # (ledger kind, amount) this event moved
    received_at: float | None = None
    created: float | None = None


@dataclass
class BatchReport:
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # to follow one transaction in the logs
    results: list[EventResult] = field(default_factory=list)
    posted: list[tuple[str, int]] = field(default_factory=list)  # (ledger kind, amount) really written
    mismatches: list[tuple[str, int]] = field(default_factory=list)  # (provider, payment id)
    lookups: set[tuple[str, str]] = field(default_factory=set)  # (provider, session id) to look up after commit
    announced: int = 0  # outbox messages written: after commit, the dispatcher has work

    def extend(self, other: BatchReport) -> None:
        self.batch_id = other.batch_id if not self.results else self.batch_id
        self.results += other.results
        self.posted += other.posted
        self.mismatches += other.mismatches
        self.lookups |= other.lookups
        self.announced += other.announced


@dataclass
class _Work:
    incoming: Incoming
    row_id: int
    payload: str
    change: Change | None = None
    keys: list[str] = field(default_factory=list)
    status: EventStatus | None = None
    error: str | None = None
    error_class: ErrorClass | None = None
    trace: str | None = None
    hold_key: str | None = None
    payment_ids: tuple[int, ...] = ()
    credits: tuple[tuple[str, int], ...] = ()

    @property
    def event(self) -> ProviderEvent:
        return self.incoming.event


_LOCK_KEYS = text(
    # Volatile functions in the select list run after ORDER BY, so the locks are
    # taken in key order: two transactions never wait on each other in a cycle.
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"
)


def lock_keys(session: Session, subject_keys: set[str] | list[str]) -> None:
    if subject_keys:
        session.execute(_LOCK_KEYS, {"keys": sorted(set(subject_keys))})


def run(session: Session, batch: list[Incoming], rules: Rules) -> BatchReport:
    """Apply a batch of events (any mix of providers and sources) in the caller's transaction."""
    report = BatchReport()
    unique: dict[tuple[str, str], Incoming] = {}
    repeats: list[Incoming] = []
    for incoming in batch:
        key = (incoming.event.provider, incoming.event.id)
        if key in unique:
            repeats.append(incoming)
        else:
            unique[key] = incoming
    arrivals = list(unique.values())
    copies = Counter((i.event.provider, i.event.id) for i in batch)
    claimed = inbox.claim(
        session,
        [
            inbox.Arrival(i.event.provider, i.event.id, i.event.type, i.event.raw, i.event.created, i.source,
                          copies[(i.event.provider, i.event.id)])
            for i in arrivals
        ],
    )

    work: list[_Work] = []
    for incoming, claim in zip(arrivals, claimed, strict=True):
        if claim.settled:
            report.results.append(_result(incoming, claim.status, duplicate=True))
            continue
        item = _Work(incoming, claim.row_id, incoming.event.raw)
        _translate(item)
        work.append(item)

    lock_keys(session, {k for item in work for k in item.keys})
    world = World(
        load_payments=lambda refs: payments.lock_keys(session, refs),
        load_subscriptions=lambda refs: subscriptions.lock(session, refs),
        reserve_ids=lambda n: payments.reserve_ids(session, n),
        load_accounts=lambda users: ledger.lock_accounts(session, users),
    )
    live = [item for item in work if item.change is not None]
    world.preload(
        [ref for item in live for ref in payment_refs(item.event.provider, item.change)],
        [ref for item in live for ref in subscription_refs(item.event.provider, item.change)],
    )
    creating = sum(isinstance(item.change, CREATES_PAYMENTS) for item in live)
    if creating:
        world.reserve(creating)

    _apply_all(session, world, work, rules, report)

    payments.save(session, (world.payments[i] for i in world.dirty_payments))
    history.record_status_changes(session, world.effects.status_changes)
    history.record_attempts(session, world.effects.attempts)
    entries = ledger.post(session, world.effects.postings, rules.clawback_policy)
    report.posted = [(entry.kind, entry.amount) for entry in entries]
    ledger.hold(session, world.effects.holds)
    changed_subscriptions = [world.subscriptions[k] for k in world.dirty_subscriptions]
    subscriptions.save(session, changed_subscriptions)
    report.mismatches = list(world.effects.mismatches)
    report.announced += outbox.add(
        session,
        announcements.of_entries(entries, world.payments)
        + announcements.of_status_changes(world.effects.status_changes, world.payments)
        + announcements.of_subscriptions(changed_subscriptions),
    )

    outcomes = []
    for item in work:
        dead_letter_id = None
        if item.status == EventStatus.FAILED:
            report.announced += 1
            dead_letter_id = announcements.dead_letter(
                session,
                dead_letters.Failure(
                    item.event.provider, item.event.id, item.event.type, item.payload,
                    item.error_class, item.error, item.trace,
                ),
            )
        outcomes.append(inbox.Outcome(item.row_id, item.status, item.error, item.hold_key, dead_letter_id))
        report.results.append(
            _result(item.incoming, item.status, error=item.error, error_class=item.error_class,
                    hold_key=item.hold_key, payment_ids=item.payment_ids, credits=item.credits)
        )
    inbox.settle(session, outcomes)
    # A second copy of an event in the same batch is a duplicate of the first, whatever became of it.
    first = {(r.provider, r.event_id): r.status for r in report.results}
    for incoming in repeats:
        report.results.append(_result(incoming, first[(incoming.event.provider, incoming.event.id)], duplicate=True))
    return report


def _translate(item: _Work) -> None:
    try:
        item.change = registry.get(item.event.provider).translate(item.event)
        item.keys = subject_keys(item.event.provider, item.change)
    except InvalidEventError as exc:
        _fail(item, ErrorClass.PERMANENT, str(exc))
    except Exception as exc:  # a bug in a handler must cost this event only
        _fail(item, ErrorClass.UNEXPECTED, f"{exc.__class__.__name__}: {exc}", traceback.format_exc())


def _fail(item: _Work, error_class: ErrorClass, message: str, trace: str | None = None) -> None:
    item.status, item.error, item.error_class, item.trace, item.hold_key = EventStatus.FAILED, message, error_class, trace, None


def _apply_all(session: Session, world: World, work: list[_Work], rules: Rules, report: BatchReport) -> None:
    """Apply in order; a held event is retried as soon as an event touching its key is applied."""
    waiting: dict[str, list[_Work]] = defaultdict(list)
    queue = deque(work)
    touched: set[str] = set()
    in_batch = {item.row_id for item in work}

    def drain() -> None:
        while queue:
            item = queue.popleft()
            if item.change is None:
                continue
            _apply_one(world, item, rules, report)
            if item.status == EventStatus.HELD:
                waiting[item.hold_key].append(item)
            elif item.status == EventStatus.PROCESSED:
                for key in item.keys:
                    touched.add(key)
                    queue.extend(waiting.pop(key, ()))

    drain()
    # Events held by earlier transactions for what this batch touched, wave after wave.
    released_keys: set[str] = set()
    while touched - released_keys:
        wave = sorted(touched - released_keys)
        released_keys |= set(wave)
        for stored in inbox.held_for(session, wave, exclude=sorted(in_batch)):
            in_batch.add(stored.row_id)
            try:
                event = registry.get(stored.provider).parse_event(stored.payload)
            except (InvalidEventError, UnicodeDecodeError, TypeError) as exc:
                item = _Work(Incoming(ProviderEvent(stored.provider, stored.event_id, "unknown", None, {}, stored.payload or ""), "retry"), stored.row_id, stored.payload or "")
                _fail(item, ErrorClass.PERMANENT, f"stored body is not an event: {exc}")
                work.append(item)
                continue
            item = _Work(Incoming(event, "retry"), stored.row_id, stored.payload)
            _translate(item)
            work.append(item)
            if item.change is not None:
                lock_keys(session, item.keys)
                world.preload(payment_refs(event.provider, item.change), subscription_refs(event.provider, item.change))
                queue.append(item)
        drain()


def _apply_one(world: World, item: _Work, rules: Rules, report: BatchReport) -> None:
    step = world.step()
    try:
        applied = apply_change(step, item.event, item.change, rules)
    except PERMANENT as exc:
        _fail(item, ErrorClass.PERMANENT, str(exc))
        return
    except NOTHING_TO_DO as exc:
        item.status, item.error, item.hold_key = EventStatus.IGNORED, str(exc), None
        return
    except LookupNeededError as exc:
        item.status, item.error, item.hold_key = EventStatus.HELD, f"held: {exc}", exc.key
        report.lookups.add(_lookup_of(exc.key))
        return
    except NotReadyError as exc:
        item.status, item.error, item.hold_key = EventStatus.HELD, f"held: {exc}", exc.key
        return
    except SQLAlchemyError:
        raise  # the transaction is gone: the whole batch fails
    except Exception as exc:  # a bug: this event is dead-lettered with its traceback, the batch goes on
        log.exception("unexpected failure applying an event")
        _fail(item, ErrorClass.UNEXPECTED, f"{exc.__class__.__name__}: {exc}", traceback.format_exc())
        return
    _sign(step, item.event)
    world.commit(step)
    item.payment_ids = tuple(step.payment_ids)
    item.credits = tuple((p.kind.value, p.amount) for p in step.effects.postings)
    item.keys = sorted(set(item.keys) | _keys_of(world, step.payment_ids))
    if applied.changed:
        item.status, item.error, item.hold_key = EventStatus.PROCESSED, None, None
    else:
        item.status, item.error, item.hold_key = EventStatus.IGNORED, applied.reason, None


def _sign(step: Step, event: ProviderEvent) -> None:
    """Each status change names who made it: the operator of a manual mark, else the provider."""
    actor = event.actor or event.provider
    step.effects.status_changes = [
        replace(change, actor=actor, reason=event.reason) for change in step.effects.status_changes
    ]


def _keys_of(world: World, payment_ids: list[int]) -> set[str]:
    """The keys of the payments an event changed: what events held for them wait under."""
    found = set()
    for payment_id in payment_ids:
        row = world.payments[payment_id]
        if row.provider_session_id:
            found.add(keys.session_key(row.provider, row.provider_session_id))
        if row.provider_payment_id:
            found.add(keys.payment_key(row.provider, row.provider_payment_id))
    return found


def _lookup_of(key: str) -> tuple[str, str]:
    provider, _, session_id = key.split(":", 2)
    return provider, session_id


def _result(incoming: Incoming, status: EventStatus, **fields) -> EventResult:
    event = incoming.event
    return EventResult(
        event.provider, event.id, event.type, incoming.source, status,
        received_at=incoming.received_at,
        created=event.created.timestamp() if event.created else None,
        **fields,
    )
