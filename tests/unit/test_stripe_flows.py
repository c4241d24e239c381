"""The flow corpus is well-formed: real event shapes, consistent ids, balanced expectations.

These tests check the corpus itself, not payhooks' handling of it: every event
parses, its object has exactly the fields the installed Stripe SDK (generated
from Stripe's OpenAPI spec) knows for the shape's API version, ids link up,
time never goes backwards, and each expectation adds up.
"""

from __future__ import annotations

import importlib
from collections import Counter
from typing import get_args

import pytest

from providers.changes import InvalidEventError
from providers.stripe import API_VERSION, HANDLED_TYPES, parse_event, translate
from tests.support import stripe_flows as sf
from tests.support.stripe_events import LEGACY_API_VERSION, SHAPES, api_version

# The event types issue 8 adds to HANDLED_TYPES (the lead's list); the corpus may use these.
ISSUE_8_TYPES = frozenset(
    {
        "invoice_payment.paid",
        "payment_intent.succeeded",
        "payment_intent.processing",
        "payment_intent.requires_action",
        "refund.created",
        "refund.updated",
        "refund.failed",
        "charge.refund.updated",
        "radar.early_fraud_warning.created",
        "radar.early_fraud_warning.updated",
    }
)

# Fields the legacy shape has that basil removed, per object (docs/STRIPE_SHAPES.md).
LEGACY_ONLY = {
    "invoice": {
        "payment_intent",
        "charge",
        "paid",
        "paid_out_of_band",
        "subscription",
        "subscription_details",
        "subscription_proration_date",
        "quote",
    },
    "payment_intent": {"invoice"},
    "charge": {"invoice"},
    "subscription": {"current_period_start", "current_period_end"},
}
BASIL_ONLY = {"invoice": {"parent", "amount_overpaid"}}

REQUIRED_FLOWS = {
    "checkout_paid",
    "async_paid",
    "async_failed",
    "expired",
    "failed_then_paid",
    "partial_refunds_then_full",
    "dispute_won",
    "dispute_lost",
    "subscription_renewals",
    "subscription_refunded",
    "subscription_checkout_sepa",
    "tax_discount_full_refund",
    "tax_discount_half_refund",
    "trial_then_paid",
    "payment_link",
    "payment_intent_only",
    "session_intent_first",
    "refund_fails",
    "fraud_warning",
    "fraud_warning_frozen",
    "expired_and_canceled_same_second",
}

ALL = [sf.build(name, shape) for name in sf.FLOWS for shape in SHAPES]


def _id(flow: sf.Flow) -> str:
    return f"{flow.name}-{flow.shape}"


flows = pytest.mark.parametrize("flow", ALL, ids=_id)


def sdk_fields(object_name: str) -> set[str]:
    """Top-level fields of a Stripe object, from the installed SDK's generated class."""
    from stripe._object_classes import OBJECT_CLASSES

    module, name = OBJECT_CLASSES[object_name]
    klass = getattr(importlib.import_module(module), name)
    fields: set[str] = set()
    for base in reversed(klass.__mro__):
        fields.update(k for k in getattr(base, "__annotations__", {}) if not k.startswith("_"))
    return fields


def stripe_event_types() -> set[str]:
    """Every event type a webhook endpoint can subscribe to (the SDK's enabled_events literal)."""
    from stripe.params._webhook_endpoint_create_params import WebhookEndpointCreateParams

    (literal,) = get_args(WebhookEndpointCreateParams.__annotations__["enabled_events"])
    return set(get_args(literal)) - {"*"}


def links(obj: dict) -> set[str]:
    """The ids an object uses to point at other objects of the flow."""
    found = {obj.get("id")}
    for name in (
        "payment_intent",
        "charge",
        "invoice",
        "subscription",
        "latest_charge",
        "latest_invoice",
        "customer",
        "payment_link",
        "client_reference_id",
    ):
        value = obj.get(name)
        found.add(value.get("id") if isinstance(value, dict) else value)
    details = (obj.get("parent") or {}).get("subscription_details") or {}
    found.add(details.get("subscription"))
    found.add((obj.get("payment") or {}).get("payment_intent"))
    found.update((obj.get("metadata") or {}).get(k) for k in ("user_id",))
    return {value for value in found if isinstance(value, str)}


# -- the registry ---------------------------------------------------------------


def test_every_required_flow_is_there():
    assert REQUIRED_FLOWS <= set(sf.FLOWS)
    assert sf.SHAPE_SENSITIVE <= set(sf.FLOWS)


def test_flows_are_deterministic_given_ids():
    for name in sf.FLOWS:
        first = sf.build(name, "basil", sf.Ids("fixed", t0=1_760_000_000))
        again = sf.build(name, "basil", sf.Ids("fixed", t0=1_760_000_000))
        assert first == again, name


