"""The Stripe fake, driven only through the official SDK, behaves as Stripe's API does."""

from __future__ import annotations

import time

import pytest
import stripe
from stripe._http_client import HTTPClient

from tests.support.fake_stripe import FIXTURES, FakeStripe

TEST_KEY = "sk_test_fake"


@pytest.fixture
def fake():
    with FakeStripe() as running:
        yield running


def sdk(fake: FakeStripe, *, retries: int = 0, api_key: str = TEST_KEY) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key, base_addresses={"api": fake.url}, max_network_retries=retries
    )


@pytest.fixture
def stripe_client(fake):
    return sdk(fake)


@pytest.fixture
def fast_retries(monkeypatch):
    """The SDK sleeps ≥ 0.5 s before each retry and reads no header for it: shrink its base delay."""
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(HTTPClient, "MAX_DELAY", 0.02)


def session_params(**overrides) -> dict:
    params = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 1999,
                    "product_data": {"name": "100 credits"},
                },
                "quantity": 1,
            },
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 250,
                    "product_data": {"name": "Bonus pack"},
                },
                "quantity": 2,
            },
        ],
        "metadata": {"user_id": "user_1", "credits": "100"},
        "client_reference_id": "user_1",
        "success_url": "https://example.com/success",
        "cancel_url": "https://example.com/cancel",
        "payment_intent_data": {"metadata": {"user_id": "user_1"}},
    }
    params.update(overrides)
    return params


def make_events(
    fake: FakeStripe, count: int, *, start: int, event_type: str = "checkout.session.completed"
):
    session = FIXTURES["checkout.session"]
    return [fake.record_event(event_type, session, created=start + i) for i in range(count)]


# -- checkout sessions ---------------------------------------------------------


def test_create_then_retrieve_round_trip(fake, stripe_client):
    before = int(time.time())
    created = stripe_client.v1.checkout.sessions.create(params=session_params())

    assert created.id.startswith("cs_test_")
    assert created.object == "checkout.session"
    assert (created.status, created.payment_status) == ("open", "unpaid")
    assert (created.amount_total, created.amount_subtotal, created.currency) == (2499, 2499, "usd")
    assert created.metadata.to_dict() == {"user_id": "user_1", "credits": "100"}
    assert created.client_reference_id == "user_1"
    assert created.url == f"https://checkout.stripe.com/c/pay/{created.id}"
    assert created.payment_intent is None
    assert before <= created.created <= int(time.time())
    assert created.expires_at - created.created == 24 * 3600
    # Stripe's published shape, key for key.
    assert set(created.to_dict()) == set(FIXTURES["checkout.session"])

    retrieved = stripe_client.v1.checkout.sessions.retrieve(created.id)
    assert retrieved.to_dict() == created.to_dict()
    assert fake.get_session(created.id) == created.to_dict()

    # What went over the wire is Stripe's form encoding, decoded as Stripe reads it.
    post = fake.requests[0]
    assert (post.method, post.path) == ("POST", "/v1/checkout/sessions")
    assert post.params["line_items"][1] == {
        "price_data": {
            "currency": "usd",
            "unit_amount": "250",
            "product_data": {"name": "Bonus pack"},
        },
        "quantity": "2",
    }
    assert post.params["metadata"] == {"user_id": "user_1", "credits": "100"}
    assert post.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert post.idempotency_key  # the SDK sends one on every POST
    assert fake.requests[1][:2] == ("GET", f"/v1/checkout/sessions/{created.id}")


def test_expires_at_is_kept(stripe_client):
    expires_at = int(time.time()) + 3600
    created = stripe_client.v1.checkout.sessions.create(
        params=session_params(expires_at=expires_at)
    )
    assert created.expires_at == expires_at


def test_idempotent_create_returns_the_same_session(fake, stripe_client):
    first = stripe_client.v1.checkout.sessions.create(
        params=session_params(), options={"idempotency_key": "order-42"}
    )
    again = stripe_client.v1.checkout.sessions.create(
        params=session_params(), options={"idempotency_key": "order-42"}
    )
    other = stripe_client.v1.checkout.sessions.create(
        params=session_params(), options={"idempotency_key": "order-43"}
    )

    assert again.id == first.id
    assert again.to_dict() == first.to_dict()
    assert other.id != first.id
    assert set(fake.sessions) == {first.id, other.id}
    assert again.last_response.headers["Idempotent-Replayed"] == "true"

    with pytest.raises(stripe.IdempotencyError):
        stripe_client.v1.checkout.sessions.create(
            params=session_params(client_reference_id="someone_else"),
            options={"idempotency_key": "order-42"},
        )


