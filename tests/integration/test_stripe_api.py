"""providers.stripe_api against the fake Stripe: line items and webhook endpoints as plain dicts."""

from __future__ import annotations

import json

import pytest

from providers.stripe_api import (
    ProviderNotFoundError,
    ProviderRequestError,
    ProviderUnavailableError,
    StripeAPI,
)
from tests.support import stripe_flows
from tests.support.fake_stripe import FakeStripe


@pytest.fixture
def fake():
    with FakeStripe() as running:
        yield running


@pytest.fixture
def api(fake) -> StripeAPI:
    return StripeAPI("sk_test_x", fake.url, max_network_retries=0)


def test_list_line_items_reads_every_page_with_products_expanded(fake, api):
    flow = stripe_flows.build("payment_link")
    stripe_flows.serve(flow, fake)
    [session_id] = flow.config.line_items

    items = api.list_line_items(session_id, page_size=2)

    assert items == list(flow.config.line_items[session_id])
    assert all(type(item) is dict and type(item["price"]["product"]) is dict for item in items)
    json.dumps(items)  # JSON-ready: decimal strings stay strings
    pages = [r for r in fake.requests if r.path.endswith("/line_items")]
    assert len(pages) == 2
    assert all(
        p.params["expand"] == ["data.price.product"] and p.params["limit"] == "2" for p in pages
    )


def test_list_line_items_classifies_errors(fake, api):
    with pytest.raises(ProviderNotFoundError):
        api.list_line_items("cs_test_unknown")
    flow = stripe_flows.build("payment_link")
    stripe_flows.serve(flow, fake)
    fake.outage(True, 503)
    with pytest.raises(ProviderUnavailableError):
        api.list_line_items(next(iter(flow.config.line_items)))


def test_webhook_endpoints_round_trip(fake, api):
    created = api.create_webhook_endpoint(
        url="https://h.example/webhooks/stripe",
        enabled_events=["charge.refunded"],
        api_version="2025-03-31.basil",
        description="payhooks",
    )
    assert created["secret"] == fake.endpoint_secrets[created["id"]]
    assert [e["id"] for e in api.list_webhook_endpoints()] == [created["id"]]
    assert "secret" not in api.list_webhook_endpoints()[0]

    updated = api.update_webhook_endpoint(
        created["id"], enabled_events=["refund.updated"], disabled=True
    )
    assert (updated["enabled_events"], updated["status"]) == (["refund.updated"], "disabled")
    assert api.update_webhook_endpoint(created["id"], disabled=False)["status"] == "enabled"

    assert api.delete_webhook_endpoint(created["id"])["deleted"] is True
    assert api.list_webhook_endpoints() == []
    with pytest.raises(ProviderRequestError):
        api.create_webhook_endpoint(
            url="https://h.example/x",
            enabled_events=["no.such_event"],
            api_version="2025-03-31.basil",
        )


def test_listing_webhook_endpoints_walks_every_page(fake, api):
    for n in range(5):
        api.create_webhook_endpoint(
            url=f"https://h{n}.example/hook",
            enabled_events=["charge.refunded"],
            api_version="2025-03-31.basil",
        )
    listed = api.list_webhook_endpoints(page_size=2)
    assert [e["url"] for e in listed] == [f"https://h{n}.example/hook" for n in reversed(range(5))]
