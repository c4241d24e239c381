"""The OpenAPI document for /api, built from the same pydantic models the routes validate with.

tests/integration/test_api.py checks that every /api route is documented with
its methods and that nothing documented is missing from the app.
"""

from __future__ import annotations

from functools import cache

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from receiver import responses, schemas

REF = "#/components/schemas/{model}"


STR = {"type": "string"}

# What each /api route answers, by model: the schemas below are generated from these.
RESPONSE_MODELS = (
    responses.Error, responses.Credits, responses.Ledger, responses.SpendResult, responses.Checkout,
    responses.PaymentSummary, responses.Payment, responses.PaymentList, responses.Verification, responses.Stats,
    responses.DeadLetter, responses.DeadLetterDetail, responses.DeadLetterList, responses.ReplayResult,
    responses.DryRun, responses.Job, responses.WebhookEndpoint, responses.WebhookEndpointWithSecret,
    responses.WebhookEndpointList, responses.DeliveryList, responses.TestDelivery, responses.Replayed,
)
BODY_MODELS = (schemas.CreatePayment, schemas.CreateCheckout, schemas.Spend, schemas.VerifyPayment,
               schemas.ReplayDeadLetters, schemas.DiscardDeadLetter, schemas.CreateManualPayment,
               schemas.MarkPaid, schemas.MarkUnpaid, schemas.RefundManual, schemas.CreateEndpoint,
               schemas.DisableEndpoint, schemas.ReplayDeliveries)
PARAMETER_MODELS = (schemas.Page, schemas.ListPayments, schemas.StatsQuery, schemas.ListDeadLetters,
                    schemas.CheckoutHeaders)


def _components() -> dict:
    """Bodies and responses from their models, with every definition they use, under components/schemas."""
    _, document = models_json_schema(
        [(model, "serialization") for model in RESPONSE_MODELS] + [(model, "validation") for model in BODY_MODELS],
        ref_template=REF,
    )
    found = document["$defs"]
    for model in PARAMETER_MODELS:  # their enums (PaymentStatus), which parameters refer to
        found.update(model.model_json_schema(by_alias=True, ref_template=REF).get("$defs", {}))
    return {name: _keys_as_property_names(schema) for name, schema in found.items()}


ERRORS = {
    "400": "invalid request (fields names each problem)",
    "401": "missing or wrong bearer token",
    "503": "API_TOKEN not configured, or a dependency unavailable",
}


def _response(model: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}


def _not_null(schema: dict) -> dict:
    """A query parameter is absent or a string: drop the null branch pydantic gives optional fields."""
    branches = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
    if len(branches) == 1:
        rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
        return {**rest, **branches[0]}
    return {key: value for key, value in schema.items() if not (key == "default" and value is None)}


def _operation(summary: str, ok: dict, *, body: type | None = None, query: type | None = None,
               path: list[tuple[str, dict]] = (), headers: type | None = None, extra: dict | None = None) -> dict:
    responses = {code: _response("Error", text) for code, text in ERRORS.items()}
    if body is not None:
        responses["413"] = _response("Error", "body over API_MAX_BYTES")
    responses.update(ok)
    responses.update({code: _response("Error", text) for code, text in (extra or {}).items()})
    op = {"summary": summary, "security": [{"bearer": []}], "responses": responses}
    params = [{"name": name, "in": "path", "required": True, "schema": schema} for name, schema in path]
    for where, model in (("query", query), ("header", headers)):
        if model is not None:
            for name, field in model.model_json_schema(by_alias=True, ref_template=REF)["properties"].items():
                params.append({"name": name, "in": where, "required": False, "schema": _not_null(field)})
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": REF.format(model=body.__name__)}}}}
    return op


USER = [("user_id", TypeAdapter(schemas.Id).json_schema())]
ROW_ID = TypeAdapter(schemas.RowId).json_schema()