def test_request_options_in_params_are_unknown_parameters(stripe_client):
    """StripeClient sends whatever is in params= as form fields: options belong in options=."""
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.create(params=session_params(idempotency_key="order-42"))
    assert raised.value.http_status == 400
    assert raised.value.user_message == "Received unknown parameter: idempotency_key"
    assert raised.value.param == "idempotency_key"


def test_invalid_line_items_are_rejected(stripe_client):
    params = session_params()
    del params["line_items"][0]["quantity"]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.create(params=params)
    assert raised.value.param == "line_items[0][quantity]"
    assert raised.value.code == "parameter_missing"


def test_expire(fake, stripe_client):
    created = stripe_client.v1.checkout.sessions.create(params=session_params())

    expired = stripe_client.v1.checkout.sessions.expire(created.id)

    assert expired.id == created.id
    assert expired.status == "expired"
    assert stripe_client.v1.checkout.sessions.retrieve(created.id).status == "expired"
    [event] = fake.events
    assert event["type"] == "checkout.session.expired"
    assert event["data"]["object"]["status"] == "expired"
    assert event["request"]["idempotency_key"] == fake.requests[1].idempotency_key

    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.expire(created.id)
    assert raised.value.http_status == 400


def test_expire_refuses_a_paid_session(fake, stripe_client):
    created = stripe_client.v1.checkout.sessions.create(params=session_params())
    fake.pay(created.id)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.checkout.sessions.expire(created.id)
    assert fake.get_session(created.id)["status"] == "complete"


def test_unknown_session_is_a_404_invalid_request_error(stripe_client):
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.retrieve("cs_test_nope")

    error = raised.value
    assert error.http_status == 404
    assert error.code == "resource_missing"
    assert error.param == "session"
    assert error.user_message == "No such checkout.session: 'cs_test_nope'"
    assert error.request_id.startswith("req_")
    assert error.error.type == "invalid_request_error"


def test_pay_completes_the_session_and_records_the_event(fake, stripe_client):
    created = stripe_client.v1.checkout.sessions.create(params=session_params())

    event = fake.pay(created.id, created=1_700_000_000)

    paid = stripe_client.v1.checkout.sessions.retrieve(created.id)
    assert (paid.status, paid.payment_status) == ("complete", "paid")
    assert paid.payment_intent.startswith("pi_")
    assert event["type"] == "checkout.session.completed"
    assert event["created"] == 1_700_000_000
    assert event["data"]["object"] == paid.to_dict()
    assert set(event) == set(FIXTURES["event"])

    [listed] = stripe_client.v1.events.list().data
    assert listed.to_dict() == event
    assert stripe_client.v1.events.retrieve(event["id"]).to_dict() == event

    intent = stripe_client.v1.checkout.sessions.retrieve(
        created.id, params={"expand": ["payment_intent"]}
    ).payment_intent
    assert (intent.id, intent.status, intent.amount) == (paid.payment_intent, "succeeded", 2499)
    assert intent.metadata.to_dict() == {"user_id": "user_1"}


def test_subscription_checkout_with_a_registered_price(fake, stripe_client):
    fake.add_price("price_monthly", 900, "usd", recurring={"interval": "month"})
    created = stripe_client.v1.checkout.sessions.create(
        params={"mode": "subscription", "line_items": [{"price": "price_monthly", "quantity": 3}]}
    )
    assert (created.amount_total, created.currency) == (2700, "usd")

    event = fake.pay(created.id)
    session = event["data"]["object"]
    assert session["subscription"].startswith("sub_")
    assert session["payment_intent"] is None

    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.create(
            params={"mode": "subscription", "line_items": [{"price": "price_x", "quantity": 1}]}
        )
    assert (raised.value.code, raised.value.param) == ("resource_missing", "line_items[0][price]")


# -- failures and retries --------------------------------------------------------


