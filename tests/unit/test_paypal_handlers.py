"""PayPal events -> changes: every handler on PayPal's samples and on built scenarios; parsing; amounts."""

from __future__ import annotations

import datetime as dt
import json

import hypothesis.strategies as st
import pytest
from hypothesis import given

from providers import paypal
from providers.changes import (
    CaptureRequested,
    DisputeClosed,
    DisputeOpened,
    Ignored,
    InvalidEventError,
    PaymentCanceled,
    PaymentFailed,
    PaymentProcessing,
    PaymentRef,
    PaymentSucceeded,
    Purchase,
    RefundChanged,
    Refunded,
)
from tests.support import paypal_events as pe


def translate(event_dict: dict):
    return paypal.translate(paypal.parse_event(pe.encode(event_dict)))


def test_every_handled_type_has_a_published_sample_and_every_sample_a_handler():
    assert set(paypal.HANDLED_TYPES) == {t for t in pe.SAMPLES if not t.startswith("_")}


# -- PayPal's samples, as they are ----------------------------------------------------


def test_sample_capture_completed():
    change = translate(pe.sample("PAYMENT.CAPTURE.COMPLETED"))
    assert change == PaymentSucceeded(
        PaymentRef(session_id="1AB234567A1234567", payment_id="12A34567BC123456S"),
        Purchase(amount_cents=3000, currency="usd", line_items=()),
        paid_amount_cents=3000,
        paid_currency="usd",
    )


def test_sample_capture_pending_finds_its_order_through_the_up_link():
    change = translate(pe.sample("PAYMENT.CAPTURE.PENDING"))
    assert change == PaymentProcessing(
        PaymentRef(session_id="8PR65097T8571330M", payment_id="02T21492PP3782704"),
        Purchase(amount_cents=251, currency="usd", line_items=()),
    )


def test_sample_capture_declined_keeps_another_integrations_custom_id_as_unknown():
    change = translate(
        pe.sample("PAYMENT.CAPTURE.DECLINED")
    )  # custom_id "CUSTOMID-1001", up = an authorization
    assert change == PaymentFailed(
        PaymentRef(session_id="48R416400V564864N", payment_id="7U133281TB3277326"),
        Purchase(amount_cents=18510, currency="usd", line_items=()),
        code="DECLINED",
    )


def test_sample_capture_denied():
    change = translate(pe.sample("PAYMENT.CAPTURE.DENIED"))
    assert isinstance(change, PaymentFailed) and change.code == "DENIED"
    assert change.ref == PaymentRef(session_id="8PR65097T8571330M", payment_id="02T21492PP3782704")


def test_sample_refund_is_cumulative_from_total_refunded_amount():
    change = translate(pe.sample("PAYMENT.CAPTURE.REFUNDED"))  # this refund 0.99, 1.98 in all
    assert change == Refunded(PaymentRef(payment_id="0JF852973C016714D"), refunded_cents=198)


def test_sample_reversal_is_a_refund_of_it_all():
    change = translate(pe.sample("PAYMENT.CAPTURE.REVERSED"))
    assert change == Refunded(PaymentRef(payment_id="4L335234718889942"), refunded_cents=251)


def test_sample_order_approved_asks_for_an_idempotent_capture():
    approval = pe.sample("CHECKOUT.ORDER.APPROVED")
    change = translate(approval)
    assert change == CaptureRequested(
        PaymentRef(session_id="42942721MY574140S"),
        request_id=paypal.capture_request_id("42942721MY574140S", approval["id"]),
        purchase=Purchase(amount_cents=4800, currency="usd", line_items=()),
    )
    assert change.request_id.startswith("payhooks-capture-42942721MY574140S-")
    assert translate(pe.sample("CHECKOUT.ORDER.APPROVED")).request_id == change.request_id  # a redelivery: the same


def test_a_new_approval_of_the_same_order_asks_with_a_new_request_id():
    first, again = (paypal.capture_request_id("ORDER9", approval) for approval in ("WH-1AAA", "WH-2BBB"))
    assert first != again and first == paypal.capture_request_id("ORDER9", "WH-1AAA")
    assert len(again) <= 108  # PayPal-Request-Id's limit


def test_sample_approval_reversed_fails_the_order():
    change = translate(pe.sample("CHECKOUT.PAYMENT-APPROVAL.REVERSED"))
    assert change == PaymentFailed(
        PaymentRef(session_id="5O190127TN364715T"),
        Purchase(line_items=()),
        code="PAYMENT_APPROVAL_REVERSED",
    )


