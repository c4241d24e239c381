"""Dead letters: events that failed for good are kept with their raw body, and can be replayed.

Failures are produced the way production produces them: bad metadata delivered
over HTTP to a real worker, an invoice for a subscription that gives no credits,
a refund held past its window. Replay goes through the DeadLetters service, the
HTTP API and the ``payhooks dlq`` command, all against the real database.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from application.batch import Incoming
from application.dlq import DeadLetterNotFoundError, DeadLetters
from application.held import retry_held
from application.unit import UnitOfWork
from models.dead_letters import Filters
from models.enums import DeadLetterStatus, ErrorClass, EventStatus
from models.rules import Plan, Rules
from models.tables import CreditAccount, CreditLedger, DeadLetter, Job, WebhookEvent
from providers import stripe
from tests.conftest import API_TOKEN, PRIMARY_SECRET
from tests.support.apply import apply_batch, handle, pay_directly
from tests.support.processes import BIN, ROOT, keep_output, wait_until
from tests.support.stripe_events import (
    charge,
    completed_event,
    encode,
    event,
    invoice,
    signed_headers,
    subscription,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
WINDOW = timedelta(hours=1)


# -- helpers ----------------------------------------------------------------------


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def post_event(client, evt: dict) -> bytes:
    body = encode(evt)
    response = client.post(
        "/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return body


def inbox_row(database, event_id: str) -> WebhookEvent | None:
    with database.transaction() as session:
        return session.scalars(
            select(WebhookEvent).where(WebhookEvent.provider_event_id == event_id)
        ).one_or_none()


def letters(database) -> list[DeadLetter]:
    with database.transaction() as session:
        return list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


def letter_of(database, event_id: str) -> DeadLetter:
    with database.transaction() as session:
        return session.scalars(
            select(DeadLetter).where(DeadLetter.provider_event_id == event_id)
        ).one()


def ledger(database) -> list[tuple[str, str, int, str]]:
    with database.transaction() as session:
        return [
            tuple(r)
            for r in session.execute(
                select(
                    CreditLedger.user_id, CreditLedger.kind, CreditLedger.amount, CreditLedger.cause
                ).order_by(CreditLedger.id)
            )
        ]


def balance(database, user: str) -> int:
    with database.transaction() as session:
        account = session.get(CreditAccount, user)
        return account.balance if account else 0


def snapshot(database) -> dict:
    """Everything a replay could change, to prove a dry run changed nothing."""
    with database.transaction() as session:
        return {
            "letters": session.execute(
                select(
                    DeadLetter.id,
                    DeadLetter.status,
                    DeadLetter.attempts,
                    DeadLetter.error_message,
                    DeadLetter.last_failed_at,
                    DeadLetter.resolved_by,
                    DeadLetter.resolution_note,
                ).order_by(DeadLetter.id)
            ).all(),
            "inbox": session.execute(
                select(
                    WebhookEvent.provider_event_id,
                    WebhookEvent.status,
                    WebhookEvent.attempts,
                    WebhookEvent.last_error,
                ).order_by(WebhookEvent.id)
            ).all(),
            "ledger": session.scalar(select(func.count()).select_from(CreditLedger)),
        }


def bad_checkout(database, credits="ten", user="user_bad") -> tuple[dict, DeadLetter]:
    """A checkout whose metadata.credits can never be used: dead-lettered as permanent."""
    evt = completed_event(user_id=user, credits=credits)
    assert handle(database, evt).status == EventStatus.FAILED
    return evt, letter_of(database, evt["id"])


def subscription_without_credits(database, user: str, price: str) -> tuple[str, dict, DeadLetter]:
    """A subscription known without credits, then its paid invoice: permanent, 'configure subscription_plans'."""
    sub_id = uid("sub")
    created = event(
        "customer.subscription.created",
        subscription(sub_id, user_id=user, credits=None, price_id=price),
    )
    assert handle(database, created).status == EventStatus.PROCESSED
    paid = event("invoice.paid", invoice(uid("in"), sub_id, price_id=price))
    assert handle(database, paid).status == EventStatus.FAILED
    return sub_id, paid, letter_of(database, paid["id"])


def hold_a_refund(database, pi: str) -> dict:
    evt = event("charge.refunded", charge(pi, amount=1000, amount_refunded=1000))
    assert handle(database, evt).status == EventStatus.HELD
    return evt


def pay_without_releasing(database, pi: str, user: str, credits: int = 100) -> None:
    """Record the payment straight through the rules, as if its release had been missed."""
    pay_directly(database, user=user, credits=credits, session_id=f"cs_{pi}", payment_id=pi)


def crashed_checkout(database, user: str, credits: int) -> tuple[dict, DeadLetter]:
    """A valid checkout that a bug crashed: dead-lettered as unexpected with its traceback, as process_event does."""
    evt = completed_event(user_id=user, credits=str(credits))
    parsed = stripe.parse_event(encode(evt))
    try:
        raise RuntimeError("boom in a handler")
    except RuntimeError as exc:
        UnitOfWork(database, Rules()).dead_letter(Incoming(parsed), exc)
    return evt, letter_of(database, evt["id"])


def a_moment() -> datetime:
    """A time strictly between the failures recorded before and after it."""
    time.sleep(0.01)
    moment = datetime.now(UTC)
    time.sleep(0.01)
    return moment


# -- 1. a permanent failure through the real pipeline -------------------------------


def test_permanent_failure_over_http_is_dead_lettered_once(client, worker, database):
    evt = completed_event(user_id="user_dl_http", credits="ten")

    body = post_event(client, evt)

    row = wait_until(
        lambda: (
            (r := inbox_row(database, evt["id"])) is not None
            and r.status == EventStatus.FAILED
            and r
        ),
        20,
        what="event failed",
    )
    [letter] = letters(database)
    assert row.dead_letter_id == letter.id
    assert "metadata.credits is not a positive integer" in row.last_error
    assert (letter.provider, letter.provider_event_id, letter.event_type) == (
        "stripe",
        evt["id"],
        evt["type"],
    )
    assert letter.status == DeadLetterStatus.OPEN
    assert letter.error_class == ErrorClass.PERMANENT
    assert letter.error_message == "metadata.credits is not a positive integer: a string of 3 characters"
    assert letter.payload == body.decode()
    assert letter.attempts == 1
    assert letter.traceback is None
    assert (letter.resolved_by, letter.resolved_at) == (None, None)
    assert ledger(database) == []

    # Stripe delivers it again: the same dead letter counts another failure.
    post_event(client, evt)
    wait_until(
        lambda: inbox_row(database, evt["id"]).attempts == 2, 20, what="the redelivery handled"
    )
    [again] = letters(database)
    assert again.id == letter.id
    assert (again.status, again.attempts, again.error_class) == (
        DeadLetterStatus.OPEN,
        2,
        ErrorClass.PERMANENT,
    )
    assert again.payload == body.decode()
    assert inbox_row(database, evt["id"]).dead_letter_id == letter.id
    assert ledger(database) == []


# -- 2. fix the cause, then replay ----------------------------------------------------


def test_fix_the_cause_then_replay_grants_once(client, worker, database):
    user, price, sub_id = uid("user"), uid("price"), uid("sub")
    created = event(
        "customer.subscription.created",
        subscription(sub_id, user_id=user, credits=None, price_id=price),
    )
    paid = event("invoice.paid", invoice(uid("in"), sub_id, price_id=price))
    post_event(client, created)
    wait_until(
        lambda: (
            (r := inbox_row(database, created["id"])) is not None
            and r.status == EventStatus.PROCESSED
        ),
        20,
        what="subscription recorded",
    )
    body = post_event(client, paid)
    wait_until(
        lambda: (
            (r := inbox_row(database, paid["id"])) is not None and r.status == EventStatus.FAILED
        ),
        20,
        what="invoice failed",
    )

    letter = letter_of(database, paid["id"])
    assert letter.error_class == ErrorClass.PERMANENT
    assert "subscription_plans" in letter.error_message
    assert (letter.status, letter.attempts, letter.payload) == (
        DeadLetterStatus.OPEN,
        1,
        body.decode(),
    )

    # Replayed with the configuration unchanged: it fails again, the letter stays open.
    result = DeadLetters(UnitOfWork(database, Rules())).replay(letter.id, "test:operator")
    assert (result.dead_letter_id, result.outcome, result.event_status) == (
        letter.id,
        "failed_again",
        EventStatus.FAILED,
    )
    assert "subscription_plans" in result.error
    again = letter_of(database, paid["id"])
    assert (again.status, again.attempts, again.resolved_by) == (DeadLetterStatus.OPEN, 2, None)
    assert ledger(database) == []

    # The operator configures the plan: the replay applies it.
    fixed = DeadLetters(UnitOfWork(database, Rules(subscription_plans={price: Plan(300)})))
    result = fixed.replay(letter.id, "test:operator")
    assert (result.outcome, result.event_status) == ("replayed", EventStatus.PROCESSED)
    done = letter_of(database, paid["id"])
    assert done.status == DeadLetterStatus.REPLAYED
    assert done.resolved_by == "test:operator"
    assert done.resolved_at is not None
    assert done.attempts == 2
    assert inbox_row(database, paid["id"]).status == EventStatus.PROCESSED
    assert ledger(database) == [(user, "grant", 300, paid["id"])]
    assert balance(database, user) == 300

    # Replaying a closed letter changes nothing at all.
    before = snapshot(database)
    result = fixed.replay(letter.id, "someone:else")
    assert result.outcome == "not_open"
    assert snapshot(database) == before
    assert letter_of(database, paid["id"]).resolved_by == "test:operator"
    assert balance(database, user) == 300


# -- 3. applied meanwhile ---------------------------------------------------------------


def test_replaying_an_event_applied_meanwhile_changes_only_the_letter(database):
    user, price = uid("user"), uid("price")
    _, paid, letter = subscription_without_credits(database, user, price)

    # A later redelivery, handled after the plan was configured, applies the event.
    plans = Rules(subscription_plans={price: Plan(300)})
    assert handle(database, paid, plans).status == EventStatus.PROCESSED
    assert ledger(database) == [(user, "grant", 300, paid["id"])]
    assert (
        letter_of(database, paid["id"]).status == DeadLetterStatus.OPEN
    )  # still waiting for an operator

    result = DeadLetters(UnitOfWork(database, plans)).replay(letter.id, "test:operator")

    assert (result.outcome, result.event_status) == ("already_applied", EventStatus.PROCESSED)
    done = letter_of(database, paid["id"])
    assert (done.status, done.resolved_by, done.resolution_note) == (
        DeadLetterStatus.REPLAYED,
        "test:operator",
        "already applied",
    )
    assert ledger(database) == [(user, "grant", 300, paid["id"])]
    assert inbox_row(database, paid["id"]).attempts == 2  # the replay did not touch the inbox row


def test_replaying_an_event_marked_processed_in_sql_is_already_applied(database):
    evt, letter = bad_checkout(database)
    with database.transaction() as session:
        session.execute(
            text(
                "UPDATE webhook_events SET status = 'processed', last_error = NULL WHERE provider_event_id = :id"
            ),
            {"id": evt["id"]},
        )

    result = DeadLetters(UnitOfWork(database, Rules())).replay(letter.id, "test:operator")

    assert result.outcome == "already_applied"
    assert letter_of(database, evt["id"]).status == DeadLetterStatus.REPLAYED
    assert ledger(database) == []


def test_replaying_an_event_applied_meanwhile_whose_inbox_row_was_pruned(database):
    user, price = uid("user"), uid("price")
    _, paid, letter = subscription_without_credits(database, user, price)
    plans = Rules(subscription_plans={price: Plan(300)})
    assert handle(database, paid, plans).status == EventStatus.PROCESSED
    other_evt, other = bad_checkout(database)

    # Months later, retention deletes the settled inbox row; the dead letter is still open.
    from tasks.maintenance import prune

    pruned = prune(
        database, payload_days=7, inbox_days=35, outbound_days=30, now=datetime.now(UTC) + timedelta(days=60)
    )
    assert pruned["rows_deleted"] >= 1
    assert inbox_row(database, paid["id"]) is None
    assert letter_of(database, paid["id"]).status == DeadLetterStatus.OPEN

    service = DeadLetters(UnitOfWork(database, plans))
    outcomes = [service.replay(letter_id, "test:operator").outcome for letter_id in (letter.id, other.id)]

    assert outcomes == ["already_applied", "failed_again"]
    assert letter_of(database, paid["id"]).status == DeadLetterStatus.REPLAYED
    assert letter_of(database, other_evt["id"]).attempts == 2
    assert ledger(database) == [(user, "grant", 300, paid["id"])]


# -- 4. held past the window ------------------------------------------------------------


def test_event_held_past_the_window_is_dead_lettered_not_ready(database):
    evt = hold_a_refund(database, "pi_never_paid")
    assert letters(database) == []

    counts = retry_held(UnitOfWork(database, Rules()), hold_window=WINDOW, now=datetime.now(UTC) + WINDOW + timedelta(seconds=1)
    )

    assert counts["expired"] == 1
    letter = letter_of(database, evt["id"])
    assert letter.error_class == ErrorClass.NOT_READY
    assert "stripe:payment:pi_never_paid" in letter.error_message
    assert (letter.status, letter.attempts, letter.event_type) == (
        DeadLetterStatus.OPEN,
        1,
        "charge.refunded",
    )
    assert letter.payload == encode(evt).decode()
    row = inbox_row(database, evt["id"])
    assert (row.status, row.hold_key, row.dead_letter_id) == (EventStatus.FAILED, None, letter.id)

    # Within the window nothing is dead-lettered.
    held = hold_a_refund(database, "pi_later")
    retry_held(UnitOfWork(database, Rules()), hold_window=WINDOW)
    assert inbox_row(database, held["id"]).status == EventStatus.HELD
    assert [dl.provider_event_id for dl in letters(database)] == [evt["id"]]


def test_replaying_a_not_ready_letter_before_its_payment_keeps_the_event(database):
    evt = hold_a_refund(database, "pi_still_missing")
    retry_held(UnitOfWork(database, Rules()), hold_window=WINDOW, now=datetime.now(UTC) + WINDOW + timedelta(seconds=1)
    )
    letter = letter_of(database, evt["id"])

    result = DeadLetters(UnitOfWork(database, Rules())).replay(letter.id, "test:operator")

    # Nothing to apply it to yet: the refund waits again instead of being lost or applied,
    # and the letter stays open because nothing was applied.
    assert (result.outcome, result.event_status) == ("still_held", EventStatus.HELD)
    assert letter_of(database, evt["id"]).status == DeadLetterStatus.OPEN
    row = inbox_row(database, evt["id"])
    assert (row.status, row.hold_key) == (EventStatus.HELD, "stripe:payment:pi_still_missing")
    assert ledger(database) == []

    # Its payment arrives: the held refund is released and applied, once.
    paid = completed_event(
        user_id="user_late_pay", credits="100", amount_total=1000, payment_intent="pi_still_missing"
    )
    report = apply_batch(database, [paid])
    assert [(r.event_id, r.status) for r in report.results] == [
        (paid["id"], EventStatus.PROCESSED), (evt["id"], EventStatus.PROCESSED)
    ]
    assert inbox_row(database, evt["id"]).status == EventStatus.PROCESSED
    assert [(u, k, a) for u, k, a, _ in ledger(database)] == [
        ("user_late_pay", "grant", 100),
        ("user_late_pay", "clawback", -100),
    ]
    assert balance(database, "user_late_pay") == 0


# -- 5. bulk replay and its filters -----------------------------------------------------


def test_filters_select_exactly_and_bulk_replay_touches_only_the_matched(database):
    service = DeadLetters(UnitOfWork(database, Rules()))
    _, words = bad_checkout(database, credits="ten", user="user_words")
    _, huge = bad_checkout(database, credits=str(10**13), user="user_huge")
    no_amount = event("charge.refunded", dict(charge("pi_no_amount", 1000, 1000), amount=None))
    assert handle(database, no_amount).status == EventStatus.FAILED
    amountless = letter_of(database, no_amount["id"])
    cutoff = a_moment()
    refund = hold_a_refund(database, "pi_late")
    retry_held(UnitOfWork(database, Rules()), hold_window=WINDOW, now=datetime.now(UTC) + WINDOW + timedelta(seconds=1)
    )
    late = letter_of(database, refund["id"])
    _, dropped = bad_checkout(database, credits="eleven", user="user_dropped")
    service.discard(dropped.id, "test:operator", "duplicate of another purchase")

    assert late.error_class == ErrorClass.NOT_READY
    assert service.matching(Filters()) == [words.id, huge.id, amountless.id, late.id]
    assert service.matching(Filters(event_type="checkout.session.completed")) == [words.id, huge.id]
    assert service.matching(Filters(event_type="charge.refunded")) == [amountless.id, late.id]
    assert service.matching(Filters(error="POSITIVE integer")) == [words.id]
    assert service.matching(Filters(error="between 1 and")) == [huge.id]
    assert service.matching(Filters(error="pi_late")) == [late.id]
    assert service.matching(Filters(error="%")) == []  # a substring, not a LIKE pattern
    assert service.matching(Filters(since=cutoff)) == [late.id]
    assert service.matching(Filters(since=cutoff, status=None)) == [late.id, dropped.id]
    assert service.matching(Filters(status=DeadLetterStatus.DISCARDED)) == [dropped.id]
    assert service.matching(Filters(status=None)) == [
        words.id,
        huge.id,
        amountless.id,
        late.id,
        dropped.id,
    ]
    assert service.matching(Filters(status=None, error="positive integer")) == [
        words.id,
        dropped.id,
    ]
    assert service.matching(
        Filters(provider="stripe", event_type="checkout.session.completed", error="between")
    ) == [huge.id]
    assert service.matching(Filters(provider="paypal")) == []
    listed, total = service.list(Filters(event_type="charge.refunded"))
    assert total == 2 and {letter["id"] for letter in listed} == {amountless.id, late.id}

    # Selecting is read-only.
    before = snapshot(database)
    service.matching(Filters(status=None))
    service.list(Filters(status=None))
    assert snapshot(database) == before

    # The payment behind the late refund turns up; replay the refunds only.
    pay_without_releasing(database, "pi_late", "user_late")
    assert balance(database, "user_late") == 100
    seen = [service.replay(letter_id, "test:bulk") for letter_id in service.matching(Filters(event_type="charge.refunded"))]

    assert {(r.dead_letter_id, r.outcome) for r in seen} == {
        (amountless.id, "failed_again"),
        (late.id, "replayed"),
    }
    assert balance(database, "user_late") == 0  # the refund was applied
    by_id = {dl.id: dl for dl in letters(database)}
    assert (by_id[late.id].status, by_id[late.id].resolved_by) == (
        DeadLetterStatus.REPLAYED,
        "test:bulk",
    )
    assert (by_id[amountless.id].status, by_id[amountless.id].attempts) == (
        DeadLetterStatus.OPEN,
        2,
    )
    for untouched in (words, huge):
        assert (by_id[untouched.id].status, by_id[untouched.id].attempts) == (
            DeadLetterStatus.OPEN,
            1,
        )
    assert by_id[dropped.id].status == DeadLetterStatus.DISCARDED
    assert service.matching(Filters()) == [words.id, huge.id, amountless.id]
    with pytest.raises(DeadLetterNotFoundError):
        service.replay(dropped.id + 1000, "test:bulk")


# -- 6. the HTTP API ----------------------------------------------------------------------


def test_dead_letters_http_api(client, database, worker):
    crashed, crash = crashed_checkout(database, "user_api_crash", 40)
    first_bad, bad1 = bad_checkout(database, credits="ten", user="user_api_1")
    cutoff = a_moment()
    _, bad2 = bad_checkout(database, credits="eleven", user="user_api_2")

    # Every route needs the bearer token.
    before = snapshot(database)
    for method, path, body in (
        ("get", "/api/dead-letters", None),
        ("get", f"/api/dead-letters/{crash.id}", None),
        ("post", f"/api/dead-letters/{crash.id}/replay", None),
        ("post", "/api/dead-letters/replay", {"dry_run": False}),
        ("post", f"/api/dead-letters/{bad1.id}/discard", {"reason": "dup"}),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong-token"}):
            response = getattr(client, method)(path, json=body, headers=headers)
            assert response.status_code == 401, (method, path)
    assert snapshot(database) == before

    # Listing, with filters as query parameters.
    def listed(**query):
        response = client.get("/api/dead-letters", query_string=query, headers=AUTH)
        assert response.status_code == 200, response.get_json()
        data = response.get_json()
        return [item["id"] for item in data["dead_letters"]], data["total_count"]

    response = client.get("/api/dead-letters", headers=AUTH)
    data = response.get_json()
    assert data["total_count"] == 3
    assert [item["id"] for item in data["dead_letters"]] == [
        bad2.id,
        bad1.id,
        crash.id,
    ]  # newest failure first
    item = data["dead_letters"][1]
    assert item["event_id"] == first_bad["id"]
    assert (item["event_type"], item["error_class"], item["status"], item["attempts"]) == (
        "checkout.session.completed",
        "permanent",
        "open",
        1,
    )
    assert "payload" not in item and "traceback" not in item
    assert listed(type="checkout.session.completed", error="positive INTEGER") == (
        [bad2.id, bad1.id],
        2,
    )
    assert listed(error="boom") == ([crash.id], 1)
    assert listed(since=cutoff.isoformat()) == ([bad2.id], 1)
    assert listed(since=(cutoff - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")) == (
        [bad2.id, bad1.id, crash.id],
        3,
    )
    assert listed(status="discarded") == ([], 0)
    assert listed(page_size=1, page=2) == ([bad1.id], 3)
    assert (
        client.get("/api/dead-letters", query_string={"status": "lost"}, headers=AUTH).status_code
        == 400
    )

    # One, in full.
    response = client.get(f"/api/dead-letters/{crash.id}", headers=AUTH)
    assert response.status_code == 200
    shown = response.get_json()
    assert shown["payload"] == encode(crashed).decode()
    assert "RuntimeError: boom in a handler" in shown["traceback"]
    assert (shown["error_class"], shown["error"]) == (
        "unexpected",
        "RuntimeError: boom in a handler",
    )
    assert client.get(f"/api/dead-letters/{bad1.id}", headers=AUTH).get_json()["traceback"] is None

    # Replay one: the bug is fixed, the checkout is applied.
    response = client.post(f"/api/dead-letters/{crash.id}/replay", headers=AUTH)
    assert response.status_code == 200
    assert response.get_json() == {
        "id": crash.id,
        "outcome": "replayed",
        "event_status": "processed",
        "error": None,
    }
    assert balance(database, "user_api_crash") == 40
    assert letter_of(database, crashed["id"]).resolved_by == "api"
    response = client.post(f"/api/dead-letters/{crash.id}/replay", headers=AUTH)
    assert response.get_json()["outcome"] == "not_open"
    assert balance(database, "user_api_crash") == 40

    # Replay many: a dry run says what, changes nothing.
    before = snapshot(database)
    response = client.post(
        "/api/dead-letters/replay",
        json={"type": "checkout.session.completed", "dry_run": True},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.get_json() == {"dry_run": True, "matched": 2, "ids": [bad1.id, bad2.id]}
    assert snapshot(database) == before
    # Replay many: a job on the worker, its progress at /api/jobs/<id>.
    response = client.post(
        "/api/dead-letters/replay",
        json={"type": "checkout.session.completed", "since": cutoff.isoformat()},
        headers=AUTH,
    )
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert response.headers["Location"].endswith(f"/api/jobs/{job['id']}")
    assert (job["kind"], job["total"], job["requested_by"]) == ("dead_letter_replay", 1, "api")
    assert job["params"] == {"type": "checkout.session.completed", "since": cutoff.isoformat().replace("+00:00", "Z"), "status": "open"}
    job = wait_until(lambda: finished(client.get(f"/api/jobs/{job['id']}", headers=AUTH).get_json()),
                     30, what="the replay job to finish")
    assert (job["status"], job["done"], job["outcomes"]) == ("finished", 1, {"failed_again": 1})
    assert job["started_at"] and job["finished_at"] and job["error"] is None
    assert client.get(f"/api/jobs/{job['id'] + 1000}", headers=AUTH).status_code == 404
    assert (
        letter_of(database, first_bad["id"]).attempts,
        letter_of(database, bad2.provider_event_id).attempts,
    ) == (1, 2)
    assert (
        client.post("/api/dead-letters/replay", json={"tipe": "x"}, headers=AUTH).status_code == 400
    )

    # Discard needs a reason, which is kept.
    for body in ({}, {"reason": "   "}):
        assert (
            client.post(f"/api/dead-letters/{bad1.id}/discard", json=body, headers=AUTH).status_code
            == 400
        )
    assert letter_of(database, first_bad["id"]).status == DeadLetterStatus.OPEN
    response = client.post(
        f"/api/dead-letters/{bad1.id}/discard",
        json={"reason": "customer refunded by hand"},
        headers=AUTH,
    )
    assert response.status_code == 200
    discarded = response.get_json()
    assert (
        discarded["id"],
        discarded["status"],
        discarded["resolved_by"],
        discarded["resolution_note"],
    ) == (
        bad1.id,
        "discarded",
        "api",
        "customer refunded by hand",
    )
    assert letter_of(database, first_bad["id"]).resolution_note == "customer refunded by hand"
    assert listed(status="discarded") == ([bad1.id], 1)
    assert (
        client.post(f"/api/dead-letters/{bad1.id}/replay", headers=AUTH).get_json()["outcome"]
        == "not_open"
    )

    # Unknown ids.
    missing = bad2.id + 1000
    assert client.get(f"/api/dead-letters/{missing}", headers=AUTH).status_code == 404
    assert client.post(f"/api/dead-letters/{missing}/replay", headers=AUTH).status_code == 404
    assert (
        client.post(
            f"/api/dead-letters/{missing}/discard", json={"reason": "x"}, headers=AUTH
        ).status_code
        == 404
    )


def finished(job: dict) -> dict | None:
    return job if job["status"] in ("finished", "failed") else None


# -- 7. the command line ------------------------------------------------------------------


def rows(listing: str) -> dict[str, str]:
    """The table rows of ``dlq list`` by dead letter id."""
    return {
        line.split()[0]: line
        for line in listing.splitlines()
        if len(line.split()) > 1 and line.split()[1] in {s.value for s in DeadLetterStatus}
    }


def payhooks(
    process_env, *commands: tuple[str, ...], env: dict | None = None
) -> list[subprocess.CompletedProcess]:
    """Run ``payhooks`` commands side by side (each a separate process) and return their results in order."""
    started = [
        (
            args,
            subprocess.Popen(
                [str(BIN / "payhooks"), *args],
                env={**process_env, **(env or {})},
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for args in commands
    ]
    results = []
    for args, proc in started:
        out, err = proc.communicate(timeout=60)
        keep_output(args, out, err, shows_payload=args[:2] == ("dlq", "show"))
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def test_dlq_command_line(process_env, database, tmp_path):
    user, price = uid("user"), uid("price")
    bad_evt, bad = bad_checkout(database, credits="ten", user="user_cli")
    _, paid, owed = subscription_without_credits(database, user, price)
    before = snapshot(database)

    # Reading, a dry run and a usage error change nothing; they run side by side.
    listing, as_json, shown, dry, usage = payhooks(
        process_env,
        ("dlq", "list"),
        ("dlq", "list", "--json", "--type", "invoice.paid"),
        ("dlq", "show", str(bad.id)),
        ("dlq", "replay", "--all", "--type", "checkout.session.completed", "--dry-run"),
        ("dlq", "replay"),
    )
    assert snapshot(database) == before

    assert listing.returncode == 0, listing.stderr
    lines = rows(listing.stdout)
    assert set(lines) == {str(bad.id), str(owed.id)}
    assert (
        "checkout.session.completed" in lines[str(bad.id)] and bad_evt["id"] in lines[str(bad.id)]
    )
    assert "invoice.paid" in lines[str(owed.id)] and "[permanent]" in lines[str(owed.id)]
    assert "2 shown of 2" in listing.stdout

    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["total_count"] == 1
    assert [item["id"] for item in data["dead_letters"]] == [owed.id]

    assert shown.returncode == 0, shown.stderr
    assert "metadata.credits is not a positive integer: a string of 3 characters" in shown.stdout
    assert json.loads(shown.stdout.split("raw body:\n", 1)[1]) == bad_evt

    assert dry.returncode == 0, dry.stderr
    assert f"dry run: 1 dead letters would be replayed: {bad.id}" in dry.stdout

    assert usage.returncode == 2
    assert "give a dead letter ID or --all" in usage.stderr

    # The invoice replayed as things are fails again (exit 1) and stays open; the checkout is discarded.
    again, discarded = payhooks(
        process_env,
        ("dlq", "replay", str(owed.id)),
        ("dlq", "discard", str(bad.id), "--reason", "dup"),
    )
    assert again.returncode == 1, again.stdout + again.stderr
    assert (
        f"dead letter {owed.id}: failed_again" in again.stdout
        and "subscription_plans" in again.stdout
    )
    letter = letter_of(database, paid["id"])
    assert (letter.status, letter.attempts) == (DeadLetterStatus.OPEN, 2)
    assert ledger(database) == []
    assert discarded.returncode == 0, discarded.stderr
    assert f"dead letter {bad.id}: discarded by cli:" in discarded.stdout
    assert letter_of(database, bad_evt["id"]).resolution_note == "dup"

    # Fix the cause in the configuration, as an operator would, and replay.
    config = tmp_path / "payhooks.yaml"
    config.write_text(f"subscription_plans:\n  {price}: 300\n")
    replayed, gone = payhooks(
        process_env,
        ("dlq", "replay", str(owed.id)),
        ("dlq", "list", "--status", "discarded"),
        env={"PAYHOOKS_CONFIG": str(config)},
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"dead letter {owed.id}: replayed" in replayed.stdout
    done = letter_of(database, paid["id"])
    assert done.status == DeadLetterStatus.REPLAYED and done.resolved_by.startswith("cli:")
    assert ledger(database) == [(user, "grant", 300, paid["id"])]
    assert gone.returncode == 0, gone.stderr
    assert list(rows(gone.stdout)) == [str(bad.id)]
    assert "1 shown of 1" in gone.stdout
    assert DeadLetters(UnitOfWork(database, Rules())).matching(Filters()) == []


def test_dlq_replay_all_runs_as_a_job_on_a_worker_with_progress(process_env, database, worker):
    crashed = [crashed_checkout(database, uid("user_job"), 10 + n) for n in range(3)]
    _, bad = bad_checkout(database, credits="ten", user="user_job_bad")

    queued, followed = payhooks(
        process_env,
        ("dlq", "replay", "--all", "--error", "boom", "--no-wait"),
        ("dlq", "replay", "--all", "--error", "positive integer"),
    )

    # --no-wait: queued, and says how to follow it
    assert queued.returncode == 0, queued.stdout + queued.stderr
    job_id = int(queued.stdout.split("job ", 1)[1].split(":", 1)[0])
    assert "replaying 3 dead letters" in queued.stdout and f"payhooks dlq job {job_id}" in queued.stdout
    # --wait (the default): a progress bar until it ends; a letter that failed again exits 1
    assert followed.returncode == 1, followed.stdout + followed.stderr
    assert "1 failed_again" in followed.stdout and "finished: 1 of 1" in followed.stdout
    assert "job " in followed.stderr  # click's progress bar
    [shown] = payhooks(process_env, ("dlq", "job", str(job_id), "--wait"))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"job {job_id} finished: 3 of 3: 3 replayed" in shown.stdout
    for evt, _ in crashed:
        assert letter_of(database, evt["id"]).status == DeadLetterStatus.REPLAYED
        assert letter_of(database, evt["id"]).resolved_by.startswith("cli:")
    assert letter_of(database, bad.provider_event_id).attempts == 2


def test_a_job_picked_up_again_resumes_where_it_stopped_and_runs_once(database):
    """A worker that died mid-job leaves it running at item `done`; the redelivered task resumes there."""
    from application.jobs import run_dead_letter_replay
    from models import jobs as job_rows
    from models.enums import JobKind

    letters_ = [crashed_checkout(database, uid("user_resume"), 5)[1] for _ in range(4)]
    with database.transaction() as session:
        job = job_rows.create(session, JobKind.DEAD_LETTER_REPLAY, [d.id for d in letters_],
                              params={}, requested_by="test:resume")
        job_rows.claim(session, job.id)
        job_id = job.id
    # the first two were done (and recorded) before the worker died
    service = DeadLetters(UnitOfWork(database, Rules()))
    for letter in letters_[:2]:
        service.replay(letter.id, "test:resume")
        with database.transaction() as session:
            job_rows.record(session, job_id, "replayed")

    # another worker holds the job: this one does nothing
    with database.engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"), {"k": f"payhooks-job:{job_id}"})
        assert run_dead_letter_replay(UnitOfWork(database, Rules()), job_id)["skipped"] == "running elsewhere"
        holder.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": f"payhooks-job:{job_id}"})
        holder.commit()

    final = run_dead_letter_replay(UnitOfWork(database, Rules()), job_id)

    assert (final["status"], final["done"], final["outcomes"]) == ("finished", 4, {"replayed": 4})
    assert all(letter_of(database, d.provider_event_id).status == DeadLetterStatus.REPLAYED for d in letters_)
    # delivered once more after it finished: nothing happens
    assert run_dead_letter_replay(UnitOfWork(database, Rules()), job_id)["skipped"] == "not found or already over"


def test_a_job_that_cannot_be_queued_is_failed_and_the_api_says_503(settings, database):
    from infra.embedded import free_port
    from receiver import create_app

    crashed_checkout(database, uid("user_noqueue"), 5)
    app = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))

    response = app.test_client().post("/api/dead-letters/replay", json={}, headers=AUTH)

    assert response.status_code == 503
    assert response.get_json()["error"] == "broker_unavailable" and response.headers["Retry-After"]
    with database.transaction() as session:
        [job] = session.scalars(select(Job)).all()
        assert (job.status, job.done) == ("failed", 0) and "could not be queued" in job.error


def test_a_redelivery_that_fails_again_does_not_reopen_a_discarded_letter(database):
    evt, _ = bad_checkout(database, credits="ten", user="user_discarded")
    letter = letter_of(database, evt["id"])
    DeadLetters(UnitOfWork(database, Rules())).discard(letter.id, "test:operator", "a test event")

    assert handle(database, evt).status == EventStatus.FAILED  # the provider tries again

    again = letter_of(database, evt["id"])
    assert (again.status, again.resolution_note, again.attempts) == (DeadLetterStatus.DISCARDED, "a test event", 2)