def test_a_500_without_retries_raises_api_error(fake):
    fake.fail_next(1)
    with pytest.raises(stripe.APIError) as raised:
        sdk(fake, retries=0).v1.checkout.sessions.create(params=session_params())

    assert raised.value.http_status == 500
    assert raised.value.error.type == "api_error"
    assert len(fake.requests) == 1
    assert fake.sessions == {}


def test_a_500_is_retried_with_the_same_idempotency_key(fake, fast_retries):
    fake.fail_next(1)
    created = sdk(fake, retries=2).v1.checkout.sessions.create(params=session_params())

    assert created.status == "open"
    failed, succeeded = fake.requests
    assert (failed.status, succeeded.status) == (500, 200)
    assert failed.idempotency_key == succeeded.idempotency_key
    assert list(fake.sessions) == [created.id]


def test_stripe_should_retry_false_stops_the_sdk_retrying(fake, fast_retries):
    fake.fail_next(1, 503, should_retry=False)
    with pytest.raises(stripe.APIError):
        sdk(fake, retries=2).v1.events.list()
    assert len(fake.requests) == 1


def test_outage_fails_every_request_until_cleared(fake, fast_retries):
    client = sdk(fake, retries=2)
    fake.outage(True)
    with pytest.raises(stripe.APIError):
        client.v1.events.list()
    assert [r.status for r in fake.requests] == [500, 500, 500]

    fake.outage(False)
    assert client.v1.events.list().data == []


def test_without_a_test_secret_key_the_request_is_refused(fake):
    for key in ("sk_live_abcdefghijklmnop", "pk_test_abcdefghijkl", "not-a-key"):
        with pytest.raises(stripe.AuthenticationError) as raised:
            sdk(fake, api_key=key).v1.checkout.sessions.retrieve("cs_test_x")
        assert raised.value.http_status == 401
        assert raised.value.error.type == "invalid_request_error"
        assert raised.value.request_id.startswith("req_")


# -- events ----------------------------------------------------------------------


def test_events_are_listed_newest_first_and_filtered_by_created(fake, stripe_client):
    events = make_events(fake, 5, start=1_700_000_000)

    everything = stripe_client.v1.events.list()
    assert [e.id for e in everything.data] == [e["id"] for e in reversed(events)]
    assert everything.url == "/v1/events"
    assert everything.has_more is False

    recent = stripe_client.v1.events.list(params={"created": {"gte": 1_700_000_003}})
    assert [e.created for e in recent.data] == [1_700_000_004, 1_700_000_003]

    window = stripe_client.v1.events.list(
        params={"created": {"gt": 1_700_000_000, "lt": 1_700_000_004}}
    )
    assert [e.created for e in window.data] == [1_700_000_003, 1_700_000_002, 1_700_000_001]
    assert fake.requests[-1].params["created"] == {"gt": "1700000000", "lt": "1700000004"}


def test_events_are_filtered_by_types(fake, stripe_client):
    session_ids = [
        stripe_client.v1.checkout.sessions.create(params=session_params()).id for _ in range(3)
    ]
    completed = fake.pay(session_ids[0])
    expired = fake.expire_session(session_ids[1])
    fake.add_event(
        {
            **FIXTURES["event"],
            "id": "evt_refund_1",
            "type": "charge.refunded",
            "created": int(time.time()),
        }
    )

    listed = stripe_client.v1.events.list(
        params={"types": ["checkout.session.completed", "checkout.session.expired"]}
    )
    assert {e.id for e in listed.data} == {completed["id"], expired["id"]}
    assert fake.requests[-1].params["types"] == [
        "checkout.session.completed",
        "checkout.session.expired",
    ]

    single = stripe_client.v1.events.list(params={"type": "charge.refunded"})
    assert [e.id for e in single.data] == ["evt_refund_1"]
    wildcard = stripe_client.v1.events.list(params={"type": "checkout.session.*"})
    assert {e.id for e in wildcard.data} == {completed["id"], expired["id"]}


