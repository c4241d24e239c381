"""Recovery against a fake Stripe API: the sweep, reconciliation, verify, their API, CLI and beat.

Everything but Stripe is real: PostgreSQL, Redis, the Celery worker and beat, the
``payhooks`` command. Stripe is tests/support/fake_stripe.py, driven through the
official SDK exactly as production drives Stripe. Every test asserts on rows:
payments, their history, the ledger, the inbox and the reconciliation cursor.

Races (two sweeps at once, verify against the webhook) are in
tests/fault/test_recovery_races.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import select

from application.recovery import Recovery
from application.tracker import PaymentTracker
from application.unit import UnitOfWork
from models.enums import EventStatus, LedgerKind, PaymentStatus
from models.tables import (
    CreditAccount,
    CreditLedger,
    Payment,
    PaymentStatusHistory,
    ProviderCursor,
    WebhookEvent,
)
from providers import stripe
from providers.stripe_api import ProviderUnavailableError, StripeAPI
from receiver import create_app
from tests.conftest import API_TOKEN, STRIPE_API_KEY
from tests.support import processes
from tests.support.apply import handle
from tests.support.fake_stripe import FakeStripe
from tests.support.processes import BIN, Process, wait_until
from tests.support.stripe_events import checkout_session, event

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
GRACE = timedelta(minutes=10)
LOOKBACK = timedelta(hours=1)
OVERLAP = timedelta(minutes=10)


# -- fixtures ----------------------------------------------------------------------------


def stripe_api(fake) -> StripeAPI:
    return StripeAPI(STRIPE_API_KEY, fake.url, max_network_retries=0)


@pytest.fixture
def tracker(database, stripe_settings, fake):
    return PaymentTracker(UnitOfWork(database, stripe_settings.rules()), stripe_settings, stripe_api=stripe_api(fake))


@pytest.fixture
def recovery(database, stripe_settings, fake):
    return Recovery(UnitOfWork(database, stripe_settings.rules()), stripe_api(fake))


# -- helpers -------------------------------------------------------------------------------


def checkout(tracker: PaymentTracker, user_id: str = "user_rec") -> tuple[str, int]:
    created = tracker.create_checkout(user_id=user_id, package_id="starter")
    return created["session_id"], created["payment_id"]


def sweep(recovery: Recovery, **options):
    options.setdefault("min_age", timedelta(0))
    options.setdefault("expiry_grace", GRACE)
    options.setdefault("calls_per_second", 1000.0)
    return recovery.sweep_pending(**options)


def reconcile(recovery: Recovery, **options) -> dict:
    options.setdefault("overlap", OVERLAP)
    options.setdefault("initial_lookback", LOOKBACK)
    return recovery.reconcile_events(**options)


def payment(database, payment_id: int) -> Payment:
    with database.transaction() as session:
        return session.get(Payment, payment_id)


def payment_by_session(database, session_id: str) -> Payment:
    with database.transaction() as session:
        return session.scalars(select(Payment).where(Payment.provider_session_id == session_id)).one()


def history(database, payment_id: int) -> list[tuple[str | None, str, str]]:
    with database.transaction() as session:
        rows = session.scalars(
            select(PaymentStatusHistory).where(PaymentStatusHistory.payment_id == payment_id).order_by(PaymentStatusHistory.id)
        )
        return [(h.from_status, h.to_status, h.cause) for h in rows]


def ledger(database, user_id: str | None = None) -> list[tuple[str, str, int, str]]:
    with database.transaction() as session:
        query = select(CreditLedger).order_by(CreditLedger.id)
        if user_id is not None:
            query = query.where(CreditLedger.user_id == user_id)
        return [(e.user_id, e.kind, e.amount, e.cause) for e in session.scalars(query)]


def balance(database, user_id: str) -> int:
    with database.transaction() as session:
        account = session.get(CreditAccount, user_id)
        return account.balance if account else 0


def inbox(database) -> list[tuple[str, str, str]]:
    with database.transaction() as session:
        rows = session.scalars(select(WebhookEvent).order_by(WebhookEvent.id))
        return [(r.provider_event_id, r.source, r.status) for r in rows]


def cursor(database) -> datetime | None:
    with database.transaction() as session:
        return session.scalar(select(ProviderCursor.last_event_created_at).where(ProviderCursor.provider == stripe.NAME))


def lookups(fake: FakeStripe, session_id: str | None = None) -> int:
    """GET /v1/checkout/sessions/<id> requests the fake received (for one session, or all)."""
    prefix = "/v1/checkout/sessions/"
    return sum(
        1
        for r in list(fake.requests)
        if r.method == "GET" and r.path.startswith(prefix) and (session_id is None or r.path == prefix + session_id)
    )


def event_listings(fake: FakeStripe) -> list:
    return [r for r in list(fake.requests) if r.method == "GET" and r.path == "/v1/events"]


def plain_session(user_id: str) -> dict:
    """A paid session from Stripe's fixture, without the fixture's currency conversion.

    (A session with one is covered by the tests at the end: the SDK turns its
    ``fx_rate`` into a Decimal.)
    """
    return checkout_session(user_id=user_id, credits="100") | {"currency_conversion": None}


# Adaptive Pricing: Stripe shows the conversion on the session; ``fx_rate`` is a decimal string.
CURRENCY_CONVERSION = {"amount_subtotal": 920, "amount_total": 920, "fx_rate": "0.92", "source_currency": "usd"}


def deliver(database, raw_event: dict, rules, source: str = "webhook"):
    """Apply a provider event the way the worker does, in its own transaction."""
    return handle(database, stripe.parse_event(json.dumps(raw_event, separators=(",", ":"))), rules, source=source)


# -- 1. the sweep grants a paid session whose webhook never came -----------------------------


def test_sweep_grants_a_paid_session_whose_webhook_never_came(fake, tracker, recovery, database, stripe_settings):
    session_id, payment_id = checkout(tracker, "user_sweep")
    assert [(r.method, r.path) for r in fake.requests] == [("POST", "/v1/checkout/sessions")]
    assert payment(database, payment_id).status == PaymentStatus.PENDING
    paid = fake.pay(session_id)  # the customer paid; the webhook is never delivered

    report = sweep(recovery)

    assert (report.checked, report.completed, report.expired, report.still_open) == (1, 1, 0, 0)
    assert (report.unavailable, report.errors) == (False, [])
    assert report.decisions == [(payment_id, session_id, "completed")]
    row = payment(database, payment_id)
    assert row.status == PaymentStatus.COMPLETED
    assert row.paid_at is not None
    assert row.provider_payment_id == paid["data"]["object"]["payment_intent"]
    synthetic = f"sweep:{session_id}:paid:complete"
    assert ledger(database) == [("user_sweep", LedgerKind.GRANT, 100, synthetic)]
    assert history(database, payment_id)[-1][1:] == (PaymentStatus.COMPLETED, synthetic)
    assert history(database, payment_id)[-1][2].startswith("sweep:")
    assert inbox(database) == [(synthetic, "sweep", EventStatus.PROCESSED)]
    assert lookups(fake, session_id) == 1

    # A second sweep: the payment is no longer pending, so it is not even looked up.
    again = sweep(recovery)
    assert (again.checked, again.completed, again.decisions) == (0, 0, [])
    assert lookups(fake, session_id) == 1

    # The real webhook arrives late: recorded, but nothing is granted twice.
    before = history(database, payment_id)
    result = deliver(database, paid, stripe_settings.rules())
    assert not result.duplicate
    assert ledger(database) == [("user_sweep", LedgerKind.GRANT, 100, synthetic)]
    assert history(database, payment_id) == before
    assert payment(database, payment_id).status == PaymentStatus.COMPLETED
    assert balance(database, "user_sweep") == 100
    assert [(i, s) for i, s, _ in inbox(database)] == [(synthetic, "sweep"), (paid["id"], "webhook")]


# -- 2. still open: left alone; younger than min_age: not even looked up ----------------------


def test_sweep_leaves_an_open_session_alone_and_respects_min_age(fake, tracker, recovery, database):
    session_id, payment_id = checkout(tracker, "user_open")

    young = sweep(recovery, min_age=timedelta(hours=1))
    assert (young.checked, young.decisions) == (0, [])
    assert lookups(fake) == 0, "a payment younger than min_age was looked up"
    assert payment(database, payment_id).next_check_at is None

    report = sweep(recovery)
    assert (report.checked, report.still_open, report.completed, report.expired) == (1, 1, 0, 0)
    assert report.decisions == [(payment_id, session_id, "still open")]
    row = payment(database, payment_id)
    assert (row.status, row.paid_at) == (PaymentStatus.PENDING, None)
    assert row.next_check_at is not None and row.next_check_at > datetime.now(UTC)  # leased
    assert ledger(database) == []
    assert inbox(database) == []
    assert history(database, payment_id) == []  # no status change recorded
    assert lookups(fake, session_id) == 1

    # Under its lease it is not looked up again at once.
    assert sweep(recovery).checked == 0
    assert lookups(fake, session_id) == 1


# -- 3. expired at the provider, or overdue past expires_at + grace -------------------------


def test_sweep_expires_a_session_the_provider_expired(fake, tracker, recovery, database):
    session_id, payment_id = checkout(tracker, "user_exp")
    fake.expire_session(session_id)

    report = sweep(recovery)

    assert (report.checked, report.expired, report.completed) == (1, 1, 0)
    assert report.decisions == [(payment_id, session_id, "expired")]
    row = payment(database, payment_id)
    assert (row.status, row.paid_at) == (PaymentStatus.EXPIRED, None)
    assert history(database, payment_id)[-1][1:] == (PaymentStatus.EXPIRED, f"sweep:{session_id}:unpaid:expired")
    assert ledger(database) == []
    assert inbox(database) == [(f"sweep:{session_id}:unpaid:expired", "sweep", EventStatus.PROCESSED)]


def test_sweep_expires_an_overdue_session_only_after_the_grace(fake, tracker, recovery, database):
    session_id, payment_id = checkout(tracker, "user_overdue")
    expires_at = datetime.fromtimestamp(fake.get_session(session_id)["expires_at"], UTC)
    assert payment(database, payment_id).expires_at == expires_at

    within = sweep(recovery, now=expires_at + GRACE - timedelta(minutes=1))
    assert (within.checked, within.still_open, within.expired) == (1, 1, 0)
    assert payment(database, payment_id).status == PaymentStatus.PENDING

    past = sweep(recovery, now=expires_at + GRACE + timedelta(minutes=1))
    assert (past.checked, past.still_open, past.expired) == (1, 0, 1)
    assert past.decisions == [(payment_id, session_id, "expired")]
    assert fake.get_session(session_id)["status"] == "open"  # the provider still says open
    assert payment(database, payment_id).status == PaymentStatus.EXPIRED
    assert history(database, payment_id)[-1][1:] == (PaymentStatus.EXPIRED, f"sweep:{session_id}:unpaid:overdue")
    assert ledger(database) == []


# -- 4. provider outage: claims handed back, the next sweep completes ----------------------------


def test_sweep_during_a_provider_outage_hands_its_claims_back(fake, tracker, recovery, database):
    sessions = [checkout(tracker, f"user_outage_{n}") for n in range(3)]
    for session_id, _ in sessions:
        fake.pay(session_id)
    fake.outage(True)

    down = sweep(recovery)

    assert down.unavailable is True
    assert down.errors and "500" in down.errors[0]
    assert (down.checked, down.completed) == (0, 0)
    assert lookups(fake) == 1, "the sweep should stop at the first unavailable answer"
    for _, payment_id in sessions:
        row = payment(database, payment_id)
        assert (row.status, row.paid_at, row.next_check_at) == (PaymentStatus.PENDING, None, None)
    assert ledger(database) == [] and inbox(database) == []

    fake.outage(False)
    up = sweep(recovery)

    assert (up.unavailable, up.errors, up.checked, up.completed) == (False, [], 3, 3)
    for session_id, payment_id in sessions:
        assert payment(database, payment_id).status == PaymentStatus.COMPLETED
    assert sorted(ledger(database)) == sorted(
        (f"user_outage_{n}", LedgerKind.GRANT, 100, f"sweep:{sessions[n][0]}:paid:complete") for n in range(3)
    )


# -- 6. the rate bound -------------------------------------------------------------------------


def test_sweep_respects_calls_per_second(fake, tracker, recovery):
    for n in range(6):
        checkout(tracker, f"user_rate_{n}")

    started = time.monotonic()
    report = sweep(recovery, calls_per_second=5.0)
    elapsed = time.monotonic() - started

    assert report.checked == 6
    assert lookups(fake) == 6
    # 6 calls at 5 a second: the first at once, then one every 0.2 s -> at least 1 s.
    assert elapsed >= 0.95, f"6 lookups at 5/s took only {elapsed:.2f}s"
    assert elapsed < 5, f"6 lookups at 5/s took {elapsed:.2f}s"


# -- 7. reconciliation ----------------------------------------------------------------------------


def test_reconcile_applies_an_undelivered_event_and_moves_the_cursor(fake, tracker, recovery, database):
    session_id, payment_id = checkout(tracker, "user_recon")
    paid = fake.pay(session_id)

    report = reconcile(recovery)

    assert (report["listed"], report["missing"], report["applied"]) == (1, 1, 1)
    assert report["missing_ids"] == [paid["id"]]
    assert inbox(database) == [(paid["id"], "reconcile", EventStatus.PROCESSED)]
    assert payment(database, payment_id).status == PaymentStatus.COMPLETED
    assert ledger(database) == [("user_recon", LedgerKind.GRANT, 100, paid["id"])]
    assert history(database, payment_id)[-1][1:] == (PaymentStatus.COMPLETED, paid["id"])
    assert cursor(database) == datetime.fromtimestamp(paid["created"], UTC)

    again = reconcile(recovery)
    assert (again["listed"], again["missing"], again["applied"]) == (1, 0, 0)  # the overlap lists it again
    assert len(ledger(database)) == 1
    assert inbox(database) == [(paid["id"], "reconcile", EventStatus.PROCESSED)]
    # The second run started from the stored cursor minus the overlap.
    assert datetime.fromisoformat(again["since"]) == cursor(database) - OVERLAP


def test_reconcile_skips_events_already_in_the_inbox(fake, tracker, recovery, database, stripe_settings):
    session_id, payment_id = checkout(tracker, "user_known")
    paid = fake.pay(session_id)
    deliver(database, paid, stripe_settings.rules())

    report = reconcile(recovery)

    assert (report["listed"], report["missing"], report["applied"]) == (1, 0, 0)
    assert inbox(database) == [(paid["id"], "webhook", EventStatus.PROCESSED)]
    assert ledger(database) == [("user_known", LedgerKind.GRANT, 100, paid["id"])]
    assert cursor(database) is not None


def test_reconcile_dry_run_lists_but_applies_nothing_and_leaves_the_cursor(fake, tracker, recovery, database):
    first_session, _ = checkout(tracker, "user_dry_a")
    first = fake.pay(first_session)
    reconcile(recovery)
    stored = cursor(database)
    assert stored == datetime.fromtimestamp(first["created"], UTC)

    session_id, payment_id = checkout(tracker, "user_dry_b")
    later = fake.pay(session_id, created=first["created"] + 5)

    report = reconcile(recovery, dry_run=True)

    assert report["missing_ids"] == [later["id"]]
    assert (report["missing"], report["applied"]) == (1, 0)
    assert payment(database, payment_id).status == PaymentStatus.PENDING
    assert ledger(database, "user_dry_b") == []
    assert later["id"] not in [i for i, _, _ in inbox(database)]
    assert cursor(database) == stored


def test_reconcile_since_reaches_older_events(fake, recovery, database):
    old = fake.add_event(
        event(
            "checkout.session.completed",
            plain_session("user_old"),
            created=int(time.time()) - 2 * 86400,
        )
    )

    default = reconcile(recovery)  # initial lookback: 1 h
    assert (default["listed"], default["missing"]) == (0, 0)
    assert ledger(database) == []

    reached = reconcile(recovery, since=datetime.now(UTC) - timedelta(days=3))
    assert (reached["listed"], reached["missing"], reached["applied"]) == (1, 1, 1)
    assert reached["missing_ids"] == [old["id"]]
    assert inbox(database) == [(old["id"], "reconcile", EventStatus.PROCESSED)]
    assert ledger(database) == [("user_old", LedgerKind.GRANT, 100, old["id"])]
    row = payment_by_session(database, old["data"]["object"]["id"])
    assert row.status == PaymentStatus.COMPLETED


def test_reconcile_asks_only_for_the_types_we_handle(fake, recovery, database):
    unhandled = fake.add_event(event("customer.created", {"id": "cus_1", "object": "customer"}))

    report = reconcile(recovery)

    assert (report["listed"], report["missing"]) == (0, 0)
    assert unhandled["id"] not in report["missing_ids"]
    listings = event_listings(fake)
    assert listings, "the events API was not asked"
    # Stripe takes at most 20 types a listing: every handled type is asked for, in groups, and nothing else.
    asked = [t for listing in listings for t in listing.params["types"]]
    assert all(len(listing.params["types"]) <= 20 for listing in listings)
    assert sorted(asked) == sorted(stripe.HANDLED_TYPES)
    assert inbox(database) == []


def test_reconcile_with_the_provider_down_raises_and_keeps_the_cursor(fake, tracker, recovery, database):
    first_session, _ = checkout(tracker, "user_down_a")
    first = fake.pay(first_session)
    reconcile(recovery)
    stored = cursor(database)
    assert stored == datetime.fromtimestamp(first["created"], UTC)

    later_session, later_payment = checkout(tracker, "user_down_b")
    fake.pay(later_session, created=first["created"] + 5)
    fake.outage(True)
    with pytest.raises(ProviderUnavailableError):
        reconcile(recovery)
    assert cursor(database) == stored
    assert payment(database, later_payment).status == PaymentStatus.PENDING

    fake.outage(False)
    report = reconcile(recovery)
    assert (report["missing"], report["applied"]) == (1, 1)
    assert payment(database, later_payment).status == PaymentStatus.COMPLETED
    assert cursor(database) == datetime.fromtimestamp(first["created"] + 5, UTC)


def test_reconcile_pages_through_250_undelivered_events_and_survives_a_failure_mid_walk(
    fake, recovery, database, monkeypatch
):
    events = [fake.add_event(event("checkout.session.completed", plain_session(f"user_page_{n}"))) for n in range(250)]
    # The provider goes down after the first page has been read and applied.
    applied = []
    original = recovery._apply

    def apply_then_outage(*args, **kwargs):
        applied.append(1)
        if len(applied) == 100:
            fake.outage(True)
        return original(*args, **kwargs)

    monkeypatch.setattr(recovery, "_apply", apply_then_outage)
    with pytest.raises(ProviderUnavailableError):
        reconcile(recovery)
    assert cursor(database) is None, "the cursor moved after a run that did not finish"
    assert len(ledger(database)) == 100

    monkeypatch.undo()
    fake.outage(False)
    listed_before = len(event_listings(fake))
    report = reconcile(recovery)

    assert (report["listed"], report["missing"], report["applied"]) == (250, 150, 150)
    groups = -(-len(stripe.HANDLED_TYPES) // 20)  # Stripe takes at most 20 types a listing
    assert len(event_listings(fake)) - listed_before == 3 + (groups - 1)  # pages of 100 + 100 + 50, then the other groups' one
    assert len(set(report["missing_ids"])) == 150
    rows = ledger(database)
    assert len(rows) == 250
    assert {user for user, _, _, _ in rows} == {f"user_page_{n}" for n in range(250)}
    assert {(kind, amount) for _, kind, amount, _ in rows} == {(LedgerKind.GRANT, 100)}
    assert sorted(i for i, _, _ in inbox(database)) == sorted(e["id"] for e in events)
    assert Counter(source for _, source, _ in inbox(database)) == {"reconcile": 250}
    assert cursor(database) == datetime.fromtimestamp(max(e["created"] for e in events), UTC)


# -- 9. POST /api/payments/verify ------------------------------------------------------------------


def test_verify_route_grants_once_and_maps_provider_errors(fake, stripe_settings, database, settings):
    client = create_app(stripe_settings).test_client()
    created = client.post("/api/checkout", json={"user_id": "user_route", "package_id": "starter"}, headers=AUTH)
    assert created.status_code == 201, created.get_json()
    session_id, payment_id = created.get_json()["session_id"], created.get_json()["payment_id"]
    fake.pay(session_id)

    first = client.post("/api/payments/verify", json={"session_id": session_id}, headers=AUTH)
    assert first.status_code == 200, first.get_json()
    body = first.get_json()
    assert {k: body[k] for k in ("payment_verified", "status", "credits_added", "balance")} == {
        "payment_verified": True,
        "status": "completed",
        "credits_added": 100,
        "balance": 100,
    }
    assert payment(database, payment_id).status == PaymentStatus.COMPLETED
    assert ledger(database) == [("user_route", LedgerKind.GRANT, 100, f"verify:{session_id}:paid:complete")]
    assert inbox(database) == [(f"verify:{session_id}:paid:complete", "verify", EventStatus.PROCESSED)]

    second = client.post("/api/payments/verify", json={"session_id": session_id}, headers=AUTH)
    assert second.status_code == 200
    assert (second.get_json()["credits_added"], second.get_json()["balance"]) == (0, 100)
    assert len(ledger(database)) == 1

    # A session Stripe does not know is the caller's mistake: 404, not a gateway error.
    unknown = client.post("/api/payments/verify", json={"session_id": "cs_test_nobody"}, headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.get_json()["error"] == "not_found"
    assert "no such object" in unknown.get_json()["message"]
    fake.fail_next(status=400, should_retry=False)  # Stripe refusing what we sent: ours to fix, a 502
    refused = client.post("/api/payments/verify", json={"session_id": session_id}, headers=AUTH)
    assert refused.status_code == 502
    assert refused.get_json()["error"] == "provider_error"

    unconfigured = create_app(settings).test_client()  # no STRIPE_API_KEY
    answer = unconfigured.post("/api/payments/verify", json={"session_id": session_id}, headers=AUTH)
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "stripe_not_configured"
    assert "STRIPE_API_KEY" in answer.get_json()["message"]


# -- 10. POST /api/checkout ------------------------------------------------------------------------


def test_checkout_route_creates_the_session_and_records_it_pending(fake, stripe_settings, database):
    client = create_app(stripe_settings).test_client()

    answer = client.post("/api/checkout", json={"user_id": "user_buy", "package_id": "starter"}, headers=AUTH)

    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert set(body) >= {"checkout_url", "session_id", "payment_id"}
    session_id = body["session_id"]
    assert body["checkout_url"] == fake.get_session(session_id)["url"]
    row = payment(database, body["payment_id"])
    assert (row.provider_session_id, row.status, row.user_id, row.credits) == (session_id, PaymentStatus.PENDING, "user_buy", 100)
    assert (row.amount_cents, row.currency, row.package_id) == (999, "usd", "starter")
    assert row.expires_at == datetime.fromtimestamp(fake.get_session(session_id)["expires_at"], UTC)
    [create] = [r for r in fake.requests if (r.method, r.path) == ("POST", "/v1/checkout/sessions")]
    assert create.params["metadata"] == {"user_id": "user_buy", "package_id": "starter", "credits": "100"}
    assert create.params["client_reference_id"] == "user_buy"
    assert create.idempotency_key

    unknown = client.post("/api/checkout", json={"user_id": "user_buy", "package_id": "platinum"}, headers=AUTH)
    assert unknown.status_code == 400
    assert "package_id" in unknown.get_json()["fields"]
    assert "platinum" in unknown.get_json()["message"]
    assert len([r for r in fake.requests if r.method == "POST"]) == 1  # nothing sent for the unknown package


def test_checkout_idempotency_key_reused_for_another_checkout_is_409(fake, stripe_settings):
    client = create_app(stripe_settings).test_client()
    key = {**AUTH, "Idempotency-Key": "order-7"}

    first = client.post("/api/checkout", json={"user_id": "user_a", "package_id": "starter"}, headers=key)
    again = client.post("/api/checkout", json={"user_id": "user_a", "package_id": "starter"}, headers=key)
    other = client.post("/api/checkout", json={"user_id": "user_b", "package_id": "starter"}, headers=key)
    bad_key = client.post("/api/checkout", json={"user_id": "user_a", "package_id": "starter"},
                          headers={**AUTH, "Idempotency-Key": "x" * 256})

    assert (first.status_code, again.status_code) == (201, 201)
    assert first.get_json()["session_id"] == again.get_json()["session_id"]  # Stripe replayed it
    assert other.status_code == 409 and other.get_json()["error"] == "conflict"
    assert bad_key.status_code == 400 and "Idempotency-Key" in bad_key.get_json()["fields"]


# -- 11. the CLI ----------------------------------------------------------------------------------


def payhooks(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return processes.cli(env, *args)


def test_cli_sweep_and_reconcile(fake, tracker, database, process_env):
    env = {**process_env, "STRIPE_API_KEY": STRIPE_API_KEY, "STRIPE_API_BASE": fake.url}
    unconfigured = {k: v for k, v in env.items() if k != "STRIPE_API_KEY"}
    session_id, payment_id = checkout(tracker, "user_cli")
    paid = fake.pay(session_id)

    # Commands that change nothing run at once (each process spends ~2 s importing).
    with ThreadPoolExecutor(4) as pool:
        dry_run = pool.submit(payhooks, env, "sweep", "--min-age", "0", "--dry-run")
        listing_run = pool.submit(payhooks, env, "reconcile", "--since", "2h", "--dry-run")
        bogus_run = pool.submit(payhooks, env, "reconcile", "--since", "bogus")
        refused_run = pool.submit(payhooks, unconfigured, "sweep", "--min-age", "0")
        dry, listing, bogus, refused = (f.result() for f in (dry_run, listing_run, bogus_run, refused_run))

    assert dry.returncode == 0, dry.stderr
    assert f"payment {payment_id} ({session_id}) would be completed" in dry.stdout
    assert "dry run: checked 1: 1 completed" in dry.stdout
    assert listing.returncode == 0, listing.stderr
    assert f"missing: {paid['id']}" in listing.stdout
    assert bogus.returncode == 2
    assert "Usage:" in bogus.stderr and "--since" in bogus.stderr
    assert refused.returncode != 0
    assert "STRIPE_API_KEY is not set" in refused.stderr, refused.stderr
    row = payment(database, payment_id)
    assert (row.status, row.next_check_at) == (PaymentStatus.PENDING, None)
    assert ledger(database) == [] and inbox(database) == []
    assert cursor(database) is None

    real = payhooks(env, "sweep", "--min-age", "0")
    assert real.returncode == 0, real.stderr
    assert f"payment {payment_id} ({session_id}) is completed" in real.stdout
    assert payment(database, payment_id).status == PaymentStatus.COMPLETED
    assert ledger(database) == [("user_cli", LedgerKind.GRANT, 100, f"sweep:{session_id}:paid:complete")]

    _, other_payment = checkout(tracker, "user_cli_2")
    fake.outage(True, should_retry=False)  # no SDK retry sleeps in the subprocess
    down = payhooks(env, "sweep", "--min-age", "0")
    fake.outage(False)
    assert down.returncode != 0
    assert "error:" in down.stderr
    assert payment(database, other_payment).status == PaymentStatus.PENDING
    assert payment(database, other_payment).next_check_at is None
    assert len(ledger(database)) == 1


# -- 12. beat schedules the sweep onto a real worker -----------------------------------------------


@pytest.fixture
def beat_env(process_env, test_services, fake):
    url = test_services.redis_url.rsplit("/", 1)[0] + "/4"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield {
        **process_env,
        "REDIS_URL": url,
        "STRIPE_API_KEY": STRIPE_API_KEY,
        "STRIPE_API_BASE": fake.url,
        "SWEEP_INTERVAL_SECONDS": "1",
        "SWEEP_MIN_AGE_SECONDS": "1",
        "RECONCILE_INTERVAL_SECONDS": "3600",
        "HELD_RETRY_INTERVAL_SECONDS": "3600",
    }
    client.flushdb()


def test_beat_schedules_the_sweep_onto_a_real_worker(fake, tracker, database, beat_env, tmp_path):
    session_id, payment_id = checkout(tracker, "user_beat_sweep")
    fake.pay(session_id)  # the webhook is never delivered

    worker = processes.celery_worker(beat_env, name="sweeper")
    beat = None
    try:
        beat = Process(
            "beat",
            [str(BIN / "celery"), "-A", "workers", "beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "beat-schedule")],
            beat_env,
        ).start()
        wait_until(
            lambda: payment(database, payment_id).status == PaymentStatus.COMPLETED,
            30,
            interval=0.2,
            what="beat to schedule the sweep and the worker to complete the paid payment",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nbeat:\n{beat.log(30) if beat else ''}\nworker:\n{worker.log(30)}") from None
    finally:
        if beat is not None:
            beat.stop()
        worker.stop()

    assert beat.saw("Sending due task sweep-pending")
    assert not beat.saw("Sending due task reconcile-events")
    assert ledger(database) == [("user_beat_sweep", LedgerKind.GRANT, 100, f"sweep:{session_id}:paid:complete")]
    assert history(database, payment_id)[-1][2].startswith("sweep:")
    assert inbox(database) == [(f"sweep:{session_id}:paid:complete", "sweep", EventStatus.PROCESSED)]


# -- sessions with a currency conversion (Stripe's decimal-string fields) ------------------------
# stripe-python >= 15 hydrates "decimal_string" fields (checkout.session
# currency_conversion.fx_rate; price/line item unit_amount_decimal) as Decimal;
# providers/stripe_api.py must hand them on JSON-ready (to_dict(for_json=True)), or
# recovery's json.dumps() raises TypeError and reconciliation sticks on that event.


def test_reconcile_applies_an_event_whose_session_has_a_currency_conversion(fake, recovery, database):
    converted = fake.add_event(
        event("checkout.session.completed", plain_session("user_fx_recon") | {"currency_conversion": CURRENCY_CONVERSION})
    )

    report = reconcile(recovery)

    assert (report["missing"], report["applied"]) == (1, 1)
    assert inbox(database) == [(converted["id"], "reconcile", EventStatus.PROCESSED)]
    assert ledger(database) == [("user_fx_recon", LedgerKind.GRANT, 100, converted["id"])]
    assert cursor(database) is not None


def test_sweep_completes_a_paid_session_with_a_currency_conversion(fake, tracker, recovery, database):
    session_id, payment_id = checkout(tracker, "user_fx_sweep")
    fake.pay(session_id)
    with fake.lock:
        fake.sessions[session_id]["currency_conversion"] = dict(CURRENCY_CONVERSION)
    # A plain paid payment after it in the same batch: the crash must not take it down too.
    plain_id, plain_payment = checkout(tracker, "user_fx_plain")
    fake.pay(plain_id)

    report = sweep(recovery)

    assert (report.checked, report.completed, report.errors) == (2, 2, [])
    assert payment(database, payment_id).status == PaymentStatus.COMPLETED
    assert payment(database, plain_payment).status == PaymentStatus.COMPLETED
    assert sorted(ledger(database)) == [
        ("user_fx_plain", LedgerKind.GRANT, 100, f"sweep:{plain_id}:paid:complete"),
        ("user_fx_sweep", LedgerKind.GRANT, 100, f"sweep:{session_id}:paid:complete"),
    ]


def test_verify_route_completes_a_paid_session_with_a_currency_conversion(fake, stripe_settings, database):
    client = create_app(stripe_settings).test_client()
    created = client.post("/api/checkout", json={"user_id": "user_fx_verify", "package_id": "starter"}, headers=AUTH)
    session_id = created.get_json()["session_id"]
    fake.pay(session_id)
    with fake.lock:
        fake.sessions[session_id]["currency_conversion"] = dict(CURRENCY_CONVERSION)

    answer = client.post("/api/payments/verify", json={"session_id": session_id}, headers=AUTH)

    assert answer.status_code == 200, answer.get_json()
    assert (answer.get_json()["status"], answer.get_json()["credits_added"]) == ("completed", 100)
    assert ledger(database) == [("user_fx_verify", LedgerKind.GRANT, 100, f"verify:{session_id}:paid:complete")]


def test_verify_of_a_payment_link_session_reads_its_line_items_before_answering(fake, database, stripe_settings):
    from tests.support.stripe_flows import build, serve

    flow = build("payment_link")
    serve(flow, fake)
    [session_id] = flow.config.line_items
    rules = stripe_settings.replace(credit_catalog=dict(flow.config.catalog)).rules()
    recovery = Recovery(UnitOfWork(database, rules), stripe_api(fake))

    answer = recovery.verify(session_id)

    granted = flow.payments[0].granted
    assert (answer["payment_verified"], answer["status"], answer["credits_added"], answer["balance"]) == (
        True, "completed", granted, granted)
    # the line items were read while the buyer waited, not at the next retry of held events
    assert [r.path for r in list(fake.requests) if r.path.endswith("/line_items")] == [
        f"/v1/checkout/sessions/{session_id}/line_items"]
    assert recovery.verify(session_id)["credits_added"] == 0
