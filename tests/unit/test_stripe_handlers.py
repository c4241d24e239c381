"""Every handler in providers.stripe.HANDLERS, on events built from Stripe's published fixture shapes.

Each test goes the way the worker goes: encode the event, parse_event, translate,
and compares the whole change returned, not just its type.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from providers.changes import (
    AttemptFailed,
    Checkout,
    CheckoutExpired,
    CheckoutFailed,
    DisputeClosed,
    DisputeOpened,
    Ignored,
    InvalidEventError,
    InvoicePaid,
    PaymentCanceled,
    PaymentProcessing,
    PaymentSucceeded,
    Refunded,
    SubscriptionChanged,
)
from providers.stripe import HANDLED_TYPES, HANDLERS, parse_event, translate
from tests.support.stripe_events import FIXTURES, checkout_session, encode, event, stripe_object

PI = "pi_3QxTestPaymentIntent0001"
SESSION = "cs_test_handlers_0001"
PERIOD_END = 1_767_225_600  # 2026-01-01T00:00:00Z
PERIOD_END_AT = datetime(2026, 1, 1, tzinfo=UTC)

FIXTURE_DISPUTE_ID = FIXTURES["dispute"]["id"]
FIXTURE_INVOICE_ID = FIXTURES["invoice"]["id"]
FIXTURE_PRICE_ID = FIXTURES["subscription"]["items"]["data"][0]["price"]["id"]
FIXTURE_CUSTOMER_ID = FIXTURES["subscription"]["customer"]


def translated(event_type: str, obj: dict):
    """translate() an event around one object, through encode and parse_event as the worker does."""
    return translate(parse_event(encode(event(event_type, obj))))


# -- the registry -------------------------------------------------------------------

ALL_TYPES = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
}


def test_handled_types_are_exactly_the_registry_keys():
    assert set(HANDLED_TYPES) == set(HANDLERS)
    assert len(HANDLED_TYPES) == len(set(HANDLED_TYPES)) == len(HANDLERS)


def test_registry_lists_all_thirteen_types():
    assert set(HANDLERS) == ALL_TYPES
    assert len(HANDLERS) == 13


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


EXPECTED_CHECKOUT = Checkout(
    session_id=SESSION,
    user_id="user_1",
    credits=100,
    payment_id=PI,
    amount_cents=1999,
    currency="usd",
)


def test_completed_paid_session_is_payment_succeeded():
    assert translated("checkout.session.completed", paid_session()) == PaymentSucceeded(
        EXPECTED_CHECKOUT
    )


def test_completed_unpaid_session_is_payment_processing():
    session = paid_session(paid=False)
    assert session["payment_status"] == "unpaid"

    assert translated("checkout.session.completed", session) == PaymentProcessing(EXPECTED_CHECKOUT)


def test_completed_no_payment_required_session_is_payment_succeeded():
    session = paid_session(amount_total=0)
    session["payment_status"] = "no_payment_required"
    session["payment_intent"] = None

    change = translated("checkout.session.completed", session)

    assert change == PaymentSucceeded(
        Checkout(
            session_id=SESSION,
            user_id="user_1",
            credits=100,
            payment_id=None,
            amount_cents=0,
            currency="usd",
        )
    )


def test_package_id_comes_from_metadata():
    session = paid_session()
    session["metadata"]["package_id"] = "pkg_large"

    change = translated("checkout.session.completed", session)

    assert change.checkout.package_id == "pkg_large"


def test_async_payment_succeeded_is_payment_succeeded():
    # Stripe sends this for a session completed earlier as unpaid; the session is now paid.
    session = paid_session()

    assert translated("checkout.session.async_payment_succeeded", session) == PaymentSucceeded(
        EXPECTED_CHECKOUT
    )


def test_async_payment_succeeded_does_not_look_at_payment_status():
    session = paid_session(paid=False)

    change = translated("checkout.session.async_payment_succeeded", session)

    assert change == PaymentSucceeded(EXPECTED_CHECKOUT)


def test_expired_session_is_checkout_expired():
    session = paid_session(paid=False)
    session["status"] = "expired"
    session["payment_intent"] = None

    change = translated("checkout.session.expired", session)

    assert change == CheckoutExpired(
        Checkout(
            session_id=SESSION,
            user_id="user_1",
            credits=100,
            payment_id=None,
            amount_cents=1999,
            currency="usd",
        )
    )


def test_fixture_session_as_published_expires():
    session = stripe_object("checkout.session")

    change = translated("checkout.session.expired", session)

    assert change == CheckoutExpired(
        Checkout(
            session_id=FIXTURES["checkout.session"]["id"],
            user_id=None,
            credits=None,
            payment_id=FIXTURES["checkout.session"]["payment_intent"],
        )
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

    assert change == CheckoutFailed(
        EXPECTED_CHECKOUT, "insufficient_funds", "Your card has insufficient funds."
    )


def test_async_payment_failed_without_decline_code_uses_code():
    error = card_error(decline_code=None, code="expired_card", message="Your card has expired.")
    assert "decline_code" not in error

    change = translated("checkout.session.async_payment_failed", failed_session(error))

    assert change == CheckoutFailed(EXPECTED_CHECKOUT, "expired_card", "Your card has expired.")


def test_async_payment_failed_without_error_gives_no_code_or_message():
    change = translated("checkout.session.async_payment_failed", failed_session(None))

    assert change == CheckoutFailed(EXPECTED_CHECKOUT, None, None)


def test_async_payment_failed_with_unexpanded_payment_intent_gives_no_code_or_message():
    session = paid_session(paid=False)
    assert session["payment_intent"] == PI

    change = translated("checkout.session.async_payment_failed", session)

    assert change == CheckoutFailed(EXPECTED_CHECKOUT, None, None)


def test_async_payment_failed_falls_back_to_error_type_without_any_code():
    # The fixture's payment_intent carries last_payment_error {"type": "idempotency_error"} only.
    session = paid_session(paid=False)
    session["payment_intent"] = stripe_object("payment_intent", id=PI)
    assert session["payment_intent"]["last_payment_error"] == {"type": "idempotency_error"}

    change = translated("checkout.session.async_payment_failed", session)

    assert change == CheckoutFailed(EXPECTED_CHECKOUT, "idempotency_error", None)


# -- payment intents ----------------------------------------------------------------


def test_payment_intent_payment_failed_is_attempt_failed():
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

    assert change == AttemptFailed(PI, "generic_decline", "Your card was declined.")


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

    assert change == AttemptFailed(PI, "incorrect_cvc", "Your card's security code is incorrect.")


def test_payment_intent_payment_failed_without_error():
    intent = stripe_object("payment_intent", id=PI, last_payment_error=None)

    assert translated("payment_intent.payment_failed", intent) == AttemptFailed(PI, None, None)


@pytest.mark.parametrize("intent_id", [None, "", 42])
def test_payment_intent_without_id_is_an_invalid_event(intent_id):
    intent = stripe_object("payment_intent", id=intent_id, last_payment_error=card_error())

    with pytest.raises(InvalidEventError, match="payment intent has no id"):
        translated("payment_intent.payment_failed", intent)


@pytest.mark.parametrize("reason", ["abandoned", "requested_by_customer", "duplicate", "automatic"])
def test_payment_intent_canceled_carries_its_reason(reason):
    intent = stripe_object("payment_intent", id=PI, status="canceled", cancellation_reason=reason)

    assert translated("payment_intent.canceled", intent) == PaymentCanceled(PI, reason)


def test_fixture_payment_intent_canceled_without_reason():
    intent = stripe_object("payment_intent", status="canceled")
    assert intent["cancellation_reason"] is None

    change = translated("payment_intent.canceled", intent)

    assert change == PaymentCanceled(FIXTURES["payment_intent"]["id"], None)


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
    assert translated("charge.refunded", refunded_charge()) == Refunded(PI, 250, 1000)


def test_full_refund():
    charge = refunded_charge(amount_refunded=1000, refunded=True)

    assert translated("charge.refunded", charge) == Refunded(PI, 1000, 1000)


def test_refund_larger_than_the_charge_is_capped_at_the_amount():
    charge = refunded_charge(amount_refunded=1500)

    assert translated("charge.refunded", charge) == Refunded(PI, 1000, 1000)


def test_refund_with_expanded_payment_intent():
    charge = refunded_charge(
        payment_intent=stripe_object("payment_intent", id="pi_expanded_refund")
    )

    assert translated("charge.refunded", charge) == Refunded("pi_expanded_refund", 250, 1000)


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
        payment_id=PI, dispute_id=FIXTURE_DISPUTE_ID, amount_cents=1000, reason="fraudulent"
    )


def test_fixture_dispute_opened_with_its_reason():
    change = translated("charge.dispute.created", dispute())

    assert change == DisputeOpened(PI, FIXTURE_DISPUTE_ID, 1000, "general")


def test_dispute_with_expanded_payment_intent():
    change = translated(
        "charge.dispute.created",
        dispute(payment_intent=stripe_object("payment_intent", id="pi_exp")),
    )

    assert change.payment_id == "pi_exp"


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
        payment_id=PI,
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

    assert isinstance(change, Ignored)
    assert repr(status) in change.reason


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
        invoice_id=FIXTURE_INVOICE_ID,
        subscription_id="sub_test_0001",
        user_id="user_9",
        credits=300,
        price_id="price_test_0001",
        amount_cents=1000,
        currency="usd",
        payment_id=None,
    )


def test_invoice_paid_legacy_api():
    change = translated("invoice.paid", legacy_invoice())

    assert change == InvoicePaid(
        invoice_id=FIXTURE_INVOICE_ID,
        subscription_id="sub_legacy_0001",
        user_id=None,
        credits=None,
        price_id=FIXTURE_PRICE_ID,
        amount_cents=1000,
        currency="usd",
        payment_id="pi_legacy_0001",
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
    assert change.payment_id == "pi_expanded_legacy"


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

    assert (change.user_id, change.credits) == (None, None)


@pytest.mark.parametrize("currency", ["USD", "Eur", "gbp"])
def test_invoice_currency_is_lowercased(currency):
    assert translated("invoice.paid", invoice(currency=currency)).currency == currency.lower()


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
        invoice_id=FIXTURE_INVOICE_ID,
        subscription_id="subscription",
        user_id=None,
        credits=None,
        price_id=None,
        amount_cents=0,
        currency="usd",
        payment_id=None,
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


# -- every registered type, once more, through one table ------------------------------

EXAMPLES = {
    "checkout.session.completed": (paid_session, PaymentSucceeded),
    "checkout.session.async_payment_succeeded": (paid_session, PaymentSucceeded),
    "checkout.session.async_payment_failed": (lambda: failed_session(card_error()), CheckoutFailed),
    "checkout.session.expired": (lambda: paid_session(paid=False), CheckoutExpired),
    "payment_intent.payment_failed": (
        lambda: stripe_object("payment_intent", id=PI, last_payment_error=card_error()),
        AttemptFailed,
    ),
    "payment_intent.canceled": (lambda: stripe_object("payment_intent", id=PI), PaymentCanceled),
    "charge.refunded": (refunded_charge, Refunded),
    "charge.dispute.created": (dispute, DisputeOpened),
    "charge.dispute.closed": (lambda: dispute(status="lost"), DisputeClosed),
    "customer.subscription.created": (subscription, SubscriptionChanged),
    "customer.subscription.updated": (subscription, SubscriptionChanged),
    "customer.subscription.deleted": (subscription, SubscriptionChanged),
    "invoice.paid": (invoice, InvoicePaid),
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


@pytest.mark.parametrize("mode", ["subscription", "setup"])
def test_a_subscription_or_setup_checkout_grants_nothing_itself(mode):
    """Its credits come with each invoice.paid; granting at checkout too would double them."""
    session = stripe_object("checkout.session", mode=mode, payment_status="paid", metadata={"user_id": "u", "credits": "5"})
    change = translate(parse_event(encode(event("checkout.session.completed", session))))
    assert isinstance(change, Ignored)
    assert "invoice.paid" in change.reason


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