def test_sample_disputes():
    assert translate(pe.sample("CUSTOMER.DISPUTE.CREATED")) == DisputeOpened(
        PaymentRef(payment_id="00D10444LD479031K"),
        dispute_id="PP-000-042-663-135",
        amount_cents=300,
        reason="MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
    )
    assert translate(pe.sample("CUSTOMER.DISPUTE.RESOLVED")) == DisputeClosed(
        PaymentRef(payment_id="00D10444LD479031K"),
        dispute_id="PP-000-042-663-135",
        won=True,  # CANCELED_BY_BUYER
        amount_cents=300,
        reason="MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
    )


# -- scenarios ---------------------------------------------------------------------------


def test_order_approved_carries_the_purchase_from_custom_id():
    approval = pe.event("CHECKOUT.ORDER.APPROVED", pe.order("ORDER1", user_id="u_42", credits=250, amount_cents=1999))
    change = translate(approval)
    assert change == CaptureRequested(
        PaymentRef(session_id="ORDER1"),
        request_id=paypal.capture_request_id("ORDER1", approval["id"]),
        purchase=Purchase(
            user_id="u_42", credits=250, amount_cents=1999, currency="usd", line_items=()
        ),
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("COMPLETED", PaymentSucceeded),
        ("PARTIALLY_REFUNDED", PaymentSucceeded),
        ("PENDING", PaymentProcessing),
        ("DECLINED", PaymentFailed),
    ],
)
def test_an_order_with_its_capture_says_what_the_capture_did(status, expected):
    approved = paypal.parse_event(
        pe.encode(pe.event("CHECKOUT.ORDER.APPROVED", pe.order("ORDER2")))
    )
    captured = pe.order(
        "ORDER2",
        status="COMPLETED",
        captures=[pe.capture("CAP2", order_id="ORDER2", status=status)],
    )
    change = paypal.translate(paypal.with_capture(approved, captured))
    assert type(change) is expected
    assert change.ref == PaymentRef(session_id="ORDER2", payment_id="CAP2")
    assert change.purchase.user_id == "user_1" and change.purchase.credits == 100
    if expected is PaymentSucceeded:
        assert (change.paid_amount_cents, change.paid_currency) == (999, "usd")
    with pytest.raises(ValueError, match="not the approved one"):
        paypal.with_capture(approved, pe.order("ANOTHER"))


def test_order_outcomes_for_recovery():
    assert isinstance(paypal.order_outcome(pe.order("O3", intent="AUTHORIZE")), Ignored)
    assert paypal.order_outcome(pe.order("O3", status="VOIDED")) == PaymentCanceled(
        PaymentRef(session_id="O3"), reason="order voided"
    )
    assert isinstance(paypal.order_outcome(pe.order("O3", status="CREATED")), Ignored)
    assert isinstance(paypal.order_outcome(pe.order("O3", status="APPROVED")), CaptureRequested)


def test_capture_completed_with_our_custom_id_names_buyer_and_credits():
    change = translate(
        pe.event(
            "PAYMENT.CAPTURE.COMPLETED",
            pe.capture(
                "CAP4", order_id="O4", user_id="u_7", credits=500, amount_cents=4999, currency="EUR"
            ),
        )
    )
    assert change == PaymentSucceeded(
        PaymentRef(session_id="O4", payment_id="CAP4"),
        Purchase(user_id="u_7", credits=500, amount_cents=4999, currency="eur", line_items=()),
        paid_amount_cents=4999,
        paid_currency="eur",
    )


def test_capture_without_an_order_is_found_by_its_capture_id():
    change = translate(
        pe.event("PAYMENT.CAPTURE.PENDING", pe.capture("CAP5", status="PENDING", reason="ECHECK"))
    )
    assert change.ref == PaymentRef(payment_id="CAP5")


def test_capture_denied_reason_is_the_code():
    change = translate(
        pe.event(
            "PAYMENT.CAPTURE.DENIED",
            pe.capture("CAP6", order_id="O6", status="DENIED", reason="PENDING_REVIEW"),
        )
    )
    assert isinstance(change, PaymentFailed) and change.code == "PENDING_REVIEW"