def test_shape_sensitive_flows_differ_between_shapes_and_the_others_only_in_api_version():
    for name in sf.FLOWS:
        legacy = sf.build(name, "legacy", sf.Ids("same", t0=1_760_000_000))
        basil = sf.build(name, "basil", sf.Ids("same", t0=1_760_000_000))
        types_differ = [e["type"] for e in legacy.events] != [e["type"] for e in basil.events]
        objects_differ = [e["data"] for e in legacy.events] != [e["data"] for e in basil.events]
        if name in sf.SHAPE_SENSITIVE:
            assert objects_differ, name
        else:
            assert not types_differ, name
        assert {e["api_version"] for e in legacy.events} == {LEGACY_API_VERSION}
        assert {e["api_version"] for e in basil.events} == {API_VERSION}


def test_unknown_shape_is_refused():
    with pytest.raises(ValueError, match="unknown shape"):
        sf.build("checkout_paid", "acacia")


# -- events ---------------------------------------------------------------------------


@flows
def test_every_event_parses_and_translates_without_complaint(flow):
    for body, evt in zip(flow.bodies(), flow.events, strict=True):
        parsed = parse_event(body)
        assert (parsed.id, parsed.type) == (evt["id"], evt["type"])
        assert parsed.created is not None
        try:
            translate(parsed)
        except InvalidEventError as exc:  # a shape our handlers call malformed is a corpus bug
            pytest.fail(f"{evt['type']} of {_id(flow)}: {exc}")


@flows
def test_events_are_in_provider_order_with_unique_ids(flow):
    created = [evt["created"] for evt in flow.events]
    assert created == sorted(created), "created must never go backwards"
    ids = [evt["id"] for evt in flow.events]
    assert len(ids) == len(set(ids))
    assert all(evt["api_version"] == api_version(flow.shape) for evt in flow.events)
    assert all(evt["object"] == "event" and evt["livemode"] is False for evt in flow.events)


def test_event_ids_are_unique_across_the_corpus():
    counts = Counter(evt["id"] for flow in ALL for evt in flow.events)
    assert max(counts.values()) == 1


@flows
def test_event_types_are_real_and_handled_or_added_by_issue_8(flow):
    assert flow.event_types <= stripe_event_types()
    assert flow.event_types <= set(HANDLED_TYPES) | ISSUE_8_TYPES, flow.event_types - set(
        HANDLED_TYPES
    )


@flows
def test_ids_link_up_within_the_flow(flow):
    for evt in flow.events:
        obj = evt["data"]["object"]
        unknown = links(obj) - flow.ids
        assert not unknown, f"{evt['type']} points outside the flow: {unknown}"
    for outcome in flow.payments:
        assert {outcome.key, outcome.user_id, *outcome.also_known_as} <= flow.ids
    assert set(flow.users) <= flow.ids
    assert set(flow.subscriptions) <= flow.ids
    assert set(flow.no_grant) <= flow.ids
    assert set(flow.config.line_items) <= flow.ids
    mentioned = set().union(*(links(evt["data"]["object"]) for evt in flow.events))
    for outcome in flow.payments:
        assert outcome.key in mentioned, f"no event names payment {outcome.key}"


@flows
def test_objects_have_exactly_the_fields_of_their_shape(flow):
    for evt in flow.events:
        obj = evt["data"]["object"]
        known = sdk_fields(obj["object"])
        extra = set(obj) - known
        if flow.shape == "basil":
            assert not extra, f"{obj['object']} has fields basil does not: {extra}"
        else:
            assert extra <= LEGACY_ONLY.get(obj["object"], set()), f"{obj['object']}: {extra}"
            assert not set(obj) & BASIL_ONLY.get(obj["object"], set())


@flows
def test_invoice_payment_link_follows_the_shape(flow):
    invoices = [e["data"]["object"] for e in flow.events if e["type"] == "invoice.paid"]
    links_by_invoice = {
        e["data"]["object"]["invoice"]: e["data"]["object"]["payment"]["payment_intent"]
        for e in flow.events
        if e["type"] == "invoice_payment.paid"
    }
    for inv in invoices:
        if flow.shape == "basil":
            assert "payment_intent" not in inv and "subscription" not in inv
            assert inv["parent"]["subscription_details"]["subscription"]
            assert (inv["id"] in links_by_invoice) == (inv["amount_paid"] > 0)
        else:
            assert "parent" not in inv and inv["subscription"]
            assert bool(inv["payment_intent"]) == (inv["amount_paid"] > 0)
            assert not links_by_invoice
    for outcome in flow.payments:
        if outcome.key.startswith("in_") and outcome.granted and outcome.amount_cents:
            linked = links_by_invoice.get(outcome.key) or next(
                (i.get("payment_intent") for i in invoices if i["id"] == outcome.key), None
            )
            assert linked in outcome.also_known_as