def test_auto_paging_iter_walks_250_events_in_pages_of_100(fake, stripe_client):
    # Bursts of events in the same second, as real traffic has: the cursor must still be exact.
    events = [
        fake.record_event(
            "checkout.session.completed", {"id": f"cs_{i}"}, created=1_700_000_000 + i // 7
        )
        for i in range(250)
    ]
    fake.record_event("checkout.session.completed", {"id": "old"}, created=1_600_000_000)

    walked = list(
        stripe_client.v1.events.list(
            params={
                "limit": 100,
                "created": {"gte": 1_700_000_000},
                "types": ["checkout.session.completed"],
            }
        ).auto_paging_iter()
    )

    assert [e.id for e in walked] == [e["id"] for e in reversed(events)]
    pages = [r for r in fake.requests if r.path == "/v1/events"]
    assert len(pages) == 3
    assert "starting_after" not in pages[0].params
    assert pages[1].params["starting_after"] == walked[99].id
    assert pages[2].params["starting_after"] == walked[199].id
    for page in pages:
        assert page.params["limit"] == "100"
        assert page.params["created"] == {"gte": "1700000000"}


def test_events_recorded_while_paging_do_not_shift_the_cursor(fake, stripe_client):
    make_events(fake, 15, start=1_700_000_000)
    iterator = iter(stripe_client.v1.events.list(params={"limit": 10}).auto_paging_iter())
    first_page = [next(iterator) for _ in range(10)]
    fake.record_event("checkout.session.expired", {"id": "late"})  # newer than everything
    rest = list(iterator)
    assert len(first_page) + len(rest) == 15
    assert len({e.id for e in first_page + rest}) == 15


def test_ending_before_pages_towards_newer_events(fake, stripe_client):
    events = make_events(fake, 5, start=1_700_000_000)  # listed: e4 e3 e2 e1 e0
    page = stripe_client.v1.events.list(params={"ending_before": events[1]["id"], "limit": 2})
    assert [e.id for e in page.data] == [events[3]["id"], events[2]["id"]]
    assert page.has_more is True


def test_list_limits_and_cursors_are_validated(fake, stripe_client):
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.events.list(params={"limit": 101})
    assert raised.value.param == "limit"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.events.list(params={"starting_after": "evt_missing"})
    assert raised.value.code == "resource_missing"
    make_events(fake, 12, start=1_700_000_000)
    assert len(stripe_client.v1.events.list().data) == 10


# -- checkout line items -----------------------------------------------------------


def test_line_items_of_a_created_session_with_expanded_products(fake, stripe_client):
    fake.add_product("prod_pack", "Credit pack", metadata={"credits": "25"})
    fake.add_price("price_pack", 300, "usd", product="prod_pack", metadata={"credits": "30"})
    params = session_params()
    params["line_items"].append({"price": "price_pack", "quantity": 4})
    created = stripe_client.v1.checkout.sessions.create(params=params)

    plain = stripe_client.v1.checkout.sessions.line_items.list(created.id)
    assert plain.url == f"/v1/checkout/sessions/{created.id}/line_items"
    assert [(i.description, i.quantity, i.amount_total) for i in plain.data] == [
        ("100 credits", 1, 1999),
        ("Bonus pack", 2, 500),
        ("Credit pack", 4, 1200),
    ]
    assert sum(i.amount_total for i in plain.data) == created.amount_total == 1999 + 500 + 1200
    pack = plain.data[2]
    assert pack.object == "item" and pack.id.startswith("li_")
    assert (pack.price.id, pack.price.unit_amount, pack.price.product) == (
        "price_pack",
        300,
        "prod_pack",
    )
    assert pack.price.metadata.to_dict() == {"credits": "30"}
    assert set(pack.to_dict()) == set(FIXTURES["item"])
    assert plain.data[0].price.id.startswith("price_")  # price_data makes an inline price
    assert isinstance(plain.data[0].price.product, str)

    expanded = stripe_client.v1.checkout.sessions.line_items.list(
        created.id, params={"expand": ["data.price.product"]}
    )
    product = expanded.data[2].price.product
    assert (product.id, product.name, product.metadata.to_dict()) == (
        "prod_pack",
        "Credit pack",
        {"credits": "25"},
    )
    assert expanded.data[0].price.product.name == "100 credits"
    assert fake.requests[-1].params["expand"] == ["data.price.product"]


