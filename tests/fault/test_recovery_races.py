"""Recovery racing itself and the webhook: concurrent sweeps look up each payment once,
and verify racing the session's webhook grants once.

Real PostgreSQL; Stripe is the local fake (tests/support/fake_stripe.py).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import select

from application.recovery import Recovery
from application.tracker import PaymentTracker
from application.unit import UnitOfWork
from models.enums import LedgerKind, PaymentStatus
from models.tables import CreditLedger, Payment, WebhookEvent
from providers import stripe
from providers.stripe_api import StripeAPI
from tests.conftest import STRIPE_API_KEY
from tests.support.apply import handle
from tests.support.fake_stripe import FakeStripe

SESSION_PATH = "/v1/checkout/sessions/"


def stripe_api(fake: FakeStripe) -> StripeAPI:
    return StripeAPI(STRIPE_API_KEY, fake.url, max_network_retries=0)


def ledger(database) -> list[tuple[str, str, int, str]]:
    with database.transaction() as session:
        return [(e.user_id, e.kind, e.amount, e.cause) for e in session.scalars(select(CreditLedger).order_by(CreditLedger.id))]


def test_two_concurrent_sweeps_look_up_each_payment_once(fake, stripe_settings, database):
    tracker = PaymentTracker(UnitOfWork(database, stripe_settings.rules()), stripe_settings, stripe_api=stripe_api(fake))
    sessions = [tracker.create_checkout(user_id=f"user_sweeps_{n}", package_id="starter")["session_id"] for n in range(20)]
    for session_id in sessions:
        fake.pay(session_id)
    start = threading.Barrier(2)

    def sweeper(_: int) -> list:
        recovery = Recovery(UnitOfWork(database, stripe_settings.rules()), stripe_api(fake))
        start.wait()
        reports = []
        while True:  # small batches, so the two sweeps interleave
            report = recovery.sweep_pending(
                min_age=timedelta(0), expiry_grace=timedelta(minutes=10), batch_size=3, calls_per_second=1000.0
            )
            if not report.decisions and not report.errors:
                return reports
            reports.append(report)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(sweeper, range(2)))

    reports = [report for per_thread in results for report in per_thread]
    assert [error for report in reports for error in report.errors] == []
    per_session = Counter(r.path[len(SESSION_PATH):] for r in list(fake.requests) if r.method == "GET" and r.path.startswith(SESSION_PATH))
    assert per_session == Counter({session_id: 1 for session_id in sessions}), "a payment was looked up twice (or never)"
    assert sum(report.completed for report in reports) == 20
    assert sorted(sid for report in reports for _, sid, _ in report.decisions) == sorted(sessions)
    rows = ledger(database)
    assert len(rows) == 20
    assert {(kind, amount) for _, kind, amount, _ in rows} == {(LedgerKind.GRANT, 100)}
    assert len({user for user, _, _, _ in rows}) == 20
    with database.transaction() as session:
        assert set(session.scalars(select(Payment.status))) == {PaymentStatus.COMPLETED}


def test_verify_racing_the_webhook_grants_once(fake, stripe_settings, database):
    tracker = PaymentTracker(UnitOfWork(database, stripe_settings.rules()), stripe_settings, stripe_api=stripe_api(fake))
    session_id = tracker.create_checkout(user_id="user_verify_race", package_id="starter")["session_id"]
    paid = fake.pay(session_id)
    body = json.dumps(paid, separators=(",", ":"))
    rules = stripe_settings.rules()
    start = threading.Barrier(20)

    def verify(_: int) -> dict:
        own = PaymentTracker(UnitOfWork(database, stripe_settings.rules()), stripe_settings, stripe_api=stripe_api(fake))
        start.wait()
        return own.verify(session_id)

    def webhook(_: int):
        start.wait()
        return handle(database, stripe.parse_event(body), rules)

    with ThreadPoolExecutor(20) as pool:
        verifies = [pool.submit(verify, n) for n in range(10)]
        webhooks = [pool.submit(webhook, n) for n in range(10)]
        verified = [f.result(timeout=60) for f in verifies]
        delivered = [f.result(timeout=60) for f in webhooks]

    rows = ledger(database)
    assert len(rows) == 1, rows
    user, kind, amount, cause = rows[0]
    assert (user, kind, amount) == ("user_verify_race", LedgerKind.GRANT, 100)
    assert cause in (paid["id"], f"verify:{session_id}:paid:complete")
    added = sum(v["credits_added"] for v in verified)
    assert added == (100 if cause.startswith("verify:") else 0), [v["credits_added"] for v in verified]
    assert all(v["status"] == PaymentStatus.COMPLETED and v["payment_verified"] for v in verified)
    assert {v["balance"] for v in verified} == {100}
    assert sum(1 for d in delivered if not d.duplicate) == 1
    with database.transaction() as session:
        inbox = dict(session.execute(select(WebhookEvent.provider_event_id, WebhookEvent.attempts)).all())
    assert inbox == {paid["id"]: 10, f"verify:{session_id}:paid:complete": 10}