UNPAID_STATE = {
    "payment_intent.processing": "processing",
    "payment_intent.requires_action": "requires_action",
    "payment_intent.payment_failed": "failed",
    "checkout.session.async_payment_failed": "failed",
    "payment_intent.canceled": "cancelled",
    "checkout.session.expired": "expired",
}


def _unpaid_state(evt: dict) -> str | None:
    obj = evt["data"]["object"]
    if evt["type"] == "checkout.session.completed" and obj["payment_status"] == "unpaid":
        return "processing"
    return UNPAID_STATE.get(evt["type"])


def test_only_the_tie_flow_has_conflicting_unpaid_events_in_one_second():
    for flow in ALL:
        states: dict[int, set[str]] = {}
        for evt in flow.events:
            if state := _unpaid_state(evt):
                states.setdefault(evt["created"], set()).add(state)
        conflicts = [second for second, found in states.items() if len(found) > 1]
        tied = flow.name == "expired_and_canceled_same_second"
        assert len(conflicts) == (1 if tied else 0), _id(flow)
        assert max(len(p.statuses) for p in flow.payments) == (2 if tied else 1)


# -- expectations -----------------------------------------------------------------


@flows
def test_expectations_are_balanced(flow):
    assert flow.users, "every flow names the users whose totals it fixes"
    for user_id, user in flow.users.items():
        assert user.balance == user.purchased - user.taken_back - user.spent
        mine = [p for p in flow.payments if p.user_id == user_id]
        assert user.purchased == sum(p.granted for p in mine)
        assert user.taken_back == sum(p.taken_back for p in mine)
        assert user.frozen == sum(p.frozen for p in mine)
        assert 0 <= user.frozen <= user.balance
    for payment in flow.payments:
        assert payment.statuses and payment.statuses <= sf.STATUSES
        assert 0 <= payment.taken_back <= payment.granted
        assert 0 <= payment.frozen <= payment.net
        assert payment.user_id in flow.users
        if payment.granted == 0:
            assert payment.statuses <= {"pending", "processing", "failed", "expired", "cancelled"}
        if "refunded" in payment.statuses:
            assert payment.net == 0


@flows
def test_refund_shares_follow_the_captured_amount(flow):
    charges = [e["data"]["object"] for e in flow.events if e["type"] == "charge.refunded"]
    for payment in flow.payments:
        mine = [c for c in charges if c["payment_intent"] in {payment.key, *payment.also_known_as}]
        if not mine or payment.statuses == {"disputed"}:
            continue
        last = mine[-1]
        assert last["amount_captured"] == payment.amount_cents
        if flow.name.startswith(("refund_fails", "refund_canceled")):
            continue  # a later failure gives back part of what the last charge.refunded took
        share = (
            payment.granted
            * min(last["amount_refunded"], last["amount_captured"])
            // last["amount_captured"]
        )
        assert payment.taken_back == share


def test_subscription_mode_checkout_never_grants():
    for flow in ALL:
        sessions = {
            e["data"]["object"]["id"]
            for e in flow.events
            if e["type"].startswith("checkout.session")
            and e["data"]["object"]["mode"] == "subscription"
        }
        assert sessions <= set(flow.no_grant)
        assert not sessions & {p.key for p in flow.payments}


def test_config_is_what_the_flow_needs():
    link = sf.build("payment_link")
    (items,) = link.config.line_items.values()
    credits = 0
    for item in items:
        price = item["price"]
        per_unit = (
            link.config.catalog.get(price["id"])
            or int(price["metadata"].get("credits", 0))
            or int(price["product"]["metadata"].get("credits", 0))
        )
        assert per_unit, f"line item {item['id']} has no credits source"
        credits += per_unit * item["quantity"]
    assert credits == link.payment(link.payments[0].key).granted
    session = next(
        e["data"]["object"] for e in link.events if e["type"] == "checkout.session.completed"
    )
    assert session["metadata"] == {} and session["client_reference_id"] == link.payments[0].user_id
    assert session["amount_total"] == sum(item["amount_total"] for item in items)

    tax = sf.build("tax_discount_half_refund")
    (recorded,) = tax.config.recorded
    payment = tax.payment(recorded.session_id)
    assert recorded.amount_cents != payment.amount_cents  # the point of the flow
    assert recorded.credits == payment.granted
    assert sf.build("fraud_warning_frozen").config.freeze_on_fraud
    assert not sf.build("fraud_warning").config.freeze_on_fraud
