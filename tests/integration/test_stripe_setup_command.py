"""``payhooks stripe setup`` against the fake Stripe, through the official SDK."""

from __future__ import annotations

import pytest
import stripe
from click.testing import CliRunner

import providers.stripe
from providers.stripe import API_VERSION, HANDLED_TYPES
from tests.support.fake_stripe import FakeStripe
from workers.cli import main

URL = "https://payhooks.example/webhooks/stripe"


@pytest.fixture
def fake():
    with FakeStripe() as running:
        yield running


def setup(fake: FakeStripe, *args: str, env: dict | None = None):
    environment = {"STRIPE_API_KEY": "sk_test_setup", "STRIPE_API_BASE": fake.url} | (env or {})
    return CliRunner().invoke(
        main, ["stripe", "setup", *args], env=environment, catch_exceptions=False
    )


def writes(fake: FakeStripe) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests if r.method != "GET"]


def existing(fake: FakeStripe, **fields) -> str:
    """An endpoint made before (in the Dashboard, or by an older payhooks), through the SDK."""
    client = stripe.StripeClient("sk_test_setup", base_addresses={"api": fake.url})
    params = {
        "url": URL,
        "enabled_events": ["checkout.session.completed"],
        "api_version": API_VERSION,
    } | fields
    endpoint_id = client.v1.webhook_endpoints.create(params=params).id
    fake.requests.clear()
    return endpoint_id


def test_creates_the_endpoint_with_the_handled_types_and_prints_its_secret_once(fake):
    result = setup(fake, "--url", URL)

    assert result.exit_code == 0, result.output
    [endpoint] = fake.webhook_endpoints.values()
    assert endpoint["url"] == URL
    assert endpoint["enabled_events"] == list(HANDLED_TYPES)
    assert endpoint["api_version"] == API_VERSION
    assert endpoint["description"] == "payhooks"
    secret = fake.endpoint_secrets[endpoint["id"]]
    assert f"STRIPE_WEBHOOK_SECRET={secret}" in result.output
    assert result.output.count(secret) == 1
    assert writes(fake) == [("POST", "/v1/webhook_endpoints")]

    again = setup(fake, "--url", URL)
    assert again.exit_code == 0
    assert "up to date" in again.output and secret not in again.output
    assert writes(fake) == [("POST", "/v1/webhook_endpoints")]  # nothing more was written


def test_the_event_types_come_from_handled_types(fake, monkeypatch):
    monkeypatch.setattr(providers.stripe, "HANDLED_TYPES", (*HANDLED_TYPES, "payout.paid"))
    assert setup(fake, "--url", URL).exit_code == 0
    [endpoint] = fake.webhook_endpoints.values()
    assert endpoint["enabled_events"] == [*HANDLED_TYPES, "payout.paid"]


def test_updates_an_existing_endpoint_to_exactly_the_handled_types(fake):
    endpoint_id = existing(fake, enabled_events=["checkout.session.completed", "customer.created"])
    other = existing(fake, url="https://elsewhere.example/hook")
    fake.webhook_endpoints[endpoint_id]["status"] = "disabled"

    result = setup(fake, "--url", URL)

    assert result.exit_code == 0, result.output
    updated = fake.webhook_endpoints[endpoint_id]
    assert sorted(updated["enabled_events"]) == sorted(HANDLED_TYPES)
    assert updated["status"] == "enabled"
    assert f"update {endpoint_id}:" in result.output
    assert "-customer.created" in result.output and "+charge.refunded" in result.output
    assert "+checkout.session.completed" not in result.output
    assert "signing secret is unchanged" in result.output and "--recreate" in result.output
    assert "whsec_" not in result.output
    assert writes(fake) == [("POST", f"/v1/webhook_endpoints/{endpoint_id}")]
    assert fake.webhook_endpoints[other]["enabled_events"] == ["checkout.session.completed"]


def test_a_wildcard_endpoint_is_narrowed_to_the_handled_types(fake):
    endpoint_id = existing(fake, enabled_events=["*"])
    assert setup(fake, "--url", URL + "/").exit_code == 0  # a trailing slash is the same URL
    assert fake.webhook_endpoints[endpoint_id]["enabled_events"] == list(HANDLED_TYPES)


def test_another_api_version_is_reported_and_recreate_replaces_the_endpoint(fake):
    old = existing(fake, api_version="2024-06-20", enabled_events=list(HANDLED_TYPES))

    warned = setup(fake, "--url", URL)
    assert warned.exit_code == 0
    assert f"{old} renders events in 2024-06-20" in warned.output and "--recreate" in warned.output
    assert "up to date" in warned.output
    assert writes(fake) == []

    result = setup(fake, "--url", URL, "--recreate")
    assert result.exit_code == 0, result.output
    [new] = fake.webhook_endpoints.values()
    assert new["id"] != old and new["api_version"] == API_VERSION
    assert f"STRIPE_WEBHOOK_SECRET={fake.endpoint_secrets[new['id']]}" in result.output
    assert f"deleted {old}" in result.output
    assert writes(fake) == [
        ("POST", "/v1/webhook_endpoints"),
        ("DELETE", f"/v1/webhook_endpoints/{old}"),
    ]


def test_recreate_keep_old_leaves_both_until_the_secret_is_deployed(fake):
    old = existing(fake, enabled_events=list(HANDLED_TYPES))
    result = setup(fake, "--url", URL, "--recreate", "--keep-old")
    assert result.exit_code == 0, result.output
    assert len(fake.webhook_endpoints) == 2 and old in fake.webhook_endpoints
    assert f"kept {old}" in result.output and "<new>,<old>" in result.output


def test_dry_run_writes_nothing(fake):
    endpoint_id = existing(fake)
    result = setup(fake, "--url", URL, "--dry-run")
    assert result.exit_code == 0
    assert f"dry run: would update {endpoint_id}: +" in result.output
    assert writes(fake) == []

    empty = FakeStripe().start()
    try:
        result = setup(empty, "--url", URL, "--dry-run", "--recreate")
        assert "dry run: would create an endpoint" in result.output and API_VERSION in result.output
        assert writes(empty) == [] and empty.webhook_endpoints == {}
    finally:
        empty.stop()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["--url", URL], {"STRIPE_API_KEY": ""}, "STRIPE_API_KEY is not set", id="no-key"
        ),
        pytest.param(["--url", "ftp://payhooks.example/x"], {}, "not an http(s) URL", id="bad-url"),
        pytest.param(
            ["--url", URL, "--keep-old"], {}, "--keep-old only makes sense", id="keep-old-alone"
        ),
    ],
)
def test_refusals_exit_non_zero_and_say_why(fake, args, env, message):
    result = setup(fake, *args, env=env)
    assert result.exit_code != 0
    assert message in result.output
    assert fake.webhook_endpoints == {}


def test_stripe_unavailable_is_an_error_not_a_traceback(fake):
    fake.outage(True, 503)
    result = setup(fake, "--url", URL)
    assert result.exit_code == 1
    assert "Stripe answered 503" in result.output


def test_unusual_urls_are_warned_about(fake):
    result = setup(fake, "--url", "http://payhooks.example/hooks")
    assert result.exit_code == 0
    assert "requires HTTPS" in result.output and "/webhooks/stripe" in result.output
