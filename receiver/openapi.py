"""The OpenAPI document for /api, built from the same pydantic models the routes validate with.

tests/integration/test_api.py checks that every /api route is documented with
its methods and that nothing documented is missing from the app.
"""

from __future__ import annotations

from functools import cache

from pydantic import TypeAdapter

from receiver import schemas

REF = "#/components/schemas/{model}"


def _obj(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


INT, STR, BOOL = {"type": "integer"}, {"type": "string"}, {"type": "boolean"}
NSTR, NINT = {"type": ["string", "null"]}, {"type": ["integer", "null"]}
TIME = {"type": ["string", "null"], "format": "date-time"}

RESPONSES = {
    "Error": _obj({"error": STR, "message": STR, "fields": {"type": "object", "additionalProperties": STR}}, ["error", "message"]),
    "Credits": _obj({"user_id": STR, "balance": INT, "total_purchased": INT, "total_refunded": INT, "frozen": INT}),
    "Payment": _obj(
        {
            "id": INT, "provider": STR, "provider_session_id": NSTR, "provider_payment_id": NSTR, "user_id": STR,
            "status": STR, "credits": INT, "amount_cents": NINT, "currency": NSTR, "paid_amount_cents": NINT,
            "paid_currency": NSTR, "amount_mismatch": BOOL, "refunded_cents": INT, "credits_granted": INT,
            "credits_taken_back": INT, "credits_frozen": INT, "package_id": NSTR, "package_name": NSTR, "metadata": {"type": "object"}, "expires_at": TIME,
            "paid_at": TIME, "created_at": TIME, "updated_at": TIME,
            "history": {"type": "array", "items": _obj({"from": NSTR, "to": STR, "cause": STR, "at": TIME})},
            "failed_attempts": {"type": "array", "items": {"type": "object"}},
            "disputes": {"type": "array", "items": {"type": "object"}},
            "refunds": {"type": "array", "items": {"type": "object"}},
            "fraud_warnings": {"type": "array", "items": {"type": "object"}},
            "net_credits": INT,
        },
        ["id", "provider", "user_id", "status", "credits"],
    ),
    "PaymentList": _obj(
        {"payments": {"type": "array", "items": {"$ref": REF.format(model="Payment")}}, "total_count": INT,
         "page": INT, "page_size": INT, "has_more": BOOL}
    ),
    "LedgerEntry": _obj(
        {"id": INT, "kind": STR, "amount": INT, "shortfall": INT, "payment_id": NINT, "cause": STR,
         "idempotency_key": STR, "created_at": TIME}
    ),
    "Ledger": _obj(
        {"user_id": STR, "entries": {"type": "array", "items": {"$ref": REF.format(model="LedgerEntry")}},
         "total_count": INT, "page": INT, "page_size": INT, "has_more": BOOL}
    ),
    "SpendResult": _obj(
        {"entry": {"$ref": REF.format(model="LedgerEntry")}, "user_id": STR, "balance": INT,
         "total_purchased": INT, "total_refunded": INT, "frozen": INT}
    ),
    "Checkout": _obj({"checkout_url": NSTR, "session_id": STR, "payment_id": INT}),
    "DeadLetter": _obj(
        {"id": INT, "provider": STR, "event_id": STR, "event_type": STR, "error_class": STR, "error": STR,
         "attempts": INT, "first_failed_at": TIME, "last_failed_at": TIME, "status": STR, "resolved_by": NSTR,
         "resolved_at": TIME, "resolution_note": NSTR, "traceback": NSTR, "payload": STR},
        ["id", "provider", "event_id", "event_type", "error_class", "error", "attempts", "status"],
    ),
    "DeadLetterList": _obj(
        {"dead_letters": {"type": "array", "items": {"$ref": REF.format(model="DeadLetter")}}, "total_count": INT,
         "page": INT, "page_size": INT}
    ),
    "ReplayResult": _obj({"id": INT, "outcome": STR, "event_status": NSTR, "error": NSTR}),
    "DryRun": _obj({"dry_run": BOOL, "matched": INT, "ids": {"type": "array", "items": INT}}),
    "Job": _obj(
        {"id": INT, "kind": STR, "status": {"type": "string", "enum": ["queued", "running", "finished", "failed"]},
         "total": INT, "done": INT, "outcomes": {"type": "object", "additionalProperties": INT},
         "params": {"type": "object"}, "error": NSTR, "requested_by": STR, "created_at": TIME,
         "updated_at": TIME, "started_at": TIME, "finished_at": TIME},
    ),
    "WebhookEndpoint": _obj(
        {"id": INT, "url": STR, "description": NSTR, "event_types": {"type": "array", "items": STR}, "status": STR,
         "disabled_reason": NSTR, "previous_secret_expires_at": TIME, "created_at": TIME, "updated_at": TIME}
    ),
    "WebhookEndpointWithSecret": _obj(
        {"id": INT, "url": STR, "description": NSTR, "event_types": {"type": "array", "items": STR}, "status": STR,
         "disabled_reason": NSTR, "previous_secret_expires_at": TIME, "created_at": TIME, "updated_at": TIME,
         "secret": {"type": "string", "description": "whsec_…: shown this once"}}
    ),
    "WebhookEndpointList": _obj({"endpoints": {"type": "array", "items": {"$ref": REF.format(model="WebhookEndpoint")}}}),
    "DeliveryList": _obj(
        {"deliveries": {"type": "array", "items": _obj(
            {"id": INT, "message_id": STR, "type": STR, "status": STR, "attempts": INT, "last_error": NSTR,
             "next_attempt_at": TIME, "delivered_at": TIME, "created_at": TIME})}}
    ),
    "TestDelivery": _obj({"delivery_id": INT}),
    "Replayed": _obj({"replayed": INT, "delivery_ids": {"type": "array", "items": INT}}),
    "Verification": _obj(
        {"session_id": STR, "payment_verified": BOOL, "status": NSTR, "provider_status": NSTR,
         "provider_payment_status": NSTR, "credits_added": INT, "balance": NINT}
    ),
    "Stats": _obj(
        {"user_id": NSTR, "payment_count": INT, "payments_by_status": {"type": "object", "additionalProperties": INT},
         "amount_spent_cents": {"type": "object", "additionalProperties": INT},
         "amount_refunded_cents": {"type": "object", "additionalProperties": INT},
         "credits_purchased": INT, "credits_taken_back": INT, "credits_spent": INT}
    ),
}

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
            for name, field in model.model_json_schema(by_alias=True)["properties"].items():
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
    bodies = {}
    for model in (schemas.CreatePayment, schemas.CreateCheckout, schemas.Spend, schemas.VerifyPayment,
                  schemas.ReplayDeadLetters, schemas.DiscardDeadLetter, schemas.CreateEndpoint,
                  schemas.DisableEndpoint, schemas.ReplayDeliveries):
        schema = model.model_json_schema(ref_template=REF)
        bodies.update(schema.pop("$defs", {}))
        bodies[model.__name__] = _keys_as_property_names(schema)
    if packages:
        bodies["CreateCheckout"]["properties"]["package_id"] = {"type": "string", "enum": list(packages)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "payhooks API", "version": "1", "description": "Payments, credits and stats for the application that sells credits."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": {**bodies, **RESPONSES}},
        "security": [{"bearer": []}],
        "paths": {
            "/api/openapi.json": {"get": _operation("This document", {"200": {"description": "OpenAPI 3.1"}})},
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
                                   {"201": _response("Payment", "recorded"), "200": _response("Payment", "already recorded")},
                                   body=schemas.CreatePayment, extra={"409": "the session is recorded with different details"}),
                "get": _operation("List payments, newest first", {"200": _response("PaymentList", "a page")}, query=schemas.ListPayments),
            },
            "/api/payments/verify": {
                "post": _operation("Ask the provider about a checkout session now and apply its answer",
                                   {"200": _response("Verification", "what the provider says, applied")},
                                   body=schemas.VerifyPayment,
                                   extra={"404": "the provider has no such session", "502": "the provider refused the request"})
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
                "get": _operation("One dead letter with its traceback and raw body", {"200": _response("DeadLetter", "it")},
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
