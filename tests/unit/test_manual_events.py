"""Manual marks as events: their shape, and the provider-neutral changes they translate into. No I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from providers import manual, registry
from providers.changes import (
    InvalidEventError,
    PaymentCanceled,
    PaymentExpired,
    PaymentFailed,
    PaymentRef,
    PaymentSucceeded,
    Purchase,
    RefundChanged,
    Refunded,
)
from tests.support import canaries

NOW = datetime(2026, 11, 29, 22, 0, 0, 123456, tzinfo=UTC)
REF = PaymentRef(session_id="man_1")


def mark(event_type: str, data: dict | None = None, key: str | None = "k1", reason: str | None = canaries.NAME):
    return manual.mark(event_type, "man_1", id=manual.event_id(key), actor="cli:alice", now=NOW, reason=reason, data=data)


def test_a_mark_is_an_event_of_the_manual_provider_with_its_actor_and_reason():
    event = mark(manual.PAID, {"reference": canaries.EMAIL})
    assert registry.get("manual") is manual
    assert (event.provider, event.type, event.created, event.actor, event.reason) == (
        "manual", "payment.paid", NOW, "cli:alice", canaries.NAME
    )
    assert manual.parse_event(event.raw) == event  # a stored body reads back as the same event
    # the caller's key is not in the body, only its digest
    assert event.id == manual.event_id("k1") != manual.event_id("k2") and "k1" not in event.raw


@pytest.mark.parametrize(("event_type", "data", "change"), [
    (manual.PAID, {"reference": "TR-1"}, PaymentSucceeded(REF, Purchase(line_items=()), reference="TR-1")),
    (manual.PAID, {"amount_cents": 900, "currency": "eur"},
     PaymentSucceeded(REF, Purchase(line_items=()), paid_amount_cents=900, paid_currency="eur")),
    (manual.FAILED, None, PaymentFailed(REF, code="manual", message=canaries.NAME)),
    (manual.CANCELLED, None, PaymentCanceled(REF, reason=canaries.NAME)),
    (manual.EXPIRED, None, PaymentExpired(REF)),
    (manual.REFUNDED, {"full": True, "captured_cents": 1000}, Refunded(REF, refunded_cents=1000, captured_cents=1000)),
])
def test_each_mark_translates_into_the_change_a_provider_event_would(event_type, data, change):
    assert manual.translate(mark(event_type, data)) == change


def test_a_partial_refund_is_a_refund_of_its_own_named_by_the_mark():
    event = mark(manual.REFUNDED, {"amount_cents": 250})
    assert manual.translate(event) == RefundChanged(REF, refund_id=event.id, amount_cents=250, status="succeeded")


def test_the_same_request_is_what_was_asked_not_when_by_whom_or_what_was_derived():
    first = mark(manual.REFUNDED, {"full": True, "captured_cents": 1000})
    later = manual.mark(manual.REFUNDED, "man_1", id=first.id, actor="api", now=datetime.now(UTC),
                        reason=canaries.NAME, data={"full": True, "captured_cents": 700})
    assert manual.request_of(first) == manual.request_of(later)
    assert manual.request_of(first) != manual.request_of(mark(manual.REFUNDED, {"amount_cents": 1000}))


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e.pop("actor"), "no string actor"),
    (lambda e: e.update(type="charge.refunded"), "not a manual payment mark"),
    (lambda e: e.update(created="yesterday"), "created"),
    (lambda e: e.update(created="2026-11-29T22:00:00"), "time zone"),
    (lambda e: e.update(data=[]), "data"),
])
def test_an_unreadable_mark_is_an_invalid_event(change, message):
    body = json.loads(mark(manual.PAID).raw)
    change(body)
    with pytest.raises(InvalidEventError, match=message):
        manual.parse_event(json.dumps(body))


@pytest.mark.parametrize("data", [{"amount_cents": 0}, {"amount_cents": "5"}, {"amount_cents": True}])
def test_a_refund_without_a_positive_amount_is_an_invalid_event(data):
    with pytest.raises(InvalidEventError, match="amount_cents"):
        manual.translate(mark(manual.REFUNDED, data))
