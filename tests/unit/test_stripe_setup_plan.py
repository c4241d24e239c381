"""The plan ``payhooks stripe setup`` makes, and the README's copy of the event-type list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from providers.stripe import API_VERSION, HANDLED_TYPES
from workers.stripe_setup import Step, check_url, plan

URL = "https://payhooks.example/webhooks/stripe"
EVENTS = ("checkout.session.completed", "charge.refunded", "invoice.paid")


def endpoint(
    endpoint_id="we_1", url=URL, events=EVENTS, version=API_VERSION, status="enabled"
) -> dict:
    return {
        "id": endpoint_id,
        "url": url,
        "enabled_events": list(events),
        "api_version": version,
        "status": status,
    }


def test_readme_lists_exactly_the_handled_event_types():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(
        r"<!-- handled-event-types:start -->(.*?)<!-- handled-event-types:end -->", readme, re.S
    )
    assert block, "README lost its list of event types"
    listed = re.findall(r"^- `([a-z_.]+)`$", block.group(1), re.M)
    assert listed == list(HANDLED_TYPES), (
        "update README's list: payhooks stripe setup subscribes to HANDLED_TYPES"
    )


def test_no_endpoint_for_the_url_means_create():
    the_plan = plan(
        [endpoint(url="https://other.example/webhooks/stripe")], URL, EVENTS, API_VERSION
    )
    assert the_plan.steps == (Step("create"),)
    assert the_plan.existing == ()


def test_an_endpoint_with_exactly_the_events_is_left_alone():
    the_plan = plan([endpoint(events=reversed(EVENTS))], URL + "/", EVENTS, API_VERSION)
    assert not the_plan.changes and not the_plan.warnings


def test_missing_extra_and_wildcard_events_and_a_disabled_endpoint_are_updated():
    current = ["*", "checkout.session.completed", "customer.created"]
    the_plan = plan([endpoint(events=current, status="disabled")], URL, EVENTS, API_VERSION)
    assert the_plan.steps == (
        Step(
            "update",
            "we_1",
            add=("charge.refunded", "invoice.paid"),
            remove=("*", "customer.created"),
            enable=True,
        ),
    )


def test_another_api_version_is_a_warning_that_names_recreate():
    the_plan = plan([endpoint(version=None)], URL, EVENTS, API_VERSION)
    assert not the_plan.changes
    [warning] = the_plan.warnings
    assert "account's default API version" in warning and "--recreate" in warning


def test_recreate_creates_then_deletes_every_old_endpoint_unless_kept():
    old = [endpoint("we_1"), endpoint("we_2", url=URL + "/")]
    assert plan(old, URL, EVENTS, API_VERSION, recreate=True).steps == (
        Step("create"),
        Step("delete", "we_1"),
        Step("delete", "we_2"),
    )
    assert plan(old, URL, EVENTS, API_VERSION, recreate=True, keep_old=True).steps == (
        Step("create"),
    )
    assert "2 endpoints point at this URL" in plan(old, URL, EVENTS, API_VERSION).warnings[0]


@pytest.mark.parametrize(
    ("url", "warnings"),
    [
        (URL, []),
        (
            "http://localhost:8000/webhooks/stripe",
            ["Stripe requires HTTPS for live-mode webhook endpoints"],
        ),
        (
            "https://h.example/stripe",
            ["payhooks receives Stripe events at /webhooks/stripe; this URL has another path"],
        ),
    ],
)
def test_url_checks(url, warnings):
    assert check_url(url) == warnings


@pytest.mark.parametrize(
    "url", ["ftp://h.example/webhooks/stripe", "h.example/webhooks/stripe", "https:///x"]
)
def test_urls_that_are_not_http_are_refused(url):
    with pytest.raises(ValueError, match="not an http"):
        check_url(url)
