"""Every handler in providers.stripe.HANDLERS, on events built from Stripe's published fixture shapes.

Each test goes the way the worker goes: encode the event, parse_event, translate,
and compares the whole change returned, not just its type.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta

import pytest

from models.enums import RefundStatus
from providers.changes import (
    ActionRequired,
    DisputeClosed,
    DisputeOpened,
    FraudWarning,
    Ignored,
    InvalidEventError,
    InvoicePaid,
    LineItem,
    PaymentCanceled,
    PaymentExpired,
    PaymentFailed,
    PaymentLinked,
    PaymentProcessing,
    PaymentRef,
    PaymentSucceeded,
    Purchase,
    RefundChanged,
    Refunded,
    SubscriptionChanged,
)
from providers.stripe import HANDLED_TYPES, HANDLERS, REFUND_STATUSES, parse_event, translate
from tests.support import stripe_events
from tests.support.stripe_events import (
    FIXTURES,
    checkout_session,
    encode,
    event,
    stripe_object,
)


# Thin adapters over the shared builders, in the order these tests name things.
def refund(payment_intent, amount: int, status: str = "succeeded", *, refund_id: str | None = None) -> dict:
    return stripe_events.refund("ch_test_0001", payment_intent, amount, status, refund_id=refund_id)


def early_fraud_warning(payment_intent, *, warning_id: str | None = None, actionable: bool = True,
                        fraud_type: str = "made_with_stolen_card") -> dict:
    return stripe_events.early_fraud_warning(
        "ch_test_0001", payment_intent, efw_id=warning_id, actionable=actionable, fraud_type=fraud_type
    )


def invoice_payment(invoice, payment_intent, *, payment_type: str = "payment_intent") -> dict:
    payment = stripe_events.invoice_payment(invoice, payment_intent, 2000)
    if payment_type != "payment_intent":
        payment["payment"] = {"type": payment_type, payment_type: f"{payment_type}_test_0001"}
    return payment


PI = "pi_3QxTestPaymentIntent0001"
SESSION = "cs_test_handlers_0001"
BY_PI = PaymentRef(payment_id=PI)
PERIOD_END = 1_767_225_600  # 2026-01-01T00:00:00Z
PERIOD_END_AT = datetime(2026, 1, 1, tzinfo=UTC)

FIXTURE_DISPUTE_ID = FIXTURES["dispute"]["id"]
FIXTURE_INVOICE_ID = FIXTURES["invoice"]["id"]
FIXTURE_PRICE_ID = FIXTURES["subscription"]["items"]["data"][0]["price"]["id"]
FIXTURE_CUSTOMER_ID = FIXTURES["subscription"]["customer"]
FIXTURE_REFUND_ID = FIXTURES["refund"]["id"]


def translated(event_type: str, obj: dict):
    """translate() an event around one object, through encode and parse_event as the worker does."""
    return translate(parse_event(encode(event(event_type, obj))))


# -- the registry -------------------------------------------------------------------

ALL_TYPES = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
    "charge.dispute.created",
    "charge.dispute.closed",
    "radar.early_fraud_warning.created",
    "radar.early_fraud_warning.updated",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice_payment.paid",
}


def test_handled_types_are_exactly_the_registry_keys():
    assert set(HANDLED_TYPES) == set(HANDLERS)
    assert len(HANDLED_TYPES) == len(set(HANDLED_TYPES)) == len(HANDLERS)


def test_registry_lists_all_twenty_three_types():
    assert set(HANDLERS) == ALL_TYPES
    assert len(HANDLERS) == 23


# -- checkout sessions ----------------------------------------------------------------


def paid_session(**fields) -> dict:
    defaults = {
        "session_id": SESSION,
        "user_id": "user_1",
        "credits": "100",
        "payment_intent": PI,
        "amount_total": 1999,
    }
    return checkout_session(**(defaults | fields))


EXPECTED_REF = PaymentRef(session_id=SESSION, payment_id=PI)
EXPECTED_PURCHASE = Purchase(user_id="user_1", credits=100, amount_cents=1999, currency="usd")


def test_completed_paid_session_is_payment_succeeded():
    assert translated("checkout.session.completed", paid_session()) == PaymentSucceeded(
        EXPECTED_REF, EXPECTED_PURCHASE, paid_amount_cents=1999, paid_currency="usd"
    )


def test_completed_unpaid_session_is_payment_processing():
    session = paid_session(paid=False)
    assert session["payment_status"] == "unpaid"

    assert translated("checkout.session.completed", session) == PaymentProcessing(
        EXPECTED_REF, EXPECTED_PURCHASE
    )


def test_completed_no_payment_required_session_is_payment_succeeded():
    session = paid_session(amount_total=0)
    session["payment_status"] = "no_payment_required"
    session["payment_intent"] = None

    change = translated("checkout.session.completed", session)

    assert change == PaymentSucceeded(
        PaymentRef(session_id=SESSION),
        Purchase(user_id="user_1", credits=100, amount_cents=0, currency="usd"),
        paid_amount_cents=0,
        paid_currency="usd",
    )


def test_package_id_comes_from_metadata():
    session = paid_session()
    session["metadata"]["package_id"] = "pkg_large"

    change = translated("checkout.session.completed", session)

    assert change.purchase.package_id == "pkg_large"


def test_async_payment_succeeded_is_payment_succeeded():
    # Stripe sends this for a session completed earlier as unpaid; the session is now paid.
    session = paid_session()

    assert translated("checkout.session.async_payment_succeeded", session) == PaymentSucceeded(
        EXPECTED_REF, EXPECTED_PURCHASE, 1999, "usd"
    )


def test_async_payment_succeeded_does_not_look_at_payment_status():
    session = paid_session(paid=False)

    change = translated("checkout.session.async_payment_succeeded", session)

    assert change == PaymentSucceeded(EXPECTED_REF, EXPECTED_PURCHASE, 1999, "usd")


def test_expired_session_is_payment_expired():
    session = paid_session(paid=False)
    session["status"] = "expired"
    session["payment_intent"] = None

    change = translated("checkout.session.expired", session)

    assert change == PaymentExpired(PaymentRef(session_id=SESSION), EXPECTED_PURCHASE)


def test_fixture_session_as_published_expires():
    session = stripe_object("checkout.session")

    change = translated("checkout.session.expired", session)

    assert change == PaymentExpired(
        PaymentRef(
            session_id=FIXTURES["checkout.session"]["id"],
            payment_id=FIXTURES["checkout.session"]["payment_intent"],
        ),
        Purchase(),
    )


def test_line_items_listed_by_the_api_are_carried_with_their_credits():
    session = paid_session(credits=None)
    price = copy.deepcopy(FIXTURES["subscription"]["items"]["data"][0]["price"])
    price.update(id="price_pack", metadata={"credits": "50"})
    session["line_items"] = {
        "object": "list",
        "data": [
            {"object": "item", "price": price, "quantity": 3},
            {"object": "item", "price": {"id": "price_plain", "metadata": {}}, "quantity": 2},
        ],
    }

    change = translated("checkout.session.completed", session)

    assert change.purchase.credits is None
    assert change.purchase.line_items == (
        LineItem("price_pack", 3, 50),
        LineItem("price_plain", 2, None),
    )


# -- checkout.session.async_payment_failed -----------------------------------------


def card_error(**fields) -> dict:
    """A last_payment_error as Stripe sends it for a declined card."""
    error = {
        "charge": "ch_3QxTestCharge0001",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "message": "Your card has insufficient funds.",
        "type": "card_error",
    }
    error.update(fields)
    return {key: value for key, value in error.items() if value is not None}


def failed_session(last_payment_error: dict | None) -> dict:
    session = paid_session(paid=False)
    session["payment_intent"] = stripe_object(
        "payment_intent",
        id=PI,
        amount=1999,
        status="requires_payment_method",
        last_payment_error=last_payment_error,
    )
    return session


def test_async_payment_failed_decline_code_wins_over_code():
    change = translated("checkout.session.async_payment_failed", failed_session(card_error()))

    assert change == PaymentFailed(
        EXPECTED_REF, EXPECTED_PURCHASE, "insufficient_funds", "Your card has insufficient funds."
    )


def test_async_payment_failed_without_decline_code_uses_code():
    error = card_error(decline_code=None, code="expired_card", message="Your card has expired.")
    assert "decline_code" not in error

    change = translated("checkout.session.async_payment_failed", failed_session(error))

    assert change == PaymentFailed(
        EXPECTED_REF, EXPECTED_PURCHASE, "expired_card", "Your card has expired."
    )


def test_async_payment_failed_without_error_gives_no_code_or_message():
    change = translated("checkout.session.async_payment_failed", failed_session(None))

    assert change == PaymentFailed(EXPECTED_REF, EXPECTED_PURCHASE, None, None)


def test_async_payment_failed_with_unexpanded_payment_intent_gives_no_code_or_message():
    session = paid_session(paid=False)
    assert session["payment_intent"] == PI

    change = translated("checkout.session.async_payment_failed", session)

    assert change == PaymentFailed(EXPECTED_REF, EXPECTED_PURCHASE, None, None)


def test_async_payment_failed_falls_back_to_error_type_without_any_code():
    # The fixture's payment_intent carries last_payment_error {"type": "idempotency_error"} only.
    session = paid_session(paid=False)
    session["payment_intent"] = stripe_object("payment_intent", id=PI)
    assert session["payment_intent"]["last_payment_error"] == {"type": "idempotency_error"}

    change = translated("checkout.session.async_payment_failed", session)

    assert change == PaymentFailed(EXPECTED_REF, EXPECTED_PURCHASE, "idempotency_error", None)


# -- payment intents ----------------------------------------------------------------


def test_payment_intent_payment_failed_is_payment_failed():
    intent = stripe_object(
        "payment_intent",
        id=PI,
        amount=1999,
        status="requires_payment_method",
        last_payment_error=card_error(
            decline_code="generic_decline", message="Your card was declined."
        ),
    )

    change = translated("payment_intent.payment_failed", intent)

    assert change == PaymentFailed(BY_PI, Purchase(), "generic_decline", "Your card was declined.")


def test_payment_intent_payment_failed_without_decline_code_uses_code():
    intent = stripe_object(
        "payment_intent",
        id=PI,
        last_payment_error=card_error(
            decline_code=None,
            code="incorrect_cvc",
            message="Your card's security code is incorrect.",
        ),
    )

    change = translated("payment_intent.payment_failed", intent)

    assert change == PaymentFailed(
        BY_PI, Purchase(), "incorrect_cvc", "Your card's security code is incorrect."
    )


def test_payment_intent_payment_failed_without_error():
    intent = stripe_object("payment_intent", id=PI, last_payment_error=None)

    assert translated("payment_intent.payment_failed", intent) == PaymentFailed(BY_PI)


PAYMENT_INTENT_TYPES = [
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
]


@pytest.mark.parametrize("event_type", PAYMENT_INTENT_TYPES)
@pytest.mark.parametrize("intent_id", [None, "", 42])
def test_payment_intent_without_id_is_an_invalid_event(event_type, intent_id):
    intent = stripe_object("payment_intent", id=intent_id, last_payment_error=card_error())

    with pytest.raises(InvalidEventError, match="payment intent has no id"):
        translated(event_type, intent)


@pytest.mark.parametrize("reason", ["abandoned", "requested_by_customer", "duplicate", "automatic"])
def test_payment_intent_canceled_carries_its_reason(reason):
    intent = stripe_object("payment_intent", id=PI, status="canceled", cancellation_reason=reason)

    assert translated("payment_intent.canceled", intent) == PaymentCanceled(BY_PI, reason)


def test_fixture_payment_intent_canceled_without_reason():
    intent = stripe_object("payment_intent", status="canceled")
    assert intent["cancellation_reason"] is None

    change = translated("payment_intent.canceled", intent)

    assert change == PaymentCanceled(PaymentRef(payment_id=FIXTURES["payment_intent"]["id"]), None)


# -- charge.refunded ------------------------------------------------------------------


def refunded_charge(**fields) -> dict:
    defaults = {
        "payment_intent": PI,
        "amount": 1000,
        "amount_captured": 1000,
        "amount_refunded": 250,
        "captured": True,
        "refunded": False,
    }
    return stripe_object("charge", **(defaults | fields))


def test_partial_refund_is_refunded_with_cumulative_amount():
    assert translated("charge.refunded", refunded_charge()) == Refunded(BY_PI, 250, 1000)


def test_full_refund():
    charge = refunded_charge(amount_refunded=1000, refunded=True)

    assert translated("charge.refunded", charge) == Refunded(BY_PI, 1000, 1000)


def test_refund_larger_than_the_charge_is_capped_at_the_amount():
    charge = refunded_charge(amount_refunded=1500)

    assert translated("charge.refunded", charge) == Refunded(BY_PI, 1000, 1000)


def test_refund_with_expanded_payment_intent():
    charge = refunded_charge(
        payment_intent=stripe_object("payment_intent", id="pi_expanded_refund")
    )

    assert translated("charge.refunded", charge) == Refunded(
        PaymentRef(payment_id="pi_expanded_refund"), 250, 1000
    )


def test_fixture_charge_without_payment_intent_is_an_invalid_event():
    charge = stripe_object("charge", amount_refunded=100)
    assert charge["payment_intent"] is None

    with pytest.raises(InvalidEventError, match="payment_intent"):
        translated("charge.refunded", charge)


@pytest.mark.parametrize("amount_refunded", ["250", 2.5, -1, True, [250]], ids=repr)
def test_non_integer_amount_refunded_is_an_invalid_event(amount_refunded):
    with pytest.raises(InvalidEventError, match="amount_refunded"):
        translated("charge.refunded", refunded_charge(amount_refunded=amount_refunded))


@pytest.mark.parametrize("amount", ["1000", 10.0, -1], ids=repr)
def test_non_integer_charge_amount_is_an_invalid_event(amount):
    with pytest.raises(InvalidEventError, match=r"charge\.amount"):
        translated("charge.refunded", refunded_charge(amount=amount))


@pytest.mark.parametrize("field", ["amount", "amount_refunded"])
def test_refund_missing_an_amount_is_an_invalid_event(field):
    charge = refunded_charge()
    charge[field] = None

    with pytest.raises(InvalidEventError, match="needs amount and amount_refunded"):
        translated("charge.refunded", charge)


# -- disputes -------------------------------------------------------------------------


def dispute(**fields) -> dict:
    return stripe_object("dispute", **({"payment_intent": PI} | fields))


def test_dispute_created_is_dispute_opened():
    change = translated("charge.dispute.created", dispute(reason="fraudulent"))

    assert change == DisputeOpened(
        BY_PI, dispute_id=FIXTURE_DISPUTE_ID, amount_cents=1000, reason="fraudulent"
    )


def test_fixture_dispute_opened_with_its_reason():
    change = translated("charge.dispute.created", dispute())

    assert change == DisputeOpened(BY_PI, FIXTURE_DISPUTE_ID, 1000, "general")


def test_dispute_with_expanded_payment_intent():
    change = translated(
        "charge.dispute.created",
        dispute(payment_intent=stripe_object("payment_intent", id="pi_exp")),
    )

    assert change.ref == PaymentRef(payment_id="pi_exp")


def test_dispute_without_payment_intent_is_an_invalid_event():
    with pytest.raises(InvalidEventError, match="payment_intent"):
        translated("charge.dispute.created", stripe_object("dispute"))


def test_dispute_without_id_is_an_invalid_event():
    with pytest.raises(InvalidEventError, match="dispute has no id"):
        translated("charge.dispute.created", dispute(id=None))


@pytest.mark.parametrize(("status", "won"), [("won", True), ("lost", False)])
def test_dispute_closed_won_or_lost(status, won):
    change = translated(
        "charge.dispute.closed", dispute(status=status, amount=700, reason="product_not_received")
    )

    assert change == DisputeClosed(
        BY_PI,
        dispute_id=FIXTURE_DISPUTE_ID,
        won=won,
        amount_cents=700,
        reason="product_not_received",
    )


@pytest.mark.parametrize(
    "status", ["warning_closed", "warning_needs_response", "under_review", None]
)
def test_dispute_closed_without_a_verdict_is_ignored(status):
    change = translated("charge.dispute.closed", dispute(status=status))

    # the reason is a fixed sentence now: it no longer quotes the event's status
    assert change == Ignored("dispute closed without a won or lost outcome: nothing to take back")


# -- subscriptions ------------------------------------------------------------------


def subscription(**fields) -> dict:
    sub = stripe_object(
        "subscription",
        **(
            {
                "id": "sub_test_0001",
                "status": "active",
                "customer": "cus_test_0001",
                "metadata": {"user_id": "user_9", "credits": "300"},
            }
            | fields
        ),
    )
    sub["items"]["data"][0]["current_period_end"] = PERIOD_END
    return sub


@pytest.mark.parametrize(
    "event_type", ["customer.subscription.created", "customer.subscription.updated"]
)
def test_subscription_created_or_updated(event_type):
    change = translated(event_type, subscription())

    assert change == SubscriptionChanged(
        subscription_id="sub_test_0001",
        status="active",
        customer_id="cus_test_0001",
        user_id="user_9",
        price_id=FIXTURE_PRICE_ID,
        credits=300,
        current_period_end=PERIOD_END_AT,
    )
    assert change.current_period_end.utcoffset() == timedelta(0)


@pytest.mark.parametrize("status", ["trialing", "past_due", "incomplete", "unpaid", "paused"])
def test_subscription_status_is_passed_through(status):
    assert translated("customer.subscription.updated", subscription(status=status)).status == status


def test_subscription_without_status_is_unknown():
    assert (
        translated("customer.subscription.updated", subscription(status=None)).status == "unknown"
    )


@pytest.mark.parametrize("status", ["canceled", "active"])
def test_subscription_deleted_is_canceled_whatever_its_status(status):
    change = translated("customer.subscription.deleted", subscription(status=status))

    assert change == SubscriptionChanged(
        subscription_id="sub_test_0001",
        status="canceled",
        customer_id="cus_test_0001",
        user_id="user_9",
        price_id=FIXTURE_PRICE_ID,
        credits=300,
        current_period_end=PERIOD_END_AT,
    )


def test_subscription_credits_fall_back_to_the_price_metadata():
    sub = subscription(metadata={"user_id": "user_9"})
    sub["items"]["data"][0]["price"]["metadata"] = {"credits": "250"}

    change = translated("customer.subscription.updated", sub)

    assert change.credits == 250
    assert change.user_id == "user_9"


def test_subscription_metadata_credits_win_over_the_price_metadata():
    sub = subscription()
    sub["items"]["data"][0]["price"]["metadata"] = {"credits": "250"}

    assert translated("customer.subscription.updated", sub).credits == 300


def test_fixture_subscription_as_published():
    sub = stripe_object("subscription")

    change = translated("customer.subscription.created", sub)

    assert change == SubscriptionChanged(
        subscription_id=FIXTURES["subscription"]["id"],
        status="active",
        customer_id=FIXTURE_CUSTOMER_ID,
        user_id=None,
        price_id=FIXTURE_PRICE_ID,
        credits=None,
        current_period_end=datetime.fromtimestamp(
            FIXTURES["subscription"]["items"]["data"][0]["current_period_end"], UTC
        ),
    )


def test_subscription_with_expanded_customer():
    sub = subscription(customer=stripe_object("customer"))

    assert (
        translated("customer.subscription.updated", sub).customer_id == FIXTURES["customer"]["id"]
    )


def test_subscription_legacy_top_level_current_period_end():
    # API versions before 2025-03-31 carried current_period_end on the subscription itself.
    sub = subscription(current_period_end=PERIOD_END)
    del sub["items"]["data"][0]["current_period_end"]

    assert translated("customer.subscription.updated", sub).current_period_end == PERIOD_END_AT


def test_subscription_without_items_has_no_price_or_period():
    sub = subscription()
    sub["items"]["data"] = []

    change = translated("customer.subscription.updated", sub)

    assert change.price_id is None
    assert change.current_period_end is None
    assert change.credits == 300


@pytest.mark.parametrize("sub_id", [None, "", 7])
def test_subscription_without_id_is_an_invalid_event(sub_id):
    with pytest.raises(InvalidEventError, match="subscription has no id"):
        translated("customer.subscription.updated", subscription(id=sub_id))


@pytest.mark.parametrize("credits", ["ten", "0", "-3", "1.5", True, ""], ids=repr)
def test_subscription_with_bad_metadata_credits_is_an_invalid_event(credits):
    sub = subscription(metadata={"user_id": "user_9", "credits": credits})

    with pytest.raises(InvalidEventError, match=r"metadata\.credits"):
        translated("customer.subscription.updated", sub)


def test_subscription_with_bad_price_metadata_credits_is_an_invalid_event():
    sub = subscription(metadata={"user_id": "user_9"})
    sub["items"]["data"][0]["price"]["metadata"] = {"credits": "lots"}

    with pytest.raises(InvalidEventError, match=r"metadata\.credits"):
        translated("customer.subscription.updated", sub)


@pytest.mark.parametrize(
    "period_end", [str(PERIOD_END), float(PERIOD_END), True, [PERIOD_END]], ids=repr
)
def test_subscription_current_period_end_not_an_int_is_an_invalid_event(period_end):
    sub = subscription()
    sub["items"]["data"][0]["current_period_end"] = period_end

    with pytest.raises(InvalidEventError, match="current_period_end"):
        translated("customer.subscription.updated", sub)


def test_subscription_with_bad_user_id_is_an_invalid_event():
    sub = subscription(metadata={"user_id": "  ", "credits": "300"})

    with pytest.raises(InvalidEventError, match="user_id"):
        translated("customer.subscription.updated", sub)


# -- invoice.paid -----------------------------------------------------------------------


def invoice(
    *, subscription_id="sub_test_0001", metadata=None, price="price_test_0001", **fields
) -> dict:
    """A paid invoice in the current API shape: parent.subscription_details, line pricing.price_details."""
    inv = stripe_object(
        "invoice",
        **(
            {
                "status": "paid",
                "amount_paid": 1000,
                "amount_remaining": 0,
                "billing_reason": "subscription_cycle",
                "currency": "usd",
            }
            | fields
        ),
    )
    inv["parent"] = {
        "quote_details": None,
        "subscription_details": {
            "metadata": {"user_id": "user_9", "credits": "300"} if metadata is None else metadata,
            "subscription": subscription_id,
        },
        "type": "subscription_details",
    }
    line = inv["lines"]["data"][0]
    line["pricing"] = {
        "price_details": {"price": price, "product": "prod_test_0001"},
        "type": "price_details",
        "unit_amount_decimal": "1000",
    }
    return inv


def legacy_invoice(**fields) -> dict:
    """The shape of API versions before 2025-03-31: no parent, top-level subscription and payment_intent."""
    inv = invoice(**fields)
    inv["parent"] = None
    inv["subscription"] = "sub_legacy_0001"
    inv["payment_intent"] = "pi_legacy_0001"
    line = inv["lines"]["data"][0]
    del line["pricing"]
    line["price"] = copy.deepcopy(FIXTURES["subscription"]["items"]["data"][0]["price"])
    return inv


def test_invoice_paid_current_api():
    change = translated("invoice.paid", invoice())

    assert change == InvoicePaid(
        PaymentRef(session_id=FIXTURE_INVOICE_ID),
        subscription_id="sub_test_0001",
        purchase=Purchase(user_id="user_9", credits=300),
        price_id="price_test_0001",
        paid_amount_cents=1000,
        paid_currency="usd",
    )


def test_invoice_paid_legacy_api():
    change = translated("invoice.paid", legacy_invoice())

    assert change == InvoicePaid(
        PaymentRef(session_id=FIXTURE_INVOICE_ID, payment_id="pi_legacy_0001"),
        subscription_id="sub_legacy_0001",
        purchase=Purchase(),
        price_id=FIXTURE_PRICE_ID,
        paid_amount_cents=1000,
        paid_currency="usd",
    )


def test_invoice_parent_subscription_wins_over_legacy_field():
    inv = invoice()
    inv["subscription"] = "sub_legacy_0001"

    assert translated("invoice.paid", inv).subscription_id == "sub_test_0001"


def test_invoice_with_expanded_subscription():
    inv = invoice(subscription_id=stripe_object("subscription", id="sub_expanded"))

    assert translated("invoice.paid", inv).subscription_id == "sub_expanded"


def test_invoice_legacy_expanded_subscription_and_payment_intent():
    inv = legacy_invoice()
    inv["subscription"] = stripe_object("subscription", id="sub_expanded_legacy")
    inv["payment_intent"] = stripe_object("payment_intent", id="pi_expanded_legacy")

    change = translated("invoice.paid", inv)

    assert change.subscription_id == "sub_expanded_legacy"
    assert change.ref.payment_id == "pi_expanded_legacy"


def test_invoice_price_falls_back_to_legacy_line_price_when_pricing_has_no_price():
    # The fixture line's pricing has no price_details, as for a one-off item.
    inv = invoice()
    inv["lines"]["data"][0]["pricing"] = copy.deepcopy(
        FIXTURES["invoice"]["lines"]["data"][0]["pricing"]
    )
    inv["lines"]["data"][0]["price"] = {"id": "price_legacy_line", "object": "price"}

    assert translated("invoice.paid", inv).price_id == "price_legacy_line"


def test_invoice_price_falls_back_to_legacy_plan():
    inv = legacy_invoice()
    del inv["lines"]["data"][0]["price"]
    inv["lines"]["data"][0]["plan"] = copy.deepcopy(
        FIXTURES["subscription"]["items"]["data"][0]["plan"]
    )

    assert (
        translated("invoice.paid", inv).price_id
        == FIXTURES["subscription"]["items"]["data"][0]["plan"]["id"]
    )


def test_invoice_current_pricing_wins_over_legacy_line_price():
    inv = invoice()
    inv["lines"]["data"][0]["price"] = {"id": "price_legacy_line", "object": "price"}

    assert translated("invoice.paid", inv).price_id == "price_test_0001"


def test_invoice_without_lines_has_no_price():
    inv = invoice()
    inv["lines"]["data"] = []

    change = translated("invoice.paid", inv)

    assert change.price_id is None
    assert change.subscription_id == "sub_test_0001"


def test_invoice_without_subscription_metadata_has_no_user_or_credits():
    inv = invoice()
    inv["parent"]["subscription_details"]["metadata"] = None

    change = translated("invoice.paid", inv)

    assert change.purchase == Purchase()


@pytest.mark.parametrize("currency", ["USD", "Eur", "gbp"])
def test_invoice_currency_is_lowercased(currency):
    assert translated("invoice.paid", invoice(currency=currency)).paid_currency == currency.lower()


def test_invoice_not_for_a_subscription_is_ignored():
    inv = invoice()
    inv["parent"] = {
        "quote_details": {"quote": "qt_test_0001"},
        "subscription_details": None,
        "type": "quote_details",
    }
    assert inv["subscription"] is None

    assert translated("invoice.paid", inv) == Ignored("invoice is not for a subscription")


def test_legacy_invoice_without_subscription_is_ignored():
    inv = legacy_invoice()
    inv["subscription"] = None

    assert translated("invoice.paid", inv) == Ignored("invoice is not for a subscription")


def test_fixture_invoice_as_published():
    # Stripe's example invoice: parent.subscription_details.subscription is the placeholder "subscription".
    change = translated("invoice.paid", stripe_object("invoice"))

    assert change == InvoicePaid(
        PaymentRef(session_id=FIXTURE_INVOICE_ID),
        subscription_id="subscription",
        purchase=Purchase(),
        price_id=None,
        paid_amount_cents=0,
        paid_currency="usd",
    )


@pytest.mark.parametrize("credits", ["many", "0", True], ids=repr)
def test_invoice_with_bad_metadata_credits_is_an_invalid_event(credits):
    with pytest.raises(InvalidEventError, match=r"metadata\.credits"):
        translated("invoice.paid", invoice(metadata={"user_id": "user_9", "credits": credits}))


@pytest.mark.parametrize("amount_paid", ["1000", 10.5, -1], ids=repr)
def test_invoice_with_bad_amount_paid_is_an_invalid_event(amount_paid):
    with pytest.raises(InvalidEventError, match="amount_paid"):
        translated("invoice.paid", invoice(amount_paid=amount_paid))


def test_invoice_without_id_is_an_invalid_event():
    with pytest.raises(InvalidEventError, match="invoice has no id"):
        translated("invoice.paid", invoice(id=None))


# -- payment_intent.succeeded / .processing / .requires_action ----------------------------
# PaymentIntent-only integrations (Elements, mobile): metadata on the intent says who and how many.


def paid_intent(**fields) -> dict:
    defaults = {
        "id": PI,
        "status": "succeeded",
        "amount": 1999,
        "amount_received": 1999,
        "currency": "usd",
        "last_payment_error": None,
        "next_action": None,
        "metadata": {"user_id": "user_1", "credits": "100", "package_id": "pkg_small"},
    }
    return stripe_object("payment_intent", **(defaults | fields))


INTENT_PURCHASE = Purchase(
    user_id="user_1",
    credits=100,
    amount_cents=1999,
    currency="usd",
    package_id="pkg_small",
    line_items=(),  # a PaymentIntent has no line items: nothing for the API to list
)


def test_payment_intent_succeeded_is_payment_succeeded_by_payment_id():
    change = translated("payment_intent.succeeded", paid_intent())

    assert change == PaymentSucceeded(BY_PI, INTENT_PURCHASE, 1999, "usd")


def test_payment_intent_succeeded_pays_what_was_received_not_what_was_asked():
    change = translated("payment_intent.succeeded", paid_intent(amount_received=1500))

    assert (change.purchase.amount_cents, change.paid_amount_cents) == (1999, 1500)


def test_fixture_payment_intent_as_published_succeeds_with_no_purchase_details():
    change = translated("payment_intent.succeeded", stripe_object("payment_intent"))

    assert change == PaymentSucceeded(
        PaymentRef(payment_id=FIXTURES["payment_intent"]["id"]),
        Purchase(amount_cents=1099, currency="usd", line_items=()),
        paid_amount_cents=0,
        paid_currency="usd",
    )


def test_payment_intent_without_metadata_names_no_buyer():
    intent = paid_intent(metadata={}, customer=stripe_object("customer"))

    change = translated("payment_intent.succeeded", intent)

    assert (change.purchase.user_id, change.purchase.credits) == (None, None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount_received", "1999", "amount_received"),
        ("amount_received", -1, "amount_received"),
        ("amount_received", 19.99, "amount_received"),
        ("amount", True, "amount"),
        ("currency", "dollars", "currency"),
        ("metadata", {"user_id": "user_1", "credits": "many"}, r"metadata\.credits"),
        ("metadata", {"user_id": "  ", "credits": "100"}, r"metadata\.user_id"),
        ("metadata", ["user_1"], "metadata is not an object"),
    ],
    ids=repr,
)
def test_payment_intent_succeeded_with_a_bad_field_is_an_invalid_event(field, value, message):
    with pytest.raises(InvalidEventError, match=message):
        translated("payment_intent.succeeded", paid_intent(**{field: value}))


def test_payment_intent_processing_is_payment_processing_by_payment_id():
    intent = paid_intent(status="processing", amount_received=0)

    assert translated("payment_intent.processing", intent) == PaymentProcessing(
        BY_PI, INTENT_PURCHASE
    )


def test_payment_intent_processing_bad_amount_is_an_invalid_event():
    with pytest.raises(InvalidEventError, match="amount"):
        translated("payment_intent.processing", paid_intent(amount=-5))


def test_payment_intent_requires_action_names_the_action():
    intent = paid_intent(
        status="requires_action",
        next_action={
            "type": "use_stripe_sdk",
            "use_stripe_sdk": {"type": "three_d_secure_redirect"},
        },
    )

    assert translated("payment_intent.requires_action", intent) == ActionRequired(
        BY_PI, "use_stripe_sdk"
    )


@pytest.mark.parametrize("next_action", [None, "redirect_to_url", {}, {"type": 7}], ids=repr)
def test_payment_intent_requires_action_without_a_readable_action_has_no_code(next_action):
    intent = paid_intent(status="requires_action", next_action=next_action)

    assert translated("payment_intent.requires_action", intent) == ActionRequired(BY_PI, None)


def test_fixture_payment_intent_requires_action():
    change = translated("payment_intent.requires_action", stripe_object("payment_intent"))

    assert change == ActionRequired(PaymentRef(payment_id=FIXTURES["payment_intent"]["id"]), "type")


def test_payment_intent_with_expanded_id_object_is_not_an_id():
    # "id" is always a string on a PaymentIntent; an object there is a malformed event
    with pytest.raises(InvalidEventError, match="payment intent has no id"):
        translated("payment_intent.succeeded", paid_intent(id={"id": PI}))


# -- refund.created / .updated / .failed, charge.refund.updated ---------------------------

REFUND_TYPES = ["refund.created", "refund.updated", "refund.failed", "charge.refund.updated"]


@pytest.mark.parametrize("event_type", REFUND_TYPES)
def test_a_refund_event_is_refund_changed(event_type):
    obj = refund(PI, 250, "succeeded", refund_id="re_test_0001")

    assert translated(event_type, obj) == RefundChanged(BY_PI, "re_test_0001", 250, "succeeded")


@pytest.mark.parametrize("status", sorted(REFUND_STATUSES))
def test_every_refund_status_is_passed_through(status):
    change = translated("refund.updated", refund(PI, 250, status, refund_id="re_test_0001"))

    assert change == RefundChanged(BY_PI, "re_test_0001", 250, status)


def test_refund_statuses_are_the_models_refund_statuses():
    assert REFUND_STATUSES == {status.value for status in RefundStatus}


def test_fixture_refund_with_a_payment_intent():
    change = translated("refund.created", stripe_object("refund", payment_intent=PI))

    assert change == RefundChanged(BY_PI, FIXTURE_REFUND_ID, 100, "succeeded")


def test_fixture_refund_as_published_has_no_payment_intent_and_is_ignored():
    obj = stripe_object("refund")
    assert obj["payment_intent"] is None

    change = translated("refund.created", obj)

    assert change == Ignored("refund of a charge without a payment intent")


def test_refund_object_with_expanded_payment_intent():
    obj = refund(stripe_object("payment_intent", id="pi_expanded_re"), 250)

    assert translated("refund.updated", obj).ref == PaymentRef(payment_id="pi_expanded_re")


@pytest.mark.parametrize(
    "status", ["reversed", "SUCCEEDED", "", None, 1, ["failed"], {"status": "failed"}], ids=repr
)
def test_unknown_refund_status_is_an_invalid_event(status):
    with pytest.raises(InvalidEventError, match="refund.status is not a known refund status"):
        translated("refund.updated", refund(PI, 250, status))


def test_refund_without_an_amount_is_an_invalid_event():
    obj = refund(PI, 250)
    obj["amount"] = None

    with pytest.raises(InvalidEventError, match="refund has no amount"):
        translated("refund.updated", obj)


@pytest.mark.parametrize("amount", ["250", 2.5, -1, True], ids=repr)
def test_refund_with_a_bad_amount_is_an_invalid_event(amount):
    with pytest.raises(InvalidEventError, match=r"refund\.amount"):
        translated("refund.failed", refund(PI, amount, "failed"))


@pytest.mark.parametrize("refund_id", [None, "", 12])
def test_refund_without_an_id_is_an_invalid_event(refund_id):
    obj = refund(PI, 250)
    obj["id"] = refund_id

    with pytest.raises(InvalidEventError, match="refund has no id"):
        translated("refund.updated", obj)


# -- radar.early_fraud_warning.created / .updated -----------------------------------------


@pytest.mark.parametrize(
    "event_type", ["radar.early_fraud_warning.created", "radar.early_fraud_warning.updated"]
)
@pytest.mark.parametrize("actionable", [True, False])
def test_an_early_fraud_warning_is_a_fraud_warning(event_type, actionable):
    warning = early_fraud_warning(PI, warning_id="issfr_test_0001", actionable=actionable)

    assert translated(event_type, warning) == FraudWarning(
        BY_PI, "issfr_test_0001", actionable=actionable, fraud_type="made_with_stolen_card"
    )


def test_a_warning_without_actionable_is_taken_as_actionable():
    warning = early_fraud_warning(PI)
    del warning["actionable"]

    assert translated("radar.early_fraud_warning.created", warning).actionable is True


def test_a_warning_with_expanded_payment_intent():
    warning = early_fraud_warning(stripe_object("payment_intent", id="pi_expanded_fw"))

    change = translated("radar.early_fraud_warning.created", warning)

    assert change.ref == PaymentRef(payment_id="pi_expanded_fw")


def test_a_warning_on_a_charge_without_payment_intent_is_ignored():
    # older integrations (Charges API): nothing to find the payment by
    warning = early_fraud_warning(None)

    assert translated("radar.early_fraud_warning.created", warning) == Ignored(
        "fraud warning on a charge without a payment intent"
    )


def test_a_warning_with_an_unknown_fraud_type_keeps_none():
    warning = early_fraud_warning(PI, fraud_type="")

    assert translated("radar.early_fraud_warning.created", warning).fraud_type is None


@pytest.mark.parametrize("warning_id", [None, "", 3])
def test_a_warning_without_an_id_is_an_invalid_event(warning_id):
    warning = early_fraud_warning(PI)
    warning["id"] = warning_id

    with pytest.raises(InvalidEventError, match="early fraud warning has no id"):
        translated("radar.early_fraud_warning.created", warning)


# -- invoice_payment.paid -----------------------------------------------------------------


def test_invoice_payment_links_the_invoice_to_its_payment_intent():
    change = translated("invoice_payment.paid", invoice_payment("in_test_0001", PI))

    assert change == PaymentLinked(PaymentRef(session_id="in_test_0001", payment_id=PI))


def test_invoice_payment_with_expanded_invoice_and_payment_intent():
    payment = invoice_payment(
        stripe_object("invoice", id="in_expanded"), stripe_object("payment_intent", id="pi_exp_ip")
    )

    change = translated("invoice_payment.paid", payment)

    assert change == PaymentLinked(PaymentRef(session_id="in_expanded", payment_id="pi_exp_ip"))


@pytest.mark.parametrize("payment_type", ["charge", "payment_record", "out_of_band_payment"])
def test_an_invoice_paid_other_than_by_a_payment_intent_is_ignored(payment_type):
    payment = invoice_payment("in_test_0001", None, payment_type=payment_type)

    change = translated("invoice_payment.paid", payment)

    assert change == Ignored(f"invoice paid by {payment_type} other than a payment intent")


def test_an_invoice_payment_without_a_payment_is_ignored():
    payment = invoice_payment("in_test_0001", PI)
    payment["payment"] = None

    assert translated("invoice_payment.paid", payment) == Ignored(
        "invoice paid by something other than a payment intent"
    )


@pytest.mark.parametrize("invoice_id", [None, "", 5, {"object": "invoice"}], ids=repr)
def test_an_invoice_payment_without_an_invoice_is_an_invalid_event(invoice_id):
    with pytest.raises(InvalidEventError, match="invoice_payment has no invoice"):
        translated("invoice_payment.paid", invoice_payment(invoice_id, PI))


# -- what the errors say: the shape of a bad value, never the value -------------------------

CANARY = "jane.doe@example.com"  # event fields may hold personal data


@pytest.mark.parametrize(
    ("event_type", "build", "shape"),
    [
        (
            "checkout.session.completed",
            lambda: paid_session(credits=CANARY),
            "metadata.credits is not a positive integer: a string of 20 characters",
        ),
        (
            "checkout.session.completed",
            lambda: paid_session(currency=CANARY),
            "currency is not a three-letter code: a string of 20 characters",
        ),
        (
            "payment_intent.succeeded",
            lambda: paid_intent(amount_received=CANARY),
            "amount_received is not a non-negative integer: a string of 20 characters",
        ),
        (
            "charge.refunded",
            lambda: refunded_charge(amount_refunded=CANARY),
            "charge.amount_refunded is not a non-negative integer: a string of 20 characters",
        ),
        (
            "refund.updated",
            lambda: refund(PI, CANARY),
            "refund.amount is not a non-negative integer: a string of 20 characters",
        ),
        (
            "customer.subscription.updated",
            lambda: _with_period_end(subscription(), CANARY),
            "current_period_end is not a unix time: a string of 20 characters",
        ),
    ],
)
def test_an_invalid_event_says_the_shape_of_the_value_not_the_value(event_type, build, shape):
    with pytest.raises(InvalidEventError) as excinfo:
        translated(event_type, build())

    assert str(excinfo.value) == shape
    assert CANARY not in str(excinfo.value)


def _with_period_end(sub: dict, value) -> dict:
    sub["items"]["data"][0]["current_period_end"] = value
    return sub


@pytest.mark.parametrize(
    ("credits", "shape"),
    [
        ("lots", "a string of 4 characters"),
        (-5, "a negative integer of 1 digit"),
        (True, "a boolean"),
        (1.5, "a decimal number"),
        ([10], "an array"),
        ({"n": 10}, "an object"),
    ],
    ids=repr,
)
def test_the_shape_of_a_bad_value_is_described(credits, shape):
    with pytest.raises(InvalidEventError, match=re.escape(f": {shape}")):
        translated("checkout.session.completed", paid_session(credits=credits))


def test_a_user_id_error_does_not_echo_the_user_id():
    session = paid_session(user_id=None)
    session["client_reference_id"] = 4111111111111111

    with pytest.raises(InvalidEventError) as excinfo:
        translated("checkout.session.completed", session)

    assert "4111" not in str(excinfo.value)
    assert "user_id" in str(excinfo.value)


# -- every registered type, once more, through one table ------------------------------

EXAMPLES = {
    "checkout.session.completed": (paid_session, PaymentSucceeded),
    "checkout.session.async_payment_succeeded": (paid_session, PaymentSucceeded),
    "checkout.session.async_payment_failed": (lambda: failed_session(card_error()), PaymentFailed),
    "checkout.session.expired": (lambda: paid_session(paid=False), PaymentExpired),
    "payment_intent.succeeded": (paid_intent, PaymentSucceeded),
    "payment_intent.processing": (lambda: paid_intent(status="processing"), PaymentProcessing),
    "payment_intent.requires_action": (
        lambda: paid_intent(status="requires_action", next_action={"type": "redirect_to_url"}),
        ActionRequired,
    ),
    "payment_intent.payment_failed": (
        lambda: stripe_object("payment_intent", id=PI, last_payment_error=card_error()),
        PaymentFailed,
    ),
    "payment_intent.canceled": (lambda: stripe_object("payment_intent", id=PI), PaymentCanceled),
    "charge.refunded": (refunded_charge, Refunded),
    "refund.created": (lambda: refund(PI, 250, "pending"), RefundChanged),
    "refund.updated": (lambda: refund(PI, 250, "succeeded"), RefundChanged),
    "refund.failed": (lambda: refund(PI, 250, "failed"), RefundChanged),
    "charge.refund.updated": (lambda: refund(PI, 250, "canceled"), RefundChanged),
    "charge.dispute.created": (dispute, DisputeOpened),
    "charge.dispute.closed": (lambda: dispute(status="lost"), DisputeClosed),
    "radar.early_fraud_warning.created": (lambda: early_fraud_warning(PI), FraudWarning),
    "radar.early_fraud_warning.updated": (
        lambda: early_fraud_warning(PI, actionable=False),
        FraudWarning,
    ),
    "customer.subscription.created": (subscription, SubscriptionChanged),
    "customer.subscription.updated": (subscription, SubscriptionChanged),
    "customer.subscription.deleted": (subscription, SubscriptionChanged),
    "invoice.paid": (invoice, InvoicePaid),
    "invoice_payment.paid": (lambda: invoice_payment("in_test_0001", PI), PaymentLinked),
}


def test_every_registered_type_has_an_example():
    assert set(EXAMPLES) == set(HANDLERS)


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_every_registered_type_translates_through_its_handler(event_type):
    build, expected_type = EXAMPLES[event_type]
    parsed = parse_event(encode(event(event_type, build())))

    change = translate(parsed)

    assert type(change) is expected_type
    assert change == HANDLERS[event_type](parsed)


CHECKOUT_TYPES = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
]


@pytest.mark.parametrize("event_type", CHECKOUT_TYPES)
@pytest.mark.parametrize("mode", ["subscription", "setup"])
@pytest.mark.parametrize("payment_status", ["paid", "unpaid", "no_payment_required"])
def test_a_subscription_or_setup_checkout_is_ignored_whatever_the_event(
    event_type, mode, payment_status
):
    """Its credits come with each invoice.paid; granting at checkout too would double them."""
    session = paid_session()
    session.update(mode=mode, payment_status=payment_status, subscription="sub_test_0001")

    change = translated(event_type, session)

    assert change == Ignored(f"{mode} checkout: credits come with invoice.paid")


@pytest.mark.parametrize("event_type", CHECKOUT_TYPES)
def test_a_subscription_checkout_is_ignored_before_its_fields_are_read(event_type):
    # a SEPA subscription's session may carry fields a purchase could not; it is not a purchase
    session = paid_session(credits="not a number")
    session["mode"] = "subscription"

    assert isinstance(translated(event_type, session), Ignored)


# -- a bad value is described, never echoed ---------------------------------------------
# These messages go to log lines, dead letters and error reports; the sender may have
# put anything in the field, a customer's e-mail address included.

LEAKY = "someone.private@example.org"


def _period_ending(value) -> dict:
    subscription = stripe_object("subscription")
    subscription["items"]["data"][0]["current_period_end"] = value
    return subscription


@pytest.mark.parametrize(
    ("event_type", "obj", "described"),
    [
        ("checkout.session.completed", checkout_session(credits=LEAKY), "metadata.credits is not a positive integer: a string of 27 characters"),
        ("checkout.session.completed", checkout_session(credits=["x", LEAKY]), "metadata.credits is not a positive integer: an array"),
        ("checkout.session.completed", checkout_session(credits="4000056655665556"), "between 1 and 1000000000000: an integer of 16 digits"),
        ("checkout.session.completed", checkout_session(currency=LEAKY), "currency is not a three-letter code: a string of 27 characters"),
        ("checkout.session.completed", {**checkout_session(), "amount_total": LEAKY}, "amount_total is not a non-negative integer: a string"),
        ("charge.refunded", stripe_object("charge", payment_intent=PI, amount=100, amount_refunded={"email": LEAKY}), "charge.amount_refunded is not a non-negative integer: an object"),
        ("customer.subscription.updated", _period_ending(LEAKY), "current_period_end is not a unix time: a string"),
    ],
)
def test_an_invalid_value_is_described_by_its_shape_not_echoed(event_type, obj, described):
    with pytest.raises(InvalidEventError) as excinfo:
        translated(event_type, obj)
    assert described in str(excinfo.value)
    assert LEAKY not in str(excinfo.value) and "4000056655665556" not in str(excinfo.value)


def test_a_bad_created_time_is_described_not_echoed():
    with pytest.raises(InvalidEventError, match="created is not a unix time: a string of 27 characters"):
        parse_event(encode({**event("charge.refunded", stripe_object("charge")), "created": LEAKY}))


def test_the_buyers_address_is_carried_for_receipts_but_never_shown():
    from providers.stripe import translate as stripe_translate
    from tests.support import canaries
    from tests.support.apply import parsed
    from tests.support.stripe_events import checkout_session, event, payment_intent

    change = stripe_translate(parsed(event("checkout.session.completed", checkout_session(user_id="u", credits="1"))))
    assert change.purchase.email == canaries.EMAIL
    assert "c4n4ry" not in repr(change)
    intent = payment_intent("pi_receipt", "succeeded", metadata={"user_id": "u", "credits": "1"})
    assert intent["receipt_email"] == canaries.EMAIL  # the fixture's canary
    assert stripe_translate(parsed(event("payment_intent.succeeded", intent))).purchase.email == canaries.EMAIL
