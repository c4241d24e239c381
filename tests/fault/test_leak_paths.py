"""The paths on which customer data used to leak, driven on purpose, with canaries in every event.

Every event here carries the canary customer data of tests/support/canaries.py
and every process reports to the local fake Sentry. Each test drives one path
that prints or reports something about a failing event — Celery's retries, a
task that crashes, a dead letter and its replay, an error in a request — checks
that the path really produced log lines and error reports (so the search is
not vacuous), then searches everything captured for the canaries. The same
search also runs after every other test (tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import uuid
from contextlib import contextmanager

import pytest
import sentry_sdk
from flask import request
from sqlalchemy import select, text

from models.enums import DeadLetterStatus, ErrorClass, EventStatus
from models.tables import CreditLedger, DeadLetter, WebhookEvent
from receiver import create_app
from tests.conftest import API_TOKEN, PRIMARY_SECRET
from tests.support import canaries, leaks, processes
from tests.support.processes import wait_until
from tests.support.stripe_events import completed_event, encode, signed_headers
from transport.queue import PARKED
from workers.celery_app import make_celery
from workers.queues import PROCESS_EVENT

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(autouse=True)
def leak_paths():
    """This module drives the paths that write logs and reports: the session must capture some."""
    leaks.expect_capture()


def searched_clean() -> None:
    found = leaks.CAPTURE.scan()
    assert not found, leaks.report(found)


def post(client, evt: dict) -> None:
    body = encode(evt)
    response = client.post(
        "/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET)
    )
    assert response.status_code == 200, response.get_json()


def lines_about(worker, needle: str) -> list[str]:
    return [line for line in list(worker.output) if needle in line]


def task_id_of(worker, event_id: str) -> str:
    """The Celery task id that handled an event, from the worker's own log lines."""

    def found():
        for line in lines_about(worker, event_id):
            if line.startswith("{") and '"task_id"' in line:
                return json.loads(line)["task_id"]
        return None

    return wait_until(found, 30, what=f"a log line about {event_id} with its task id")


def received_args(worker, task_id: str) -> list[str]:
    """The argsrepr of each "Task … received" line of a task: the first delivery, then each retry."""
    return [
        json.loads(line)["data"]["args"]
        for line in lines_about(worker, f"[{task_id}] received")
        if line.startswith("{")
    ]


def sentry_events(fake_sentry, predicate) -> list[dict]:
    return [event for event in fake_sentry.events() if predicate(event)]


def exception_types(event: dict) -> list[str]:
    return [value.get("type") for value in (event.get("exception") or {}).get("values") or ()]


@contextmanager
def constraint(database, table: str, name: str, check: str):
    """A CHECK constraint the code does not expect: a stand-in for a bug that makes a task crash."""
    with database.transaction() as session:
        session.execute(
            text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" CHECK ({check}) NOT VALID')
        )
    try:
        yield
    finally:
        with database.transaction() as session:
            session.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT IF EXISTS "{name}"'))


def test_retries_in_a_database_outage_print_ids_not_bodies(client, worker, database, test_services):
    """Deliveries whose batch fails while PostgreSQL is away: the consumer's retry lines name event ids only."""
    events = [completed_event(user_id=f"user_outage_{n}", credits="7") for n in range(2)]

    with test_services.refusing_connections(database) as reopen:
        for evt in events:
            post(client, evt)

        def retried_twice():
            return all(
                any("transient failure" in line and "attempt 2" in line for line in lines_about(worker, evt["id"]))
                for evt in events
            )

        wait_until(retried_twice, 30, what="two failed attempts of each event")
        reopen()
    wait_until(lambda: applied(database, events), 30, what="the retried events to be applied")
    searched_clean()


def test_retried_celery_messages_show_ids_not_bodies(settings, worker, database, test_services):
    """process_event messages (queued before the events queue, or sent by tools): Celery rebuilds them on retry."""
    app = make_celery(settings)
    app.loader.import_default_modules()  # registers the tasks, as the worker does
    events = [completed_event(user_id=f"user_task_retry_{n}", credits="7") for n in range(2)]
    with test_services.refusing_connections(database) as reopen:
        for evt in events:
            app.tasks[PROCESS_EVENT].apply_async(("stripe", encode(evt).decode(), 1.0))

        def retried_twice():
            return all(
                sum("transient failure of" in line and "attempt" in line for line in lines_about(worker, evt["id"])) >= 2
                for evt in events
            )

        wait_until(retried_twice, 30, what="two failed attempts of each task")
        reopen()
    wait_until(lambda: applied(database, events), 30, what="the retried events to be applied")
    for evt in events:
        task_id = task_id_of(worker, evt["id"])
        # The first publish, then the retries Celery rebuilt from the request's arguments:
        # the raw body is the second argument, shown by its type only.
        first, *retries = received_args(worker, task_id)
        assert len(retries) >= 2
        assert all(re.fullmatch(r"\('stripe', <str>, [0-9.]+\)", args) for args in [first, *retries]), [first, *retries]
        assert lines_about(worker, f"[{task_id}] retry: Retry in")
    searched_clean()