def _keys_as_property_names(schema):
    """pydantic writes a dict's key pattern as patternProperties, which leaves keys that do not
    match it unconstrained; what it means is: every key matches, every value is this."""
    if isinstance(schema, list):
        return [_keys_as_property_names(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: _keys_as_property_names(value) for key, value in schema.items()}
    patterns = schema.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "properties" not in schema:
        (pattern, values), = patterns.items()
        del schema["patternProperties"]
        schema["additionalProperties"] = values
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
    return schema


@cache
def openapi_document(packages: tuple[str, ...] = ()) -> dict:
    """The document; `packages` are the configured credit package ids, the only ones checkout takes."""
    components = _components()
    if packages:
        components["CreateCheckout"]["properties"]["package_id"] = {"type": "string", "enum": list(packages)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "payhooks API", "version": "1", "description": "Payments, credits and stats for the application that sells credits."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": components},
        "security": [{"bearer": []}],
        "paths": {
            "/api/openapi.json": {
                "get": _operation("This document", {"200": {"description": "OpenAPI 3.1", "content": {
                    "application/json": {"schema": {"type": "object", "required": ["openapi", "paths"]}}}}})
            },
            "/api/users/{user_id}/credits": {
                "get": _operation("A user's balance and totals (zeros for an unknown user)", {"200": _response("Credits", "balance")}, path=USER)
            },
            "/api/users/{user_id}/ledger": {
                "get": _operation("A user's ledger entries, newest first", {"200": _response("Ledger", "entries")}, path=USER, query=schemas.Page)
            },
            "/api/users/{user_id}/spend": {
                "post": _operation("Use credits, once per idempotency key", {"200": _response("SpendResult", "spent")},
                                   path=USER, body=schemas.Spend, extra={"409": "insufficient credits, or the key was used for another spend"})
            },
            "/api/payments": {
                "post": _operation("Record a pending payment; idempotent on (provider, session_id) or (provider, payment_id)",
                                   {"201": _response("PaymentSummary", "recorded"),
                                    "200": _response("PaymentSummary", "already recorded")},
                                   body=schemas.CreatePayment, extra={"409": "the session is recorded with different details"}),
                "get": _operation("List payments, newest first", {"200": _response("PaymentList", "a page")}, query=schemas.ListPayments),
            },
            "/api/payments/verify": {
                "post": _operation("Ask the provider about a checkout session now and apply its answer",
                                   {"200": _response("Verification", "what the provider says, applied")},
                                   body=schemas.VerifyPayment,
                                   extra={"404": "the provider has no such session", "502": "the provider refused the request"})
            },
            "/api/payments/manual": {
                "post": _operation("Record a manual payment (bank transfer, cash, other), pending until marked; "
                                   "idempotent under the Idempotency-Key",
                                   {"201": _response("PaymentSummary", "recorded"),
                                    "200": _response("PaymentSummary", "already recorded under this key")},
                                   body=schemas.CreateManualPayment, headers=schemas.CheckoutHeaders,
                                   extra={"409": "the Idempotency-Key was used to record a different payment"})
            },
            **{
                f"/api/payments/{{payment_id}}/{action}": {
                    "post": _operation(summary, {"200": _response("Payment", "the payment, with its history")},
                                       path=[("payment_id", ROW_ID)], body=body, headers=schemas.CheckoutHeaders,
                                       extra={"404": "no such payment",
                                              "409": "not a manual payment, not in a state this applies to, "
                                                     "or the Idempotency-Key was used for a different request"})
                }
                for action, summary, body in (
                    ("mark-paid", "Mark a manual payment paid: completed, its credits granted once", schemas.MarkPaid),
                    ("mark-failed", "Mark a manual payment failed", schemas.MarkUnpaid),
                    ("cancel", "Cancel a manual payment", schemas.MarkUnpaid),
                    ("refund", "Refund a paid manual payment, fully or in part; credits taken back in proportion",
                     schemas.RefundManual),
                )
            },
            "/api/payments/{payment_id}": {
                "get": _operation("A payment with its history", {"200": _response("Payment", "the payment")},
                                  path=[("payment_id", ROW_ID)], extra={"404": "no such payment"})
            },
            "/api/checkout": {
                "post": _operation("Create a provider checkout for a configured package and record it pending",
                                   {"201": _response("Checkout", "created")}, body=schemas.CreateCheckout,
                                   headers=schemas.CheckoutHeaders,
                                   extra={"409": "the Idempotency-Key was used for another checkout",
                                          "502": "the provider refused the request"})
            },
            "/api/dead-letters": {
                "get": _operation("Dead letters, newest failure first (open ones unless status says otherwise)",
                                  {"200": _response("DeadLetterList", "a page")}, query=schemas.ListDeadLetters)
            },
            "/api/dead-letters/{dead_letter_id}": {
                "get": _operation("One dead letter with its traceback and raw body", {"200": _response("DeadLetterDetail", "it")},
                                  path=[("dead_letter_id", ROW_ID)], extra={"404": "no such dead letter"})
            },
            "/api/dead-letters/{dead_letter_id}/replay": {
                "post": _operation("Replay one dead letter through the normal processing path",
                                   {"200": _response("ReplayResult", "what happened")},
                                   path=[("dead_letter_id", ROW_ID)], extra={"404": "no such dead letter"})
            },
            "/api/dead-letters/replay": {
                "post": _operation("Replay every dead letter matching the filters as a background job "
                                   "(or only count them with dry_run)",
                                   {"202": _response("Job", "the job, queued for a worker (Location: its URL)")
                                    | {"headers": {"Location": {"schema": STR, "description": "/api/jobs/{id}"}}},
                                    "200": _response("DryRun", "dry run: what would be replayed")},
                                   body=schemas.ReplayDeadLetters)
            },
            "/api/jobs/{job_id}": {
                "get": _operation("A background job's progress: done of total, outcomes so far",
                                  {"200": _response("Job", "the job")},
                                  path=[("job_id", ROW_ID)], extra={"404": "no such job"})
            },
            "/api/dead-letters/{dead_letter_id}/discard": {
                "post": _operation("Close a dead letter without replaying it", {"200": _response("DeadLetter", "closed")},
                                   path=[("dead_letter_id", ROW_ID)], body=schemas.DiscardDeadLetter,
                                   extra={"404": "no such dead letter"})
            },
            "/api/webhook-endpoints": {
                "get": _operation("Outbound webhook endpoints (never their secrets)", {"200": _response("WebhookEndpointList", "all")}),
                "post": _operation("Add an endpoint for these message types; its signing secret is in the answer, once",
                                   {"201": _response("WebhookEndpointWithSecret", "added")}, body=schemas.CreateEndpoint,
                                   extra={"503": "OUTBOUND_SECRET_KEY not set"}),
            },
            "/api/webhook-endpoints/{endpoint_id}": {
                "get": _operation("One endpoint", {"200": _response("WebhookEndpoint", "it")},
                                  path=[("endpoint_id", ROW_ID)], extra={"404": "no such endpoint"})
            },
            "/api/webhook-endpoints/{endpoint_id}/disable": {
                "post": _operation("Stop delivering to an endpoint", {"200": _response("WebhookEndpoint", "disabled")},
                                   path=[("endpoint_id", ROW_ID)], body=schemas.DisableEndpoint, extra={"404": "no such endpoint"})
            },
            "/api/webhook-endpoints/{endpoint_id}/enable": {
                "post": _operation("Deliver to an endpoint again (replay what failed meanwhile)",
                                   {"200": _response("WebhookEndpoint", "enabled")},
                                   path=[("endpoint_id", ROW_ID)], extra={"404": "no such endpoint"})
            },
            "/api/webhook-endpoints/{endpoint_id}/rotate-secret": {
                "post": _operation("A new signing secret, in the answer once; the old one signs too until previous_secret_expires_at",
                                   {"200": _response("WebhookEndpointWithSecret", "rotated")},
                                   path=[("endpoint_id", ROW_ID)], extra={"404": "no such endpoint"})
            },
            "/api/webhook-endpoints/{endpoint_id}/test": {
                "post": _operation("Send a webhook.test message to this endpoint through the normal delivery path",
                                   {"202": _response("TestDelivery", "queued for a worker")},
                                   path=[("endpoint_id", ROW_ID)], extra={"404": "no such endpoint"})
            },
            "/api/webhook-endpoints/{endpoint_id}/deliveries": {
                "get": _operation("The endpoint's most recent deliveries, newest first", {"200": _response("DeliveryList", "deliveries")},
                                  path=[("endpoint_id", ROW_ID)], extra={"404": "no such endpoint"})
            },
            "/api/webhook-endpoints/{endpoint_id}/replay": {
                "post": _operation("Deliver again one message, or every failed one written in [since, until)",
                                   {"202": _response("Replayed", "queued for a worker")},
                                   path=[("endpoint_id", ROW_ID)], body=schemas.ReplayDeliveries, extra={"404": "no such endpoint"})
            },
            "/api/stats": {
                "get": _operation("Totals: money spent and refunded, credits purchased, taken back and spent, payments by status",
                                  {"200": _response("Stats", "totals")}, query=schemas.StatsQuery)
            },
        },
    }
