"""The unit of work: the one owner of applying events.

Every path that applies events — the batch consumer, the Celery task, replay
of a dead letter, verify, the recovery sweep, reconciliation, the periodic
retry of held events — calls ``UnitOfWork.apply``: one transaction per batch
(application/batch.py), then, once it has committed, the observers (metrics,
logs, follow-up work such as looking up a session's line items). Nothing is
announced or counted that was rolled back.

Failures: a transient one (the database away, a deadlock) propagates, nothing
written, for the caller to retry the same batch. Any other failure of a batch
of several events is retried one event per transaction, so only the event
that fails is dead-lettered; a single event that fails that way is
dead-lettered in a transaction of its own, with its traceback.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from application import announcements, batch
from application.batch import BatchReport, EventResult, Incoming
from application.errors import is_transient
from infra import metrics
from infra.settings import Settings
from models import dead_letters, inbox
from models.db import Database
from models.enums import ErrorClass, EventStatus
from models.rules import Rules

log = logging.getLogger("payhooks.unit")
events_log = logging.getLogger("payhooks.events")

Observer = Callable[[BatchReport], None]
Also = Callable[[Session, BatchReport], None]


def result_of(report: BatchReport, incoming: Incoming) -> EventResult:
    """The result for this event itself, not for the held events it released."""
    key = (incoming.event.provider, incoming.event.id)
    return next(r for r in report.results if (r.provider, r.event_id) == key)


class UnitOfWork:
    def __init__(self, database: Database, rules: Rules, observers: Sequence[Observer] = ()) -> None:
        self.database = database
        self.rules = rules
        self.observers = list(observers)

    def apply(self, events: Sequence[Incoming], *, also: Also | None = None) -> BatchReport:
        """Apply events in one transaction (or one at a time if the batch fails); observe what committed.

        ``also(session, report)`` runs in the same transaction after the events,
        for a caller whose own record must commit with them (a replayed dead letter).
        """
        events = list(events)
        if not events:
            return BatchReport()
        try:
            report = self._transaction(events, also)
        except Exception as exc:
            if is_transient(exc) or also is not None:
                raise
            report = self._one_by_one(events, exc)
        self._observe(report)
        return report

    def apply_one(self, incoming: Incoming, *, also: Also | None = None) -> EventResult:
        """One event; its result (the first for it, not those of held events it released)."""
        report = self.apply([incoming], also=also)
        return result_of(report, incoming)

    def _transaction(self, events: list[Incoming], also: Also | None = None) -> BatchReport:
        with self.database.transaction() as session:
            report = batch.run(session, events, self.rules)
            if also is not None:
                also(session, report)
            return report

    def _one_by_one(self, events: list[Incoming], cause: Exception) -> BatchReport:
        if len(events) == 1:
            return self._dead_letter_unobserved(events[0], cause)
        log.warning("a batch of %d failed (%s); applying its events one at a time", len(events), cause.__class__.__name__)
        report = BatchReport()
        for incoming in events:
            try:
                report.extend(self._transaction([incoming]))
            except Exception as exc:
                if is_transient(exc):
                    raise
                report.extend(self._dead_letter_unobserved(incoming, exc))
        return report

    def dead_letter(self, incoming: Incoming, exc: BaseException, error_class: ErrorClass = ErrorClass.UNEXPECTED) -> BatchReport:
        """An event that cannot be applied: dead-letter its raw body in a transaction of its own."""
        report = self._dead_letter_unobserved(incoming, exc, error_class)
        self._observe(report)
        return report

    def _dead_letter_unobserved(
        self, incoming: Incoming, exc: BaseException, error_class: ErrorClass = ErrorClass.UNEXPECTED
    ) -> BatchReport:
        # exc_info for error reports: the exception's text holds no parameters or row values (models/db.py).
        log.error("dead-lettering %s as %s", incoming.event.id, error_class, exc_info=exc)
        event = incoming.event
        message = f"{exc.__class__.__name__}: {exc}"
        with self.database.transaction() as session:
            claim = inbox.claim(session, [inbox.Arrival(event.provider, event.id, event.type, event.raw, event.created, incoming.source)])[0]
            if claim.settled:  # another delivery applied it meanwhile
                return BatchReport([batch._result(incoming, claim.status, duplicate=True)])
            letter = announcements.dead_letter(
                session,
                dead_letters.Failure(event.provider, event.id, event.type, event.raw, error_class, message,
                                     "".join(traceback.format_exception(exc))),
            )
            inbox.settle(session, [inbox.Outcome(claim.row_id, EventStatus.FAILED, message, None, letter)])
        return BatchReport([batch._result(incoming, EventStatus.FAILED, error=message, error_class=error_class)], announced=1)

    def reject(self, provider: str, event_id: str, body: bytes, reason: str) -> None:
        """Keep something that is not an event we can read (a hand-made or corrupted queue item) as a dead letter."""
        event_id = event_id or "unreadable:" + hashlib.sha256(body).hexdigest()[:32]
        with self.database.transaction() as session:
            announcements.dead_letter(
                session,
                dead_letters.Failure(provider, event_id, "unreadable", body.decode("utf-8", "replace"), ErrorClass.PERMANENT,
                                     f"not an event payhooks can read: {reason}"),
            )
        log.error("dead-lettered an unreadable queue item (%s %s)", provider, event_id)

    def _observe(self, report: BatchReport) -> None:
        for observer in self.observers:
            try:
                observer(report)
            except Exception:  # what is committed stays committed; an observer's bug must not undo it
                log.exception("an after-commit observer failed")


def log_outcomes(report: BatchReport) -> None:
    """One line per event, by id, so an event can be followed through the logs; never a payload."""
    for result in report.results:
        if result.duplicate:
            events_log.debug("%s %s: duplicate (%s)", result.provider, result.event_id, result.status)
            continue
        events_log.log(
            logging.WARNING if result.status == "failed" else logging.INFO,
            "%s %s %s: %s%s",
            result.provider, result.event_type, result.event_id, result.status,
            f" ({result.error})" if result.error else "",
            extra={"provider": result.provider, "event_type": result.event_type, "event_id": result.event_id,
                   "outcome": result.status, "source": result.source, "batch": report.batch_id,
                   "payment_ids": list(result.payment_ids) or None, "credits": [list(c) for c in result.credits] or None},
        )


def unit_of_work(database: Database, settings: Settings, *extra_observers: Observer) -> UnitOfWork:
    """The unit of work a process uses: its rules, and after every commit metrics, logs and any extras."""
    return UnitOfWork(database, settings.rules(), [metrics.observe, log_outcomes, *extra_observers])
