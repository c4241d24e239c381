"""The JSON API and the Python PaymentTracker, on a real database (and the real worker for the story)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from werkzeug.routing import Rule

from application.batch import Incoming
from application.tracker import ConflictError, NotFoundError, PaymentTracker
from application.unit import UnitOfWork
from models.enums import ClawbackPolicy, EventStatus
from models.rules import Rules
from models.tables import CreditLedger, WebhookEvent
from providers import stripe
from tests.conftest import API_TOKEN, PRIMARY_SECRET
from tests.support.apply import handle
from tests.support.processes import wait_until
from tests.support.stripe_events import (
    charge,
    checkout_session,
    dispute,
    encode,
    event,
    signed_headers,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def api(client, method: str, path: str, **kwargs):
    return client.open(path, method=method, headers=AUTH, **kwargs)


def pending(**overrides) -> dict:
    body = {"user_id": "user_api", "amount_cents": 1000, "currency": "USD", "credits": 100, "session_id": "cs_test_api_1"}
    return body | overrides


# -- the OpenAPI document matches the routes -------------------------------------------------


def test_openapi_documents_exactly_the_api_routes(app, client):
    def documented_path(rule: Rule) -> str:
        path = rule.rule
        for argument in rule.arguments:
            path = path.replace(f"<id:{argument}>", f"{{{argument}}}").replace(f"<{argument}>", f"{{{argument}}}")
        return path

    routes = {
        (documented_path(rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    document = api(client, "GET", "/api/openapi.json").get_json()
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}

    assert documented == routes
    assert document["openapi"].startswith("3.")


def test_every_api_route_needs_the_token(app, client):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<id:\w+>", "1", rule.rule).replace("<user_id>", "u")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert client.open(path, method=method).status_code == 401, (method, path)


# -- recording pending payments --------------------------------------------------------------


def test_create_pending_payment_is_idempotent_and_detects_conflicts(client):
    created = api(client, "POST", "/api/payments", json=pending(package_id="starter", metadata={"campaign": "x"}))
    assert created.status_code == 201
    payment = created.get_json()
    assert (payment["status"], payment["currency"], payment["credits"]) == ("pending", "usd", 100)
    assert payment["metadata"] == {"campaign": "x"}

    again = api(client, "POST", "/api/payments", json=pending(package_id="starter"))
    assert again.status_code == 200
    assert again.get_json()["id"] == payment["id"]

    clash = api(client, "POST", "/api/payments", json=pending(credits=500))
    assert clash.status_code == 409
    assert clash.get_json()["error"] == "conflict"
    assert "credits" in clash.get_json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in pending().items() if k != "user_id"}, "user_id"),
        (pending(amount_cents=-1), "amount_cents"),
        (pending(currency="dollars"), "currency"),
        (pending(credits=0), "credits"),
        (pending(credits="many"), "credits"),
        (pending(provider="square"), "provider"),
        (pending(expires_at="tomorrow"), "expires_at"),
        (pending(surprise=1), "surprise"),
    ],
)
def test_create_pending_payment_names_the_invalid_field(client, body, field):
    response = api(client, "POST", "/api/payments", json=body)
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["error"] == "validation_error"
    assert field in payload["fields"]


def test_a_body_that_is_not_json_is_400(client):
    response = api(client, "POST", "/api/payments", data="user_id=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert response.get_json()["fields"] == {"body": "must be a JSON object"}


def test_unknown_payment_is_404(client):
    response = api(client, "GET", "/api/payments/999999")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_listing_filters_and_pages(client):
    for n in range(5):
        api(client, "POST", "/api/payments", json=pending(session_id=f"cs_list_{n}", user_id="lister"))
    api(client, "POST", "/api/payments", json=pending(session_id="cs_other", user_id="someone_else"))

    first = api(client, "GET", "/api/payments?user_id=lister&page_size=2").get_json()
    assert (first["total_count"], first["page"], first["page_size"], first["has_more"]) == (5, 1, 2, True)
    last = api(client, "GET", "/api/payments?user_id=lister&page_size=2&page=3").get_json()
    assert (len(last["payments"]), last["has_more"]) == (1, False)
    ids = [p["id"] for p in first["payments"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert api(client, "GET", "/api/payments?status=completed").get_json()["total_count"] == 0
    assert api(client, "GET", "/api/payments?status=bogus").status_code == 400
    assert api(client, "GET", "/api/payments?page=0").status_code == 400


def test_checkout_without_a_stripe_key_says_so(client):
    response = api(client, "POST", "/api/checkout", json={"user_id": "u", "package_id": "starter"})
    assert response.status_code in (400, 503)  # unknown package is checked first when none are configured
    assert response.get_json()["error"] in ("validation_error", "stripe_not_configured")


# -- spending and the clawback policy --------------------------------------------------------


def deliver_direct(database, evt, rules=Rules()):
    return handle(database, stripe.parse_event(encode(evt)), rules)


def completed(user: str, credits: int, amount: int, pi: str) -> dict:
    return event("checkout.session.completed", checkout_session(user_id=user, credits=str(credits), amount_total=amount, payment_intent=pi))


def test_spend_is_idempotent_and_refuses_an_overdraft(client, database):
    deliver_direct(database, completed("spender", 50, 500, "pi_spend"))

    spent = api(client, "POST", "/api/users/spender/spend", json={"credits": 30, "idempotency_key": "order-1"})
    assert spent.status_code == 200
    assert spent.get_json()["balance"] == 20
    again = api(client, "POST", "/api/users/spender/spend", json={"credits": 30, "idempotency_key": "order-1"})
    assert again.get_json()["balance"] == 20
    too_much = api(client, "POST", "/api/users/spender/spend", json={"credits": 21, "idempotency_key": "order-2"})
    assert too_much.status_code == 409
    assert too_much.get_json()["error"] == "insufficient_credits"


def test_a_spend_key_can_never_block_a_key_payhooks_writes(client, database):
    """Caller keys live in their own namespace: choosing the grant key of a payment not yet settled changes nothing."""
    deliver_direct(database, completed("early_bird", 40, 400, "pi_early"))
    later = api(client, "POST", "/api/payments", json=pending(user_id="early_bird", session_id="cs_later", credits=100)).get_json()
    grant_key = f"stripe:payment:{later['id']}:grant"  # what payhooks will write when cs_later is paid

    taken = api(client, "POST", "/api/users/early_bird/spend", json={"credits": 2, "idempotency_key": grant_key})
    assert taken.status_code == 200, taken.get_json()
    assert taken.get_json()["entry"]["idempotency_key"] == grant_key  # shown as the caller chose it
    paid = checkout_session(session_id="cs_later", user_id=None, credits=None, amount_total=1000, payment_intent="pi_later")
    assert deliver_direct(database, event("checkout.session.completed", paid)).status == "processed"

    with database.transaction() as session:
        keys = dict(session.execute(
            select(CreditLedger.idempotency_key, CreditLedger.amount).where(CreditLedger.user_id == "early_bird")
        ).all())
    assert keys[grant_key] == 100 and keys[f"spend:{grant_key}"] == -2
    assert api(client, "GET", "/api/users/early_bird/credits").get_json()["balance"] == 40 - 2 + 100


def test_a_paid_amount_that_differs_from_the_recorded_one_is_kept_and_counted(app, client, database):
    """Tax, a discount or an adjusted price: refunds follow what was captured, and the difference is never silent."""
    created = api(client, "POST", "/api/payments", json=pending(session_id="cs_taxed", amount_cents=1000, credits=100)).get_json()
    services = app.extensions["payhooks"]
    session = checkout_session(session_id="cs_taxed", user_id=None, credits=None, amount_total=1210, payment_intent="pi_taxed")
    services.unit.apply([Incoming(stripe.parse_event(encode(event("checkout.session.completed", session))))])
    services.unit.apply([Incoming(stripe.parse_event(encode(event("charge.refunded", charge("pi_taxed", 1210, 605)))))])

    payment = api(client, "GET", f"/api/payments/{created['id']}").get_json()
    assert (payment["amount_cents"], payment["paid_amount_cents"], payment["amount_mismatch"]) == (1000, 1210, True)
    assert (payment["status"], payment["credits_taken_back"]) == ("partially_refunded", 50)  # half of 1210, not of 1000
    assert api(client, "GET", "/api/stats").get_json()["amount_mismatches"] == 1
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'payhooks_payment_amount_mismatches_total{provider="stripe"} 1.0' in metrics


@pytest.mark.parametrize(
    ("policy", "balance", "shortfall"),
    [(ClawbackPolicy.ALLOW_NEGATIVE, -60, 0), (ClawbackPolicy.FLOOR_AT_ZERO, 0, 60)],
)
def test_a_refund_after_spending_follows_the_clawback_policy(database, settings, policy, balance, shortfall):
    rules = Rules(clawback_policy=policy)
    deliver_direct(database, completed("policy_user", 100, 1000, "pi_policy"), rules)
    tracker = PaymentTracker(UnitOfWork(database, settings.rules()), settings)
    tracker.spend("policy_user", 60, idempotency_key="spend-1")

    deliver_direct(database, event("charge.refunded", charge("pi_policy", amount=1000, amount_refunded=1000)), rules)

    assert tracker.balance("policy_user")["balance"] == balance
    with database.transaction() as session:
        clawback = session.query(CreditLedger).filter_by(user_id="policy_user", kind="clawback").one()
        assert (clawback.amount, clawback.shortfall) == (-(100 - shortfall), shortfall)
    ledger = tracker.ledger("policy_user")
    assert sum(e["amount"] for e in ledger["entries"]) == balance  # balance = Σ ledger under either policy


# -- the Python API --------------------------------------------------------------------------


def test_tracker_without_http(database, settings):
    tracker = PaymentTracker(UnitOfWork(database, settings.rules()), settings)
    payment, created = tracker.create_pending_payment(user_id="py_user", amount_cents=500, currency="eur", credits=40, session_id="cs_py")
    assert created and payment["status"] == "pending"
    assert tracker.is_duplicate("cs_py") is False
    with pytest.raises(ConflictError):
        tracker.create_pending_payment(user_id="someone_else", amount_cents=500, currency="eur", credits=40, session_id="cs_py")

    deliver_direct(database, event("checkout.session.completed", checkout_session(session_id="cs_py", user_id=None, credits=None, amount_total=500, currency="eur")))

    assert tracker.is_duplicate("cs_py") is True
    found = tracker.get_by_session_id("cs_py")
    assert (found["status"], found["net_credits"]) == ("completed", 40)
    assert [h["to"] for h in found["history"]] == ["completed"]
    assert tracker.balance("py_user")["balance"] == 40
    assert tracker.history("py_user", status="completed")["total_count"] == 1
    stats = tracker.stats("py_user")
    assert (stats["credits_purchased"], stats["amount_spent_cents"], stats["payments_by_status"]["completed"]) == (40, {"eur": 500}, 1)
    with pytest.raises(NotFoundError):
        tracker.get_by_session_id("cs_nope")


# -- the story a new user tries --------------------------------------------------------------


def test_pending_then_completion_partial_refund_and_lost_dispute(client, worker, database):
    """Create a pending payment, deliver completion, a partial refund, a lost dispute; read it all back."""
    created = api(client, "POST", "/api/payments", json=pending(user_id="story", session_id="cs_story", credits=100, amount_cents=2000))
    payment_id = created.get_json()["id"]
    session_obj = checkout_session(session_id="cs_story", user_id=None, credits=None, amount_total=2000, payment_intent="pi_story")
    events = [
        event("checkout.session.completed", session_obj, created=1_760_000_000),
        event("charge.refunded", charge("pi_story", amount=2000, amount_refunded=500), created=1_760_000_100),
        event("charge.dispute.created", dispute("pi_story", "dp_story", "needs_response", 1500), created=1_760_000_200),
        event("charge.dispute.closed", dispute("pi_story", "dp_story", "lost", 1500), created=1_760_000_300),
    ]
    def applied(count: int) -> bool:
        with database.transaction() as session:
            statuses = [r.status for r in session.query(WebhookEvent).all()]
        return len(statuses) == count and all(s == EventStatus.PROCESSED for s in statuses)

    # One at a time, as they happen: the history then reads in the provider's order.
    # (Delivered all at once they may apply in another order and take another path
    # to the same end state — tests/fault/test_order_independence.py covers that.)
    for n, evt in enumerate(events, start=1):
        body = encode(evt)
        assert client.post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET)).status_code == 200
        wait_until(lambda n=n: applied(n), 30, what=f"event {n} applied")
    payment = api(client, "GET", f"/api/payments/{payment_id}").get_json()
    assert payment["status"] == "refunded"
    assert [(h["from"], h["to"]) for h in payment["history"]] == [
        ("pending", "completed"),
        ("completed", "partially_refunded"),
        ("partially_refunded", "disputed"),
        ("disputed", "refunded"),
    ]
    assert payment["disputes"][0]["status"] == "lost"
    assert payment["net_credits"] == 0
    ledger = api(client, "GET", "/api/users/story/ledger").get_json()
    assert [(e["kind"], e["amount"]) for e in ledger["entries"]] == [("clawback", -75), ("clawback", -25), ("grant", 100)]
    assert api(client, "GET", "/api/users/story/credits").get_json() == {
        "user_id": "story", "balance": 0, "total_purchased": 100, "total_refunded": 100, "frozen": 0
    }
    stats = api(client, "GET", "/api/stats?user_id=story").get_json()
    assert (stats["credits_purchased"], stats["credits_taken_back"]) == (100, 100)
    assert stats["amount_spent_cents"] == {"usd": 2000}
    assert stats["amount_refunded_cents"] == {"usd": 500}
    assert stats["payments_by_status"]["refunded"] == 1


# -- hostile input: 4xx with the error shape, never a 5xx ----------------------------------------

_PENDING = '{"user_id":"u","amount_cents":1,"currency":"usd","credits":1,"session_id":"s_%s"%s}'


def _pending_with(extra: str, n: int) -> bytes:
    return (_PENDING % (n, extra)).encode()


HOSTILE = [
    ("GET", "/api/payments/" + "9" * 30, None),  # beyond BIGINT
    ("GET", "/api/dead-letters/" + "9" * 30, None),
    ("POST", "/api/dead-letters/" + "9" * 30 + "/replay", None),
    ("POST", "/api/dead-letters/" + "9" * 19 + "/discard", b'{"reason":"r"}'),
    ("GET", "/api/payments?page=" + "9" * 30, None),
    ("GET", "/api/payments?page_size=5&page=99999999999999999", None),
    ("GET", "/api/users/a%00b/credits", None),  # NUL, which PostgreSQL text refuses
    ("GET", "/api/users/a%00b/ledger", None),
    ("POST", "/api/users/a%00b/spend", b'{"credits":1,"idempotency_key":"k"}'),
    ("GET", "/api/users/" + "u" * 300 + "/credits", None),
    ("GET", "/api/payments?user_id=a%00b", None),
    ("GET", "/api/stats?user_id=a%00b", None),
    ("GET", "/api/dead-letters?error=a%00b", None),
    ("GET", "/api/dead-letters?type=a%00b", None),
    ("GET", "/api/dead-letters?since=0.5", None),
    ("POST", "/api/payments", _pending_with(',"user_id":"u\\u0000"', 1)),
    ("POST", "/api/payments", b'{"user_id":"u","amount_cents":1e999,"currency":"usd","credits":1,"session_id":"s"}'),
    ("POST", "/api/payments", b'{"user_id":"u","amount_cents":NaN,"currency":"usd","credits":1,"session_id":"s"}'),
    ("POST", "/api/payments", b'{"user_id":"u","amount_cents":' + b"9" * 40 + b',"currency":"usd","credits":1,"session_id":"s"}'),
    ("POST", "/api/payments", _pending_with(',"metadata":{"a":NaN}', 2)),
    ("POST", "/api/payments", _pending_with(',"metadata":{"a":Infinity}', 3)),
    ("POST", "/api/payments", _pending_with(',"metadata":{"a":1e999}', 4)),
    ("POST", "/api/payments", _pending_with(',"metadata":{"a":"\\u0000"}', 5)),
    ("POST", "/api/payments", _pending_with(',"metadata":{"a\\u0000":"x"}', 6)),
    ("POST", "/api/payments", _pending_with(',"metadata":{"a":' + "9" * 400 + "}", 7)),
    ("POST", "/api/payments", _pending_with(',"metadata":{"a":{"b":{"c":1}}}', 8)),
    ("POST", "/api/payments", _pending_with(',"expires_at":0', 9)),
    ("POST", "/api/payments", b"[" * 30000 + b"]" * 30000),  # nesting, inside the size limit
    ("POST", "/api/payments", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("POST", "/api/payments", b"\xff\xfe{}"),  # not UTF-8
    ("POST", "/api/payments", b'{"user_id":"\\ud800","amount_cents":1,"currency":"usd","credits":1,"session_id":"s"}'),
    ("POST", "/api/payments", b"{" + b" " * (70 * 1024) + b"}"),  # over API_MAX_BYTES
    ("POST", "/api/payments/verify", b'{"session_id":"cs_\\u0000"}'),
    ("POST", "/api/users/u/spend", b'{"credits":1,"idempotency_key":"k\\u0000"}'),
    ("POST", "/api/users/u/spend", b'{"credits":1.5,"idempotency_key":"k"}'),
    ("POST", "/api/dead-letters/replay", b'{"error":"\\u0000"}'),
    ("POST", "/api/dead-letters/replay", b'{"dry_run":0}'),
    ("POST", "/api/dead-letters/1/discard", b'{"reason":"\\u00a0\\u00a0"}'),
    ("POST", "/api/checkout", b'{"user_id":"u","package_id":"\\u0000"}'),
]


@pytest.mark.parametrize(("method", "path", "body"), HOSTILE, ids=[f"{m} {p[:40]} {(b or b'')[:40]!r}" for m, p, b in HOSTILE])
def test_hostile_input_is_a_4xx_with_the_error_shape(client, method, path, body):
    response = api(client, method, path, data=body, content_type="application/json")

    assert response.status_code in (400, 404, 413), response.get_data()[:300]
    payload = response.get_json()
    assert isinstance(payload["error"], str) and isinstance(payload["message"], str)