def test_line_items_are_paginated(fake, stripe_client):
    for n in range(5):
        fake.add_price(f"price_{n}", 100 + n)
    created = stripe_client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": f"price_{n}", "quantity": 1} for n in range(5)],
        }
    )
    first = stripe_client.v1.checkout.sessions.line_items.list(created.id, params={"limit": 2})
    assert [i.price.id for i in first.data] == ["price_0", "price_1"] and first.has_more
    walked = list(
        stripe_client.v1.checkout.sessions.line_items.list(
            created.id, params={"limit": 2}
        ).auto_paging_iter()
    )
    assert [i.price.id for i in walked] == [f"price_{n}" for n in range(5)]
    pages = [r for r in fake.requests if r.path.endswith("/line_items")]
    assert [p.params.get("starting_after") for p in pages[1:]] == [None, walked[1].id, walked[3].id]
    back = stripe_client.v1.checkout.sessions.line_items.list(
        created.id, params={"ending_before": walked[4].id, "limit": 2}
    )
    assert [i.price.id for i in back.data] == ["price_2", "price_3"] and back.has_more


def test_line_items_refuse_what_stripe_refuses(fake, stripe_client):
    created = stripe_client.v1.checkout.sessions.create(params=session_params())
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.line_items.list(created.id, params={"price": "x"})
    assert (raised.value.http_status, raised.value.param) == (400, "price")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.line_items.list(
            created.id, params={"expand": ["data.taxes"]}
        )
    assert raised.value.param == "expand"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.line_items.list("cs_test_nope")
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.line_items.list(
            created.id, params={"starting_after": "li_nope"}
        )
    assert raised.value.param == "starting_after"


def test_price_data_naming_an_unknown_product_is_refused(fake, stripe_client):
    params = session_params()
    params["line_items"] = [
        {"price_data": {"currency": "usd", "unit_amount": 500, "product": "prod_x"}, "quantity": 1}
    ]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.checkout.sessions.create(params=params)
    assert (raised.value.code, raised.value.param) == (
        "resource_missing",
        "line_items[0][price_data][product]",
    )
    fake.add_product("prod_x", "Existing product")
    created = stripe_client.v1.checkout.sessions.create(params=params)
    [item] = stripe_client.v1.checkout.sessions.line_items.list(created.id).data
    assert (item.description, item.price.product) == ("Existing product", "prod_x")


def test_a_payment_link_session_is_served_with_its_line_items(fake, stripe_client):
    from tests.support import stripe_flows

    flow = stripe_flows.build("payment_link")
    stripe_flows.serve(flow, fake)
    [session_id] = flow.config.line_items

    session = stripe_client.v1.checkout.sessions.retrieve(session_id)
    assert session.metadata.to_dict() == {}
    assert session.client_reference_id == flow.payments[0].user_id
    assert session.payment_link.startswith("plink_")

    items = stripe_client.v1.checkout.sessions.line_items.list(
        session_id, params={"expand": ["data.price.product"]}
    ).data
    assert [i.to_dict(for_json=True) for i in items] == list(flow.config.line_items[session_id])
    unexpanded = stripe_client.v1.checkout.sessions.line_items.list(session_id).data
    assert [i.price.product for i in unexpanded] == [
        i["price"]["product"]["id"] for i in flow.config.line_items[session_id]
    ]


def test_serve_registers_each_session_and_payment_intent_as_the_flow_left_it(fake, stripe_client):
    from tests.support import stripe_flows

    flow = stripe_flows.build("async_paid")
    stripe_flows.serve(flow, fake)
    outcome = flow.payments[0]
    session = stripe_client.v1.checkout.sessions.retrieve(outcome.key)
    assert (session.status, session.payment_status) == ("complete", "paid")
    [pi] = outcome.also_known_as
    intent = stripe_client.v1.payment_intents.retrieve(pi)
    assert (intent.status, intent.amount_received) == ("succeeded", outcome.amount_cents)
    assert stripe_client.v1.checkout.sessions.line_items.list(outcome.key).data == []


def test_a_registered_payment_intent_can_be_retrieved(fake, stripe_client):
    from tests.support.stripe_events import payment_intent

    fake.add_payment_intent(
        payment_intent("pi_only_1", "processing", metadata={"user_id": "u", "credits": "5"})
    )
    intent = stripe_client.v1.payment_intents.retrieve("pi_only_1")
    assert (intent.status, intent.metadata.to_dict()) == (
        "processing",
        {"user_id": "u", "credits": "5"},
    )


# -- webhook endpoints ------------------------------------------------------------

ENDPOINT_EVENTS = ["checkout.session.completed", "charge.refunded"]