def applied(database, events) -> bool:
    with database.transaction() as session:
        statuses = session.scalars(
            select(WebhookEvent.status).where(WebhookEvent.provider_event_id.in_([e["id"] for e in events]))
        ).all()
    return sorted(statuses) == [EventStatus.PROCESSED] * len(events)


def test_an_event_that_cannot_even_be_dead_lettered_is_parked_reported_and_requeued(
    client, worker, database, fake_sentry, redis_client, process_env
):
    evt = completed_event(user_id="user_crash_task", credits="5")
    # The event's own inbox row cannot be written: applying it fails, then so does its dead letter.
    with constraint(
        database, "webhook_events", "leak_test_no_inbox_row", f"provider_event_id <> '{evt['id']}'"
    ):
        post(client, evt)
        wait_until(
            lambda: lines_about(worker, f"could neither apply nor dead-letter {evt['id']}"),
            30,
            what="the event to be parked",
        )

        def reported():
            return sentry_events(
                fake_sentry,
                lambda e: evt["id"] in json.dumps(e) and "IntegrityError" in exception_types(e),
            )

        wait_until(reported, 30, what="the failure to reach Sentry")

    for event in reported():
        error = event["exception"]["values"][-1]
        assert "leak_test_no_inbox_row" in error["value"]  # the report still says what went wrong
        assert "Failing row" not in error["value"]  # but not PostgreSQL's DETAIL, which quotes the row
        assert all("vars" not in frame for frame in error["stacktrace"]["frames"])
        assert event["tags"]["component"] == "worker"
    wait_until(lambda: redis_client.llen(PARKED) == 1, 10, what="the event kept for an operator, not lost")
    after = completed_event(user_id="user_after_the_parked", credits="5")
    post(client, after)  # and the consumer goes on
    wait_until(lambda: applied(database, [after]), 30, what="the next event applied")

    # The cause fixed (the constraint is gone), an operator looks and puts it back.
    listing = processes.cli(process_env, "parked", "list")
    assert listing.returncode == 0, listing.stderr
    assert f"stripe\t{evt['id']}\treceived " in listing.stdout and "1 parked" in listing.stderr
    requeued = processes.cli(process_env, "parked", "requeue")
    assert requeued.stdout.strip() == "1 parked events back on the queue", requeued
    wait_until(lambda: applied(database, [evt]), 30, what="the requeued event applied")
    assert redis_client.llen(PARKED) == 0
    searched_clean()


def test_a_crash_while_applying_is_dead_lettered_and_replayed_without_leaking(
    client, worker, database, fake_sentry, process_env
):
    user = f"user_crash_{uuid.uuid4().hex[:8]}"
    evt = completed_event(user_id=user, credits="9")
    with constraint(database, "payments", "leak_test_no_payment", f"user_id <> '{user}'"):
        post(client, evt)

        def dead_lettered():
            with database.transaction() as session:
                return session.scalars(
                    select(DeadLetter).where(DeadLetter.provider_event_id == evt["id"])
                ).one_or_none()

        letter = wait_until(dead_lettered, 30, what="the crashed event to be dead-lettered")
        assert letter.error_class == ErrorClass.UNEXPECTED
        assert (
            "leak_test_no_payment" in letter.error_message and "Failing row" not in letter.traceback
        )
        wait_until(
            lambda: sentry_events(
                fake_sentry,
                lambda e: (
                    (e.get("logentry") or {}).get("message", "").startswith("dead-lettering")
                    and evt["id"] in json.dumps(e)
                ),
            ),
            30,
            what="the crash to reach Sentry",
        )

    # The operator looks at it and replays it once the cause is gone.
    listing, shown = (
        processes.cli(process_env, "dlq", "list"),
        processes.cli(process_env, "dlq", "show", str(letter.id), shows_payload=True),
    )
    assert str(letter.id) in listing.stdout and "[unexpected]" in listing.stdout
    assert canaries.EMAIL in shown.stdout  # the raw body the operator asked for, kept for replay
    replayed = processes.cli(process_env, "dlq", "replay", str(letter.id))
    assert f"dead letter {letter.id}: replayed" in replayed.stdout, (
        replayed.stdout + replayed.stderr
    )
    with database.transaction() as session:
        assert session.scalars(
            select(CreditLedger.amount).where(CreditLedger.user_id == user)
        ).all() == [9]
    searched_clean()


