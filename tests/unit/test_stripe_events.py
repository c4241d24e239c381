"""parse_event and translate, on events built from Stripe's published fixture shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from providers.changes import (
    Ignored,
    InvalidEventError,
    PaymentProcessing,
    PaymentRef,
    PaymentSucceeded,
    ProviderEvent,
    Purchase,
)
from providers.stripe import MAX_CREDITS, parse_event, translate
from tests.support.stripe_events import (
    FIXTURES,
    checkout_session,
    completed_event,
    encode,
    event,
    stripe_object,
)

# -- parse_event: rejections ----------------------------------------------------------


def _mutated(change) -> bytes:
    evt = completed_event(session_id="cs_test_parse")
    change(evt)
    return encode(evt)


def _set(key, value):
    return lambda evt: evt.__setitem__(key, value)


def _delete(key):
    return lambda evt: evt.pop(key)


def _set_data(value):
    return lambda evt: evt.__setitem__("data", value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"not json", "not JSON", id="not-json"),
        pytest.param(b"", "not JSON", id="empty-body"),
        pytest.param(b'{"id": "evt_1", ', "not JSON", id="truncated"),
        pytest.param("{'id': 'evt_1'}", "not JSON", id="python-literal-str"),
        pytest.param(b"[]", "not a JSON object", id="empty-array"),
        pytest.param(encode([FIXTURES["event"]]), "not a JSON object", id="array-of-events"),
        pytest.param(b'"evt_1"', "not a JSON object", id="json-string"),
        pytest.param(b"null", "not a JSON object", id="json-null"),
        pytest.param(b"42", "not a JSON object", id="json-number"),
        pytest.param(_mutated(_delete("id")), "id", id="missing-id"),
        pytest.param(_mutated(_set("id", "")), "id", id="empty-id"),
        pytest.param(_mutated(_set("id", 123)), "id", id="int-id"),
        pytest.param(_mutated(_set("id", None)), "id", id="null-id"),
        pytest.param(_mutated(_set("id", ["evt_1"])), "id", id="list-id"),
        pytest.param(_mutated(_delete("type")), "type", id="missing-type"),
        pytest.param(_mutated(_set("type", "")), "type", id="empty-type"),
        pytest.param(_mutated(_set("type", None)), "type", id="null-type"),
        pytest.param(_mutated(_delete("data")), "data.object", id="missing-data"),
        pytest.param(_mutated(_set_data(None)), "data.object", id="null-data"),
        pytest.param(_mutated(_set_data([])), "data.object", id="list-data"),
        pytest.param(_mutated(_set_data({})), "data.object", id="missing-data-object"),
        pytest.param(_mutated(_set_data({"object": None})), "data.object", id="null-data-object"),
        pytest.param(_mutated(_set_data({"object": "cs"})), "data.object", id="str-data-object"),
        pytest.param(_mutated(_set_data({"object": []})), "data.object", id="list-data-object"),
    ],
)
def test_parse_event_rejects(body, message):
    with pytest.raises(InvalidEventError, match=message):
        parse_event(body)


def test_invalid_utf8_bytes_raise_unicode_decode_error():
    # parse_event decodes before its try block, so invalid UTF-8 surfaces as
    # UnicodeDecodeError, not InvalidEventError; receiver/webhooks.py catches both.
    body = b'{"id": "evt_\xff\xfe", "type": "x", "data": {"object": {}}}'

    with pytest.raises(UnicodeDecodeError) as excinfo:
        parse_event(body)

    assert type(excinfo.value) is UnicodeDecodeError
    assert not isinstance(excinfo.value, InvalidEventError)


@pytest.mark.parametrize(
    "created", [10**20, -(10**20), 10**14], ids=["huge", "huge-negative", "year-3e6"]
)
def test_out_of_range_created_is_an_invalid_event(created):
    # regression: datetime.fromtimestamp raised OverflowError/ValueError out of parse_event
    with pytest.raises(InvalidEventError):
        parse_event(encode(completed_event(session_id="cs_test_created") | {"created": created}))


def test_deeply_nested_json_is_an_invalid_event():
    # regression: json.loads raised RecursionError, which is not a ValueError
    with pytest.raises(InvalidEventError):
        parse_event(b"[" * 100_000)


# -- parse_event: acceptance ----------------------------------------------------------


def test_parse_fixture_event_shape():
    body = encode(FIXTURES["event"])

    parsed = parse_event(body)

    assert isinstance(parsed, ProviderEvent)
    assert parsed.provider == "stripe"
    assert parsed.id == "evt_1Pgc76B7WZ01zgkWwyRHS12y"
    assert parsed.type == "plan.created"
    assert parsed.data == FIXTURES["event"]["data"]
    assert parsed.raw == body.decode("utf-8")


def test_created_is_an_aware_utc_datetime():
    parsed = parse_event(encode(FIXTURES["event"]))  # created 1234567890

    assert parsed.created == datetime(2009, 2, 13, 23, 31, 30, tzinfo=UTC)
    assert parsed.created.tzinfo is not None
    assert parsed.created.utcoffset() == timedelta(0)


def test_created_of_a_built_event_round_trips():
    evt = completed_event(session_id="cs_test_c") | {"created": 1_700_000_000}

    parsed = parse_event(encode(evt))

    assert parsed.created.timestamp() == 1_700_000_000
    assert parsed.created.utcoffset() == timedelta(0)


def test_null_created_becomes_none():
    assert parse_event(encode(FIXTURES["event"] | {"created": None})).created is None


@pytest.mark.parametrize(
    "created", ["1234567890", True, 1.5, 1e20], ids=["string", "bool", "float", "huge-float"]
)
def test_non_integer_created_is_an_invalid_event(created):
    # Stripe's created is always an integer: anything else is a malformed event
    with pytest.raises(InvalidEventError, match="created"):
        parse_event(encode(FIXTURES["event"] | {"created": created}))


def test_a_bad_created_is_described_not_echoed():
    # event fields may hold personal data: errors say what a value looks like, not what it is
    with pytest.raises(InvalidEventError) as excinfo:
        parse_event(encode(FIXTURES["event"] | {"created": "jane.doe@example.com"}))

    assert str(excinfo.value) == "created is not a unix time: a string of 20 characters"


def test_missing_created_becomes_none():
    evt = dict(FIXTURES["event"])
    del evt["created"]

    assert parse_event(encode(evt)).created is None


def test_str_body_is_accepted_like_bytes():
    body = encode(FIXTURES["event"])

    assert parse_event(body.decode("utf-8")) == parse_event(body)


def test_raw_keeps_the_body_exactly_as_sent():
    # the inbox stores raw for replay: whitespace and key order must survive
    text = json.dumps(FIXTURES["event"], indent=3, sort_keys=False) + "\n"

    parsed = parse_event(text.encode("utf-8"))

    assert parsed.raw == text


def test_non_ascii_body_is_decoded_as_utf8():
    evt = completed_event(session_id="cs_test_ü", user_id="usér_☃")
    body = json.dumps(evt, ensure_ascii=False).encode("utf-8")

    parsed = parse_event(body)

    assert parsed.data["object"]["metadata"]["user_id"] == "usér_☃"
    assert parsed.raw == body.decode("utf-8")


# -- translate ------------------------------------------------------------------------


def completed(session: dict) -> PaymentSucceeded | PaymentProcessing | Ignored:
    """translate() a checkout.session.completed event, through parse_event as the worker does."""
    return translate(parse_event(encode(event("checkout.session.completed", session))))


def test_paid_session_is_payment_succeeded_with_checkout_fields():
    session = checkout_session(
        session_id="cs_test_paid",
        user_id="user_42",
        credits="250",
        payment_intent="pi_paid",
        amount_total=4999,
        currency="USD",
    )

    change = completed(session)

    assert change == PaymentSucceeded(
        PaymentRef(session_id="cs_test_paid", payment_id="pi_paid"),
        Purchase(user_id="user_42", credits=250, amount_cents=4999, currency="usd"),
        paid_amount_cents=4999,
        paid_currency="usd",
    )
    assert type(change.purchase.credits) is int
    # webhooks never carry line items: None says the API may have to list them
    assert change.purchase.line_items is None


def test_unpaid_session_is_payment_processing():
    session = checkout_session(session_id="cs_test_unpaid", paid=False, payment_intent="pi_unpaid")
    assert session["payment_status"] == "unpaid"

    change = completed(session)

    assert change == PaymentProcessing(
        PaymentRef("cs_test_unpaid", "pi_unpaid"), Purchase("user_1", 100, 1999, "usd")
    )


def test_no_payment_required_is_payment_succeeded():
    session = checkout_session(session_id="cs_test_free", amount_total=0)
    session["payment_status"] = "no_payment_required"
    session["payment_intent"] = None

    change = completed(session)

    assert isinstance(change, PaymentSucceeded)
    assert change.purchase.amount_cents == 0
    assert change.paid_amount_cents == 0
    assert change.ref == PaymentRef(session_id="cs_test_free", payment_id=None)


@pytest.mark.parametrize("status", [None, "", "PAID", "something_new"])
def test_other_payment_status_is_processing_not_success(status):
    session = checkout_session(session_id="cs_test_other")
    session["payment_status"] = status

    assert isinstance(completed(session), PaymentProcessing)


def test_client_reference_id_is_used_when_metadata_has_no_user():
    session = checkout_session(user_id=None, client_reference_id="user_from_ref")

    assert completed(session).purchase.user_id == "user_from_ref"


def test_metadata_user_id_wins_over_client_reference_id():
    session = checkout_session(user_id="user_meta", client_reference_id="user_ref")

    assert completed(session).purchase.user_id == "user_meta"


def test_metadata_without_user_or_credits_gives_none_fields():
    session = checkout_session(session_id="cs_test_bare", user_id=None, credits=None)
    assert session["metadata"] == {}
    assert session["client_reference_id"] is None

    change = completed(session)

    assert isinstance(change, PaymentSucceeded)
    assert change.purchase.user_id is None
    assert change.purchase.credits is None
    assert change.ref.session_id == "cs_test_bare"


def test_fixture_session_as_published_translates():
    # Stripe's own example object: unpaid, no metadata, no amount or currency.
    session = stripe_object("checkout.session")

    change = completed(session)

    assert change == PaymentProcessing(
        PaymentRef(
            session_id=FIXTURES["checkout.session"]["id"],
            payment_id=FIXTURES["checkout.session"]["payment_intent"],
        ),
        Purchase(),
    )


def test_expanded_payment_intent_object_gives_its_id():
    session = checkout_session()
    session["payment_intent"] = stripe_object("payment_intent", id="pi_expanded_1")
    assert isinstance(session["payment_intent"], dict)

    assert completed(session).ref.payment_id == "pi_expanded_1"


@pytest.mark.parametrize(
    "credits",
    [
        "ten",
        "-5",
        "0",
        "00",
        "1.5",
        "",
        "   ",
        "1e3",
        "0x10",
        "+5",
        True,
        False,
        0,
        -5,
        10**13,
        str(MAX_CREDITS + 1),
        1.5,
        [10],
        {"n": 10},
    ],
    ids=repr,
)
def test_invalid_credits_is_an_invalid_event(credits):
    session = checkout_session(credits=credits)

    with pytest.raises(InvalidEventError, match=r"metadata\.credits"):
        completed(session)


@pytest.mark.parametrize(
    ("credits", "expected"),
    [
        (7, 7),
        ("7", 7),
        ("100", 100),
        (" 12 ", 12),
        (str(MAX_CREDITS), MAX_CREDITS),
        (MAX_CREDITS, MAX_CREDITS),
    ],
    ids=repr,
)
def test_valid_credits(credits, expected):
    assert completed(checkout_session(credits=credits)).purchase.credits == expected


@pytest.mark.parametrize("currency", ["us", "usdd", "", "u$d", "12a", 5, ["usd"]], ids=repr)
def test_bad_currency_is_an_invalid_event(currency):
    with pytest.raises(InvalidEventError, match="currency"):
        completed(checkout_session(currency=currency))


@pytest.mark.parametrize("currency", ["usd", "EUR", "Gbp"])
def test_currency_is_lowercased(currency):
    change = completed(checkout_session(currency=currency))

    assert change.purchase.currency == change.paid_currency == currency.lower()


@pytest.mark.parametrize("amount", [-1, -1999, 19.99, "1999", True], ids=repr)
def test_bad_amount_total_is_an_invalid_event(amount):
    with pytest.raises(InvalidEventError, match="amount_total"):
        completed(checkout_session(amount_total=amount))


@pytest.mark.parametrize("user_id", ["", "   ", 42])
def test_bad_client_reference_user_is_an_invalid_event(user_id):
    session = checkout_session(user_id=None)
    session["client_reference_id"] = user_id

    with pytest.raises(InvalidEventError, match="user_id"):
        completed(session)


@pytest.mark.parametrize("session_id", [None, "", 5])
def test_session_without_string_id_is_an_invalid_event(session_id):
    session = checkout_session()
    session["id"] = session_id

    with pytest.raises(InvalidEventError, match="session has no id"):
        completed(session)


@pytest.mark.parametrize("metadata", [["user_id"], "user_1", 5])
def test_non_object_metadata_is_an_invalid_event(metadata):
    session = checkout_session()
    session["metadata"] = metadata

    with pytest.raises(InvalidEventError, match="metadata"):
        completed(session)


@pytest.mark.parametrize(
    "event_type",
    [
        "plan.created",
        "customer.created",
        "payment_intent.created",
        "charge.succeeded",
        "invoice.payment_failed",
        "x",
    ],
)
def test_unknown_event_type_is_ignored(event_type):
    if event_type == "plan.created":
        obj = FIXTURES["event"]["data"]["object"]
    else:
        obj = stripe_object("charge")
    change = translate(parse_event(encode(event(event_type, obj))))

    assert isinstance(change, Ignored)
    assert event_type in change.reason


def test_fixture_event_is_ignored():
    change = translate(parse_event(encode(FIXTURES["event"])))

    assert change == Ignored("plan.created is not handled")
