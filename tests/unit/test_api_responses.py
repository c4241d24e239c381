"""/api answers through pydantic models, and the OpenAPI document is generated from the same models."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from infra.settings import Settings
from receiver import create_app, responses
from receiver.openapi import REF, RESPONSE_MODELS, _keys_as_property_names, openapi_document

DOCUMENT = openapi_document(("starter",))
COMPONENTS = DOCUMENT["components"]["schemas"]


def _api_operations() -> set[tuple[str, str]]:
    app = create_app(Settings())
    operations = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        operations |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return operations


def _success_schemas(operation: dict) -> list[dict]:
    return [
        answer["content"]["application/json"]["schema"]
        for status, answer in operation["responses"].items()
        if status.startswith("2") and "content" in answer
    ]


def test_every_api_route_is_documented_with_a_response_schema():
    operations = _api_operations()
    assert len(operations) >= 16  # the url map was read: every route of receiver/api.py

    for path, method in operations:
        operation = DOCUMENT["paths"].get(path, {}).get(method)
        assert operation is not None, f"{method.upper()} {path} is not in the OpenAPI document"
        assert all(status.isdigit() for status in operation["responses"])
        successes = _success_schemas(operation)
        assert successes, f"{method.upper()} {path} documents no JSON answer"
        for schema in successes:
            if "$ref" in schema:
                assert schema["$ref"].removeprefix("#/components/schemas/") in COMPONENTS


def test_every_reference_in_the_document_resolves():
    references = set(re.findall(r'"\$ref": "([^"]+)"', str(DOCUMENT).replace("'", '"')))

    assert references
    for reference in references:
        assert reference.startswith("#/components/schemas/"), reference
        assert reference.removeprefix("#/components/schemas/") in COMPONENTS, reference


@pytest.mark.parametrize("model", RESPONSE_MODELS, ids=lambda model: model.__name__)
def test_each_response_schema_is_its_models_own(model):
    generated = model.model_json_schema(mode="serialization", ref_template=REF)
    generated.pop("$defs", None)

    assert COMPONENTS[model.__name__] == _keys_as_property_names(generated)


def test_every_documented_answer_is_a_model():
    named = {model.__name__ for model in RESPONSE_MODELS}
    for path, operations in DOCUMENT["paths"].items():
        if path == "/api/openapi.json":
            continue
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                schema = answer["content"]["application/json"]["schema"]
                assert schema["$ref"].removeprefix("#/components/schemas/") in named, (method, path, status)


# -- the answers themselves --------------------------------------------------------------

ENTRY = {
    "id": 7, "kind": "spend", "amount": -3, "shortfall": 0, "payment_id": None, "cause": "spend",
    "idempotency_key": "order-1", "created_at": "2026-11-29T22:41:45.123456+00:00",
}


def test_a_reply_is_the_applications_view_unchanged():
    view = {"entry": ENTRY, "user_id": "u", "balance": 17, "total_purchased": 20, "total_refunded": 0, "frozen": 0}

    assert responses.reply(responses.SpendResult, view) == view


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 29, 22, 41, 45, 123456, tzinfo=UTC),
        datetime(2026, 11, 29, 22, 41, 45, tzinfo=UTC),  # no microseconds: none written
        datetime(2026, 11, 29, 22, 41, 45, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
)
def test_times_are_written_as_the_application_writes_them(moment):
    # datetime.isoformat() (+00:00), not pydantic's own "Z": answers stay byte for byte what they were
    view = ENTRY | {"created_at": moment.isoformat()}

    assert responses.reply(responses.LedgerEntry, view)["created_at"] == moment.isoformat()


def test_the_status_history_keeps_its_from_key():
    change = {"from": None, "to": "completed", "cause": "evt_1", "actor": "stripe", "reason": None, "at": "2026-11-29T22:41:45+00:00"}

    assert responses.reply(responses.StatusChange, change) == change


@pytest.mark.parametrize(
    "view",
    [
        ENTRY | {"surprise": 1},  # a key the document does not describe
        {key: value for key, value in ENTRY.items() if key != "shortfall"},  # a key it promises
        ENTRY | {"kind": "gift"},  # a value outside its enum
        ENTRY | {"amount": "three"},  # a type it does not say
    ],
    ids=["extra", "missing", "enum", "type"],
)
def test_a_view_that_drifts_from_the_document_is_refused(view):
    with pytest.raises(ValidationError):
        responses.reply(responses.LedgerEntry, view)


def test_errors_leave_through_their_model():
    app = create_app(Settings())
    with app.test_request_context():
        from receiver.errors import error

        plain = error(404, "not_found", "no payment 9").get_json()
        invalid = error(400, "validation_error", "bad", fields={"page": "too small"}).get_json()

    assert plain == {"error": "not_found", "message": "no payment 9"}  # no "fields": null
    assert invalid["fields"] == {"page": "too small"}
    with pytest.raises(ValidationError):
        responses.Error(error="x", message="y", detail="z")