def test_a_bad_value_is_described_not_echoed_in_dead_letters_logs_and_replays(
    client, worker, database, process_env
):
    evt = completed_event(user_id="user_bad_credits", credits=canaries.EMAIL)
    post(client, evt)

    def dead_lettered():
        with database.transaction() as session:
            return session.scalars(
                select(DeadLetter).where(DeadLetter.provider_event_id == evt["id"])
            ).one_or_none()

    letter = wait_until(dead_lettered, 30, what="the event to be dead-lettered")
    assert (
        letter.error_message
        == f"metadata.credits is not a positive integer: a string of {len(canaries.EMAIL)} characters"
    )
    wait_until(
        lambda: lines_about(worker, "metadata.credits is not a positive integer"),
        10,
        what="the failure logged",
    )

    again = client.post(f"/api/dead-letters/{letter.id}/replay", headers=AUTH)
    assert again.status_code == 200 and again.get_json()["outcome"] == "failed_again"
    listing = processes.cli(process_env, "dlq", "list", "--json")
    assert json.loads(listing.stdout)["dead_letters"][0]["error"] == letter.error_message
    with database.transaction() as session:
        assert session.get(DeadLetter, letter.id).status == DeadLetterStatus.OPEN
    searched_clean()


def test_an_error_in_a_request_reports_no_body_header_or_local(settings, fake_sentry):
    app = create_app(settings)

    @app.post("/test/crash")
    def crash():
        body = request.get_data(as_text=True)  # a local holding the raw body, as a handler would
        signature = request.headers["Stripe-Signature"]
        raise RuntimeError(f"could not handle a delivery of {len(body)} bytes ({len(signature)})")

    evt = completed_event(user_id="user_request_crash")
    body = encode(evt)
    headers = {
        **signed_headers(body, PRIMARY_SECRET),
        **AUTH,
        "Cookie": f"session={canaries.API_TOKEN}",
    }
    response = app.test_client().post(
        f"/test/crash?email={canaries.EMAIL}", data=body, headers=headers
    )
    assert response.status_code == 500
    sentry_sdk.flush(timeout=5)

    [event] = wait_until(
        lambda: sentry_events(
            fake_sentry, lambda e: "could not handle a delivery" in json.dumps(e)
        ),
        10,
        what="the error to reach Sentry",
    )
    assert exception_types(event) == ["RuntimeError"]
    frames = event["exception"]["values"][0]["stacktrace"]["frames"]
    assert frames[-1]["function"] == "crash" and all("vars" not in frame for frame in frames)
    sent = event["request"]
    assert sent["method"] == "POST" and sent["url"].endswith("/test/crash")
    assert sent["headers"]["Content-Type"] == "application/json"
    assert not {"Stripe-Signature", "Authorization", "Cookie"} & {
        name for name, value in sent["headers"].items() if value != "[Filtered]"
    }
    assert not sent.get("data") and not sent.get("cookies") and not sent.get("query_string")
    assert "user" not in event and "sys.argv" not in event.get("extra", {})
    searched_clean()


def test_messages_the_worker_cannot_handle_are_reported_without_their_body(settings, worker):
    evt = completed_event(user_id="user_unhandled")
    args = ["stripe", encode(evt).decode(), 1.0]
    unknown_id, refused_id = str(uuid.uuid4()), str(uuid.uuid4())
    app = make_celery(settings)
    # A task name this worker does not know (one renamed while its messages still wait), and a
    # content type it refuses: Celery would log the first kilobyte of each body.
    app.send_task("payhooks.renamed_since", args=args, queue="webhooks", task_id=unknown_id,
                  argsrepr=repr(("stripe", evt["id"])))
    app.send_task(PROCESS_EVENT, args=args, queue="webhooks", task_id=refused_id, serializer="pickle",
                  argsrepr=repr(("stripe", evt["id"])))

    wait_until(
        lambda: lines_about(worker, "Received unregistered task of type 'payhooks.renamed_since'"),
        30,
        what="the unknown task reported",
    )
    wait_until(
        lambda: lines_about(worker, "Received invalid task message"),
        30,
        what="the refused message reported",
    )
    reports = lines_about(worker, "Received unregistered task") + lines_about(
        worker, "Received invalid task message"
    )
    assert all("<withheld: " in line for line in reports), reports
    assert any(unknown_id in line for line in reports)  # the headers still say which message it was
    searched_clean()