def create_endpoint(client, **overrides):
    params = {
        "url": "https://payhooks.example/webhooks/stripe",
        "enabled_events": ENDPOINT_EVENTS,
        "api_version": "2025-03-31.basil",
    } | overrides
    return client.v1.webhook_endpoints.create(params=params)


def test_webhook_endpoint_secret_is_returned_only_on_create(fake, stripe_client):
    created = create_endpoint(stripe_client, description="payhooks")

    assert created.id.startswith("we_") and created.secret.startswith("whsec_")
    assert fake.endpoint_secrets[created.id] == created.secret
    assert (created.url, created.api_version, created.status, created.description) == (
        "https://payhooks.example/webhooks/stripe",
        "2025-03-31.basil",
        "enabled",
        "payhooks",
    )
    assert list(created.enabled_events) == ENDPOINT_EVENTS
    assert set(created.to_dict()) == set(FIXTURES["webhook_endpoint"]) | {"secret"}

    retrieved = stripe_client.v1.webhook_endpoints.retrieve(created.id)
    assert "secret" not in retrieved.to_dict()
    [listed] = stripe_client.v1.webhook_endpoints.list().data
    assert "secret" not in listed.to_dict()
    assert listed.to_dict() == retrieved.to_dict()


def test_webhook_endpoint_update_changes_events_url_and_status_but_not_the_api_version(
    fake, stripe_client
):
    created = create_endpoint(stripe_client)
    updated = stripe_client.v1.webhook_endpoints.update(
        created.id,
        params={
            "enabled_events": ["refund.updated", "invoice_payment.paid"],
            "url": "https://new.example/hook",
            "disabled": True,
        },
    )
    assert list(updated.enabled_events) == ["refund.updated", "invoice_payment.paid"]
    assert (updated.url, updated.status, updated.api_version) == (
        "https://new.example/hook",
        "disabled",
        "2025-03-31.basil",
    )
    assert "secret" not in updated.to_dict()
    assert (
        stripe_client.v1.webhook_endpoints.update(created.id, params={"disabled": False}).status
        == "enabled"
    )

    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.webhook_endpoints.update(created.id, params={"api_version": "2024-06-20"})
    assert (raised.value.http_status, raised.value.user_message) == (
        400,
        "Received unknown parameter: api_version",
    )
    assert fake.webhook_endpoints[created.id]["api_version"] == "2025-03-31.basil"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        pytest.param(
            {"enabled_events": ["charge.refunded", "charge.teleported"]},
            "enabled_events[1]",
            id="unknown-event",
        ),
        pytest.param({"api_version": "2025-13-01.nope"}, "api_version", id="unknown-version"),
        pytest.param({"url": "not a url"}, "url", id="bad-url"),
        pytest.param({"url": ""}, "url", id="missing-url"),
        pytest.param({"enabled_events": []}, "enabled_events", id="no-events"),
        pytest.param({"secret": "whsec_mine"}, "secret", id="secret-is-not-a-parameter"),
    ],
)
def test_webhook_endpoint_create_refuses_what_stripe_refuses(fake, stripe_client, params, param):
    with pytest.raises(stripe.InvalidRequestError) as raised:
        create_endpoint(stripe_client, **params)
    assert (raised.value.http_status, raised.value.param) == (400, param)
    assert fake.webhook_endpoints == {}


def test_webhook_endpoints_list_newest_first_in_pages_and_delete(fake, stripe_client):
    made = [
        create_endpoint(stripe_client, url=f"https://h{n}.example/webhooks/stripe").id
        for n in range(5)
    ]
    walked = [
        e.id
        for e in stripe_client.v1.webhook_endpoints.list(params={"limit": 2}).auto_paging_iter()
    ]
    assert walked == list(reversed(made))

    deleted = stripe_client.v1.webhook_endpoints.delete(made[0])
    assert (deleted.id, deleted.deleted) == (made[0], True)
    assert made[0] not in fake.webhook_endpoints and made[0] not in fake.endpoint_secrets
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.webhook_endpoints.retrieve(made[0])
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")


def test_an_account_holds_at_most_16_webhook_endpoints(fake, stripe_client):
    for n in range(16):
        create_endpoint(stripe_client, url=f"https://h{n}.example/hook")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        create_endpoint(stripe_client)
    assert raised.value.http_status == 400
    assert len(fake.webhook_endpoints) == 16