def test_refund_without_a_total_is_one_refund_by_its_id():
    change = translate(
        pe.event(
            "PAYMENT.CAPTURE.REFUNDED",
            pe.refund("R1", "CAP7", amount_cents=300, total_refunded_cents=None),
        )
    )
    assert change == RefundChanged(
        PaymentRef(payment_id="CAP7"), refund_id="R1", amount_cents=300, status="succeeded"
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [("PENDING", "pending"), ("FAILED", "failed"), ("CANCELLED", "canceled")],
)
def test_a_refund_not_completed_is_reported_by_its_id(status, expected):
    change = translate(
        pe.event(
            "PAYMENT.CAPTURE.REFUNDED",
            pe.refund("R2", "CAP8", amount_cents=300, total_refunded_cents=300, status=status),
        )
    )
    assert change == RefundChanged(
        PaymentRef(payment_id="CAP8"), refund_id="R2", amount_cents=300, status=expected
    )


def test_a_refund_that_names_no_capture_is_invalid():
    resource = pe.refund("R3", "CAP9", amount_cents=100, total_refunded_cents=100)
    resource["links"] = [link for link in resource["links"] if link["rel"] != "up"]
    with pytest.raises(InvalidEventError, match="names no capture"):
        translate(pe.event("PAYMENT.CAPTURE.REFUNDED", resource))
    resource["supplementary_data"] = {"related_ids": {"capture_id": "CAP9"}}
    assert translate(pe.event("PAYMENT.CAPTURE.REFUNDED", resource)).ref == PaymentRef(
        payment_id="CAP9"
    )


def test_jpy_refund_amounts_have_no_minor_unit():
    change = translate(
        pe.event(
            "PAYMENT.CAPTURE.REFUNDED",
            pe.refund("R4", "CAP10", amount_cents=500, total_refunded_cents=1500, currency="JPY"),
        )
    )
    assert change == Refunded(PaymentRef(payment_id="CAP10"), refunded_cents=1500)


@pytest.mark.parametrize(
    ("outcome", "won"),
    [
        ("RESOLVED_BUYER_FAVOUR", False),
        ("ACCEPTED", False),
        ("RESOLVED_SELLER_FAVOUR", True),
        ("CANCELED_BY_BUYER", True),
        ("DENIED", True),
        ("RESOLVED_WITH_PAYOUT", True),
    ],
)
def test_dispute_outcomes(outcome, won):
    change = translate(
        pe.event(
            "CUSTOMER.DISPUTE.RESOLVED",
            pe.dispute("PP-D-1", "CAP11", outcome=outcome, amount_cents=999),
        )
    )
    assert change == DisputeClosed(
        PaymentRef(payment_id="CAP11"),
        dispute_id="PP-D-1",
        won=won,
        amount_cents=999,
        reason="MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
    )


@pytest.mark.parametrize("outcome", ["NONE", "SOMETHING_NEW", None])
def test_a_dispute_resolved_without_a_known_outcome_is_ignored(outcome):
    resource = pe.dispute("PP-D-2", "CAP12", outcome="NONE")
    resource["dispute_outcome"] = {"outcome_code": outcome} if outcome else {}
    assert isinstance(translate(pe.event("CUSTOMER.DISPUTE.RESOLVED", resource)), Ignored)


def test_a_dispute_without_a_seller_transaction_is_invalid():
    resource = pe.dispute("PP-D-3", "CAP13")
    resource["disputed_transactions"] = [{"buyer_transaction_id": "1BX"}]
    with pytest.raises(InvalidEventError, match="seller_transaction_id"):
        translate(pe.event("CUSTOMER.DISPUTE.CREATED", resource))


def test_unhandled_types_are_ignored():
    envelope = pe.event("CHECKOUT.ORDER.APPROVED", pe.order("O14"))
    envelope["event_type"] = "CHECKOUT.ORDER.COMPLETED"
    assert translate(envelope) == Ignored("CHECKOUT.ORDER.COMPLETED is not handled")


# -- custom_id -----------------------------------------------------------------------------


def test_custom_id_round_trips_and_fits_paypals_limit():
    encoded = paypal.encode_custom_id(user_id="user_ü/1", credits=100, package_id="starter")
    assert len(encoded) <= 127
    assert paypal.decode_custom_id(encoded) == Purchase(
        user_id="user_ü/1", credits=100, package_id="starter"
    )
    with pytest.raises(ValueError, match="at most 127"):
        paypal.encode_custom_id(user_id="u" * 120, credits=1)
    with pytest.raises(ValueError):
        paypal.encode_custom_id(user_id="u", credits=0)


