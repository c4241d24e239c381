"""Manual payments: recorded, marked and expired through the same inbox, rules, history and ledger as Stripe's.

In process against the real database (the API's test client, the CLI's runner),
and once through the real worker: marks published on the events queue like any
delivery.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from application.manual import ManualPayments, MarkRefusedError
from application.tracker import PaymentTracker
from models.enums import EventStatus
from models.tables import CreditLedger, Payment, PaymentStatusHistory, WebhookEvent
from providers import manual
from tests.conftest import API_TOKEN
from tests.support import canaries
from tests.support.processes import wait_until
from workers.cli import main as cli

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
WHY = f"transfer from {canaries.NAME}"  # free text an operator types may name a person: never logged


def api(client, path: str, body: dict, key: str | None = None):
    headers = AUTH | ({"Idempotency-Key": key} if key else {})
    return client.post(path, json=body, headers=headers)


def record(client, key: str | None = None, **overrides):
    body = {"user_id": "user_manual", "credits": 100, "amount_cents": 1000, "currency": "EUR",
            "method": "bank_transfer", "reference": canaries.EMAIL} | overrides
    return api(client, "/api/payments/manual", body, key)


def counts(database) -> tuple[int, int, int]:
    """(history rows, ledger entries, inbox rows): what a refused mark must leave as it was."""
    with database.transaction() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (PaymentStatusHistory, CreditLedger, WebhookEvent))


def balance(client, user: str = "user_manual") -> int:
    return client.get(f"/api/users/{user}/credits", headers=AUTH).get_json()["balance"]


def test_pending_paid_partially_then_fully_refunded_through_the_api(client, database):
    created = record(client, key="rec-1")
    assert created.status_code == 201, created.get_json()
    payment = created.get_json()
    assert (payment["provider"], payment["status"], payment["metadata"]["method"]) == ("manual", "pending", "bank_transfer")
    pid = payment["id"]

    paid = api(client, f"/api/payments/{pid}/mark-paid", {"reference": "TR-778", "reason": WHY}, key="paid-1")
    assert paid.status_code == 200, paid.get_json()
    assert (paid.get_json()["status"], paid.get_json()["metadata"]["paid_reference"]) == ("completed", "TR-778")
    assert balance(client) == 100
    part = api(client, f"/api/payments/{pid}/refund", {"amount_cents": 250, "reason": "one seat returned"}, key="ref-1")
    assert (part.status_code, part.get_json()["status"]) == (200, "partially_refunded")
    assert balance(client) == 75  # floor(100 × 250 / 1000) taken back
    rest = api(client, f"/api/payments/{pid}/refund", {}, key="ref-2")
    assert (rest.status_code, rest.get_json()["status"], rest.get_json()["refunded_cents"]) == (200, "refunded", 1000)
    assert balance(client) == 0

    history = rest.get_json()["history"]
    assert [(h["from"], h["to"], h["actor"], h["reason"]) for h in history] == [
        ("pending", "completed", "api", WHY),
        ("completed", "partially_refunded", "api", "one seat returned"),
        ("partially_refunded", "refunded", "api", None),
    ]
    assert all(h["at"] and h["cause"].startswith("mark_") for h in history)
    with database.transaction() as session:
        assert [(e.kind, e.amount) for e in session.scalars(select(CreditLedger).order_by(CreditLedger.id))] == [
            ("grant", 100), ("clawback", -25), ("clawback", -75)
        ]
        inbox = session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()
        assert [(e.provider, e.event_type, e.status, e.source) for e in inbox] == [
            ("manual", "payment.paid", EventStatus.PROCESSED, "operator"),
            ("manual", "payment.refunded", EventStatus.PROCESSED, "operator"),
            ("manual", "payment.refunded", EventStatus.PROCESSED, "operator"),
        ]
    listed = client.get("/api/payments?provider=manual", headers=AUTH).get_json()
    assert [p["id"] for p in listed["payments"]] == [pid]
    assert client.get("/api/payments?provider=stripe", headers=AUTH).get_json()["total_count"] == 0


def test_a_providers_own_events_name_the_provider_as_actor(database):
    from tests.support.apply import apply_batch
    from tests.support.stripe_events import completed_event

    apply_batch(database, [completed_event(user_id="user_stripe", credits="10")])
    with database.transaction() as session:
        assert session.execute(select(PaymentStatusHistory.actor, PaymentStatusHistory.reason)).all() == [("stripe", None)]


def test_the_same_key_is_one_mark_and_a_different_request_under_it_is_a_conflict(client, database):
    first, again = record(client, key="rec-k"), record(client, key="rec-k")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.get_json()["id"] == again.get_json()["id"]
    for different in ({"credits": 99}, {"reference": "other"}, {"method": "cash"}, {"reason": "another"}):
        conflict = record(client, key="rec-k", **different)
        assert (conflict.status_code, conflict.get_json()["error"]) == (409, "idempotency_conflict"), different
    pid = first.get_json()["id"]

    for _ in range(2):
        answer = api(client, f"/api/payments/{pid}/mark-paid", {"reference": "TR-1"}, key="paid-k")
        assert (answer.status_code, answer.get_json()["status"]) == (200, "completed")
    before = counts(database)
    assert before == (1, 1, 1)  # one history row, one grant, one event
    conflict = api(client, f"/api/payments/{pid}/mark-paid", {"reference": "TR-2"}, key="paid-k")
    assert (conflict.status_code, conflict.get_json()["error"]) == (409, "idempotency_conflict")
    # the key of a mark is its own, whatever the action
    conflict = api(client, f"/api/payments/{pid}/refund", {"amount_cents": 100}, key="paid-k")
    assert (conflict.status_code, conflict.get_json()["error"]) == (409, "idempotency_conflict")

    for _ in range(2):
        assert api(client, f"/api/payments/{pid}/refund", {"amount_cents": 100}, key="ref-k").status_code == 200
    assert balance(client) == 90
    assert counts(database) == (2, 2, 2)


def test_a_mark_the_payment_is_not_in_a_state_for_is_refused_and_changes_nothing(client, database):
    pid = record(client).get_json()["id"]
    refused = api(client, f"/api/payments/{pid}/refund", {"amount_cents": 100}, key="early")
    assert (refused.status_code, refused.get_json()["error"]) == (409, "invalid_transition")
    assert "not paid" in refused.get_json()["message"]
    api(client, f"/api/payments/{pid}/mark-paid", {})
    too_much = api(client, f"/api/payments/{pid}/refund", {"amount_cents": 1001})
    assert (too_much.status_code, too_much.get_json()["error"]) == (409, "invalid_transition")
    assert "1000 left to refund" in too_much.get_json()["message"]
    api(client, f"/api/payments/{pid}/refund", {})
    before = counts(database)

    for action, body in (("mark-paid", {}), ("mark-failed", {"reason": WHY}), ("cancel", {}), ("refund", {})):
        answer = api(client, f"/api/payments/{pid}/{action}", body, key=f"late-{action}")
        assert (answer.status_code, answer.get_json()["error"]) == (409, "invalid_transition"), action
    assert counts(database) == before
    assert client.get(f"/api/payments/{pid}", headers=AUTH).get_json()["status"] == "refunded"
    assert balance(client) == 0
    # the key of a refused mark was not used up: the same key is free for what the payment allows
    again = api(client, f"/api/payments/{record(client, key='second').get_json()['id']}/refund", {}, key="early")
    assert again.status_code == 409 and again.get_json()["error"] == "invalid_transition"


def test_a_refused_mark_is_rolled_back_even_when_the_state_changed_after_the_check(client, database, settings):
    """The pre-check is for the message; the rules decide, in the transaction (a race with another mark)."""
    pid = record(client).get_json()["id"]
    manual_payments = ManualPayments(PaymentTracker.from_settings(settings))
    manual_payments.mark_paid(pid, actor="someone else")
    before = counts(database)

    def passed(row):  # as if the payment had been checked just before the other mark paid it
        return None

    with pytest.raises(MarkRefusedError, match="cannot go from completed to cancelled"):
        manual_payments._mark(pid, manual.CANCELLED, passed, actor="op", key="raced", reason=None)
    assert counts(database) == before


def _session_of(database, pid: int) -> str:
    with database.transaction() as session:
        return session.scalar(select(Payment.provider_session_id).where(Payment.id == pid))


def test_a_mark_for_a_payment_nobody_recorded_is_a_dead_letter_not_a_lookup(database, settings):
    """Marks arrive only through the API and CLI, which check; one put on the queue by hand is kept for an operator."""
    from application.batch import Incoming
    from application.unit import unit_of_work
    from models.tables import DeadLetter

    event = manual.mark(manual.PAID, "man_nobody", id=manual.event_id("stray"), actor="op", now=datetime.now(UTC))
    result = unit_of_work(database, settings).apply_one(Incoming(event, "webhook"))
    assert (result.status, result.error_class) == (EventStatus.FAILED, "permanent")
    with database.transaction() as session:
        assert session.execute(select(DeadLetter.provider, DeadLetter.provider_event_id)).all() == [("manual", event.id)]


def test_only_manual_payments_take_marks_and_unknown_ones_are_404(client):
    stripe_payment = client.post("/api/payments", headers=AUTH, json={
        "user_id": "u", "amount_cents": 100, "currency": "usd", "credits": 1, "session_id": "cs_test_x"}).get_json()
    answer = api(client, f"/api/payments/{stripe_payment['id']}/mark-paid", {})
    assert (answer.status_code, answer.get_json()["error"]) == (409, "invalid_transition")
    assert "stripe payment" in answer.get_json()["message"]
    assert api(client, "/api/payments/999999/cancel", {}).status_code == 404


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/payments/manual", {"user_id": "u", "credits": 1, "amount_cents": 1, "currency": "eur", "method": "cheque"}, "method"),
    ("/api/payments/manual", {"user_id": "u", "credits": 1, "amount_cents": 0, "currency": "eur", "method": "cash"}, "amount_cents"),
    ("/api/payments/manual", {"user_id": "u", "credits": "1", "amount_cents": 1, "currency": "eur", "method": "cash"}, "credits"),
    ("/api/payments/manual", {"user_id": "u", "credits": 1, "amount_cents": 1, "currency": "euro", "method": "cash"}, "currency"),
    ("/api/payments/1/mark-paid", {"referenc": "typo"}, "referenc"),
    ("/api/payments/1/refund", {"amount_cents": -5}, "amount_cents"),
    ("/api/payments/1/cancel", {"reason": "  "}, "reason"),
])
def test_bad_input_is_a_400_naming_the_field(client, path, body, field):
    answer = api(client, path, body)
    assert (answer.status_code, answer.get_json()["error"]) == (400, "validation_error")
    assert field in answer.get_json()["fields"]


def test_a_bad_idempotency_key_or_a_body_that_is_not_json_is_a_400(client):
    answer = client.post("/api/payments/1/cancel", json={}, headers=AUTH | {"Idempotency-Key": "has spaces"})
    assert (answer.status_code, answer.get_json()["error"]) == (400, "validation_error")
    answer = client.post("/api/payments/1/cancel", data="reason", headers=AUTH)
    assert answer.status_code == 400


# -- expiry -------------------------------------------------------------------------------


def test_pending_manual_payments_expire_by_age_once_and_may_still_be_paid(client, database, settings):
    old, young = record(client, key="old").get_json()["id"], record(client, key="young").get_json()["id"]
    paid_old = record(client, key="paid-old").get_json()["id"]
    api(client, f"/api/payments/{paid_old}/mark-paid", {})
    with database.transaction() as session:
        session.execute(update(Payment).where(Payment.id.in_([old, paid_old])).values(created_at=func.now() - timedelta(days=15)))
    manual_payments = ManualPayments(PaymentTracker.from_settings(settings))
    max_age = timedelta(days=settings.manual_payment_expire_after_days)

    assert manual_payments.expire_overdue(max_age=max_age, dry_run=True) == [old]
    assert manual_payments.expire_overdue(max_age=max_age) == [old]
    assert manual_payments.expire_overdue(max_age=max_age) == []
    expired = client.get(f"/api/payments/{old}", headers=AUTH).get_json()
    assert expired["status"] == "expired"
    assert [(h["to"], h["actor"], h["reason"]) for h in expired["history"]] == [("expired", "sweep", "pending for more than 14 days")]
    assert client.get(f"/api/payments/{young}", headers=AUTH).get_json()["status"] == "pending"
    # two sweeps at once: the expiry is one event per payment, applied once
    assert manual_payments.unit.apply_one(_expiry(database, old)).duplicate

    late = api(client, f"/api/payments/{old}/mark-paid", {"reason": "the transfer came after all"})
    assert (late.status_code, late.get_json()["status"]) == (200, "completed")


def test_the_worker_runs_the_expiry_the_beat_schedules(client, database, settings, worker):
    from workers.celery_app import beat_schedule, make_celery
    from workers.queues import EXPIRE_MANUAL_PAYMENTS

    assert beat_schedule(settings)["expire-manual-payments"]["task"] == EXPIRE_MANUAL_PAYMENTS
    pid = record(client).get_json()["id"]
    with database.transaction() as session:
        session.execute(update(Payment).where(Payment.id == pid).values(created_at=func.now() - timedelta(days=15)))
    make_celery(settings).send_task(EXPIRE_MANUAL_PAYMENTS, argsrepr="()")

    def expired() -> bool:
        with database.transaction() as session:
            return session.scalar(select(Payment.status).where(Payment.id == pid)) == "expired"

    wait_until(expired, what="the worker's expiry of the overdue manual payment")


def _expiry(database, pid: int):
    from application.batch import Incoming

    session_id = _session_of(database, pid)
    return Incoming(manual.mark(manual.EXPIRED, session_id, id=manual.expiry_id(session_id), actor="sweep",
                                now=datetime.now(UTC)), "sweep")


def test_the_stripe_sweep_leaves_manual_payments_alone(client, database, fake):
    """They have no provider to ask: they must not take the sweep's batch (oldest first) from Stripe's."""
    from application.recovery import Recovery
    from application.unit import UnitOfWork
    from models.rules import Rules
    from providers.stripe_api import StripeAPI
    from tests.conftest import STRIPE_API_KEY

    pid = record(client).get_json()["id"]
    recovery = Recovery(UnitOfWork(database, Rules()), StripeAPI(STRIPE_API_KEY, fake.url, max_network_retries=0))
    report = recovery.sweep_pending(min_age=timedelta(0), expiry_grace=timedelta(0), now=datetime.now(UTC) + timedelta(days=1))
    assert report.checked == 0
    with database.transaction() as session:
        assert session.scalar(select(Payment.next_check_at).where(Payment.id == pid)) is None


# -- the command line ------------------------------------------------------------------------


def test_the_cli_records_marks_and_lists_manual_payments(settings_env, database):
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, ["payments", *args], env=settings_env | {"USER": "olga"}, catch_exceptions=False)
        return result.exit_code, result.output

    code, out = run("create-manual", "--user", "user_cli", "--credits", "40", "--amount", "2000",
                    "--currency", "EUR", "--method", "cash", "--reference", "R-9", "--key", "cli-1")
    assert code == 0 and "pending" in out, out
    with database.transaction() as session:
        pid = session.scalar(select(Payment.id))
    code, out = run("mark-paid", str(pid), "--reference", "R-9", "--reason", WHY, "--key", "cli-paid")
    assert code == 0 and "completed" in out and "by cli:olga" in out, out
    code, out = run("refund", str(pid), "--amount", "500", "--actor", "ops-lead", "--reason", "half a box back")
    assert code == 0 and "partially_refunded" in out and "taken back 10" in out, out
    code, out = run("mark-paid", str(pid), "--key", "cli-again")
    assert code == 1 and "already paid" in out, out
    code, out = run("list", "--provider", "manual")
    assert code == 0 and "partially_refunded" in out and "1 shown of 1" in out, out
    with database.transaction() as session:
        history = session.scalars(select(PaymentStatusHistory).order_by(PaymentStatusHistory.id)).all()
        assert [(h.to_status, h.actor, h.reason) for h in history] == [
            ("completed", "cli:olga", WHY), ("partially_refunded", "ops-lead", "half a box back")
        ]


# -- through the worker -------------------------------------------------------------------


def test_marks_on_the_events_queue_are_applied_by_the_worker_like_any_delivery(client, app, worker, database):
    """The same events on the queue the receiver fills: the worker's consumer applies them in its batches."""
    pid = record(client, key="queued").get_json()["id"]
    session_id = _session_of(database, pid)
    publisher = app.extensions["payhooks"].publisher
    now = datetime.now(UTC)
    marks = [
        manual.mark(manual.PAID, session_id, id=manual.event_id("q-paid"), actor="cli:olga", reason=WHY, now=now,
                    data={"reference": "TR-9"}),
        manual.mark(manual.REFUNDED, session_id, id=manual.event_id("q-part"), actor="api", now=now + timedelta(seconds=1),
                    data={"amount_cents": 300}),
        manual.mark(manual.REFUNDED, session_id, id=manual.event_id("q-full"), actor="ops", reason="closed", now=now + timedelta(seconds=2),
                    data={"full": True, "captured_cents": 1000}),
    ]

    def settled(count: int) -> bool:
        with database.transaction() as session:
            statuses = session.scalars(select(WebhookEvent.status).where(WebhookEvent.provider == "manual")).all()
        return sorted(statuses) == [EventStatus.PROCESSED] * count

    # One at a time, as an operator marks them: published together, two consumers could
    # take them in different batches and apply the full refund before the partial one
    # (the same end, but another history).
    for applied, event in enumerate(marks, start=1):
        publisher.publish(manual.NAME, event.id, event.raw.encode())
        wait_until(lambda: settled(applied), what=f"mark {applied} applied by the worker")
    payment = client.get(f"/api/payments/{pid}", headers=AUTH).get_json()
    assert [(h["to"], h["actor"], h["reason"]) for h in payment["history"]] == [
        ("completed", "cli:olga", WHY), ("partially_refunded", "api", None), ("refunded", "ops", "closed")
    ]
    assert balance(client) == 0
    assert [(e["kind"], e["amount"]) for e in client.get("/api/users/user_manual/ledger", headers=AUTH).get_json()["entries"]] == [
        ("clawback", -70), ("clawback", -30), ("grant", 100)
    ]