@pytest.mark.parametrize(
    "custom_id",
    [
        '{"user_id":"u","credits":"zq7.c4n4ry@example.com"}',
        '{"user_id":"u","credits":0}',
        '{"user_id":7,"credits":1}',
        "{zq7.c4n4ry",
        '{"user_id":"zq7.c4n4ry","credits":1.5}',
    ],
)
def test_a_broken_custom_id_of_ours_is_invalid_and_never_echoed(custom_id):
    with pytest.raises(InvalidEventError) as caught:
        translate(
            pe.event(
                "PAYMENT.CAPTURE.COMPLETED",
                {**pe.capture("CAP15", order_id="O15"), "custom_id": custom_id},
            )
        )
    assert "c4n4ry" not in str(caught.value)
    assert "custom_id" in str(caught.value)


# -- parsing ------------------------------------------------------------------------------


def test_parse_event_reads_the_envelope():
    envelope = pe.event(
        "PAYMENT.CAPTURE.COMPLETED",
        pe.capture("CAP16"),
        event_id="WH-1",
        create_time="2024-08-02T19:33:35.123Z",
    )
    event = paypal.parse_event(pe.encode(envelope))
    assert (event.provider, event.id, event.type) == ("paypal", "WH-1", "PAYMENT.CAPTURE.COMPLETED")
    assert event.created == dt.datetime(2024, 8, 2, 19, 33, 35, 123000, tzinfo=dt.UTC)
    assert event.data["object"]["id"] == "CAP16" and event.data["resource_type"] == "capture"
    assert event.raw == pe.encode(envelope).decode()


def test_an_impossible_create_time_is_unknown_not_fatal():
    envelope = pe.event(
        "PAYMENT.CAPTURE.COMPLETED", pe.capture("CAP17"), create_time="2018-19-12T22:20:32.000Z"
    )
    assert paypal.parse_event(pe.encode(envelope)).created is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"event_type":"X","resource":{}}', "no string id"),
        (b'{"id":"WH-1","resource":{}}', "no string event_type"),
        (b'{"id":"WH-1","event_type":"X"}', "no resource"),
        (b'{"id":"WH-1","event_type":"X","resource":{},"create_time":5}', "create_time"),
    ],
)
def test_parse_event_refuses_what_is_not_a_paypal_event(body, message):
    with pytest.raises(InvalidEventError, match=message):
        paypal.parse_event(body)


# -- amounts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        ("10.00", "USD", 1000),
        ("10.5", "USD", 1050),
        ("0.01", "EUR", 1),
        ("1500", "JPY", 1500),
        ("1500", "HUF", 150000),  # PayPal: whole forints; ISO 4217 (and payhooks): two decimals
        ("1500", "TWD", 150000),
        ("1.234", "KWD", 1234),
        ("12345678901234567890.12", "USD", 1234567890123456789012),
    ],
)
def test_decimal_strings_convert_exactly(value, currency, minor):
    assert paypal.to_minor_units(value, currency) == minor


@pytest.mark.parametrize(
    ("value", "currency"),
    [
        ("10.001", "USD"),
        ("1500.5", "JPY"),
        ("1.2345", "KWD"),
        ("-1.00", "USD"),
        ("1e3", "USD"),
        ("1,00", "EUR"),
        (" 1", "USD"),
        ("", "USD"),
        (10, "USD"),
    ],
)
def test_amounts_that_are_not_exact_in_the_currency_are_refused(value, currency):
    with pytest.raises(ValueError):
        paypal.to_minor_units(value, currency)


@pytest.mark.parametrize(
    ("minor", "currency", "value"),
    [
        (1050, "USD", "10.50"),
        (1, "EUR", "0.01"),
        (1500, "JPY", "1500"),
        (150000, "HUF", "1500"),
        (150000, "TWD", "1500"),
        (1234, "KWD", "1.234"),
    ],
)
def test_amounts_sent_to_paypal(minor, currency, value):
    assert paypal.to_paypal_value(minor, currency) == value


def test_paypal_takes_no_fraction_of_a_forint_or_a_taiwan_dollar():
    for currency in ("HUF", "TWD"):
        with pytest.raises(ValueError, match="whole units"):
            paypal.to_paypal_value(150050, currency)


@given(
    st.integers(min_value=0, max_value=10**15),
    st.sampled_from(["USD", "EUR", "GBP", "JPY", "KWD", "CAD", "CHF"]),
)
def test_minor_units_round_trip(minor, currency):
    assert paypal.to_minor_units(paypal.to_paypal_value(minor, currency), currency) == minor


def test_an_amount_in_an_event_that_is_not_exact_is_invalid_and_never_echoed():
    resource = pe.capture("CAP18", order_id="O18")
    resource["amount"] = {"currency_code": "JPY", "value": "99.5"}
    with pytest.raises(InvalidEventError, match="capture.amount") as caught:
        translate(pe.event("PAYMENT.CAPTURE.COMPLETED", resource))
    assert "99.5" not in str(caught.value)


def test_samples_are_json_with_their_sources_noted():
    assert json.loads((pe.FIXTURES_DIR / "events.json").read_text())["_sources"]


def test_readme_lists_exactly_the_paypal_event_types_handled():
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(r"<!-- paypal-event-types:start -->(.*?)<!-- paypal-event-types:end -->", readme, re.S)
    assert block, "README lost its list of PayPal event types"
    listed = re.findall(r"`([A-Z][A-Z_.-]+)`", block.group(1))
    assert sorted(listed) == sorted(paypal.HANDLED_TYPES), "update README's list of PayPal event types"


class _CaptureAPI:
    """What application/lookups.py hands paypal.look_up: capture_order and get_order."""

    def __init__(self, *, captured: dict | None = None, order: dict | None = None, refuse: bool = False) -> None:
        self.captured, self.order, self.refuse, self.calls = captured, order, refuse, []

    def capture_order(self, order_id, *, request_id):
        self.calls.append(("capture", order_id, request_id))
        if self.refuse:
            from providers.errors import ProviderRequestError

            raise ProviderRequestError("PayPal refused the capture (422): UNPROCESSABLE_ENTITY, ORDER_NOT_APPROVED")
        return self.captured

    def get_order(self, order_id):
        self.calls.append(("get", order_id))
        return self.order


def test_look_up_captures_with_the_order_s_own_request_id():
    order = pe.order("ORDLOOKUP0000001", status="COMPLETED", captures=[pe.capture("CAPLOOKUP0000001")])
    api = _CaptureAPI(captured=order)
    assert paypal.look_up(api, "ORDLOOKUP0000001") is order
    assert api.calls == [("capture", "ORDLOOKUP0000001", paypal.capture_request_id("ORDLOOKUP0000001"))]
    approval = paypal.parse_event(pe.encode(pe.event("CHECKOUT.ORDER.APPROVED", pe.order("ORDLOOKUP0000001"))))
    assert isinstance(paypal.translate(paypal.with_lookup(approval, order)), PaymentSucceeded)


def test_look_up_reads_a_refused_order_and_applies_what_it_says():
    voided = pe.order("ORDLOOKUP0000002", status="VOIDED")
    api = _CaptureAPI(order=voided, refuse=True)
    assert paypal.look_up(api, "ORDLOOKUP0000002") is voided
    assert [call[0] for call in api.calls] == ["capture", "get"]


def test_look_up_of_an_order_with_no_capture_yet_is_refused_not_looped():
    from providers.errors import ProviderRequestError

    api = _CaptureAPI(order=pe.order("ORDLOOKUP0000003", status="APPROVED"), refuse=True)
    with pytest.raises(ProviderRequestError, match="no capture"):
        paypal.look_up(api, "ORDLOOKUP0000003")
def test_an_approved_orders_payer_address_is_carried_for_receipts_but_never_shown():
    from providers import paypal as paypal_provider
    from tests.support import canaries

    order = {"id": "ORDER1", "intent": "CAPTURE", "status": "APPROVED", "payer": {"email_address": canaries.EMAIL},
             "purchase_units": [{"amount": {"currency_code": "USD", "value": "48.00"},
                                 "payments": {"captures": [{"id": "CAP1", "status": "COMPLETED",
                                                            "amount": {"currency_code": "USD", "value": "48.00"}}]}}]}
    change = paypal_provider.order_outcome(order)
    assert change.purchase.email == canaries.EMAIL and "c4n4ry" not in repr(change)
