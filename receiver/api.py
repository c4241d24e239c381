"""The JSON API for the application that sells credits. Every route needs the bearer token.

Routes only validate input, call PaymentTracker and map its exceptions to HTTP
answers; the rules live below them.
"""

from __future__ import annotations

from flask import Blueprint, request
from pydantic import BaseModel, ValidationError
from werkzeug.routing import IntegerConverter

from application.dlq import DeadLetterNotFoundError
from application.endpoints import EndpointNotFoundError
from application.jobs import JobNotFoundError, JobNotQueuedError
from application.manual import IdempotencyConflictError, MarkRefusedError
from application.tracker import ConflictError, InvalidRequestError, NotFoundError
from infra.settings import SettingsError
from models.dead_letters import Filters
from models.enums import DeadLetterStatus
from models.ledger import InsufficientCreditsError
from providers.paypal_api import PayPalNotConfiguredError
from providers.stripe_api import (
    ProviderConflictError,
    ProviderNotFoundError,
    ProviderRequestError,
    ProviderUnavailableError,
    StripeNotConfiguredError,
)
from receiver import responses, schemas
from receiver.auth import bearer_matches, unauthorized
from receiver.errors import error
from receiver.openapi import openapi_document
from receiver.responses import reply
from receiver.services import services

blueprint = Blueprint("api", __name__)


class RowIdConverter(IntegerConverter):
    """``<id:name>``: a row id, 1 to BIGINT's maximum. Anything else matches no route: 404."""

    def __init__(self, map, *args, **kwargs) -> None:
        super().__init__(map, min=1, max=schemas.BIGINT_MAX)


# Registered with the app before the blueprint's rules are bound to it.
blueprint.record_once(lambda state: state.app.url_map.converters.setdefault("id", RowIdConverter))


class RequestValidationError(ValueError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in fields.items()))
        self.fields = fields


@blueprint.before_request
def require_token():
    token = services().settings.reveal("api_token")
    if not token:
        return error(503, "api_disabled", "API_TOKEN is not set, so the API is closed")
    if not bearer_matches(token):
        return unauthorized("API_TOKEN", "payhooks")
    return None


def _body(model: type[BaseModel]):
    """The body, parsed and validated in one step by pydantic's JSON parser (see schemas)."""
    if not request.is_json:
        raise RequestValidationError({"body": "must be a JSON object"})
    return _validate(model, request.get_data(), json=True)


def _query(model: type[BaseModel]):
    return _validate(model, request.args.to_dict())


def _user(user_id: str) -> str:
    return _validate(schemas.UserPath, {"user_id": user_id}).user_id


def _validate(model: type[BaseModel], data, *, json: bool = False):
    """Strict: a JSON body's types are what the document says; strings are parsed as strings."""
    try:
        if json:
            return model.model_validate_json(data, strict=True)
        return model.model_validate_strings(data, strict=True)
    except ValidationError as exc:
        raise RequestValidationError(
            {".".join(str(part) for part in e["loc"]) or "body": e["msg"] for e in exc.errors()}
        ) from None


@blueprint.errorhandler(RequestValidationError)
def invalid(exc: RequestValidationError):
    return error(400, "validation_error", f"invalid request: {exc}", fields=exc.fields)


@blueprint.errorhandler(InvalidRequestError)
def invalid_for_tracker(exc: InvalidRequestError):
    return error(400, "validation_error", str(exc), fields={exc.field: str(exc)})


@blueprint.errorhandler(NotFoundError)
@blueprint.errorhandler(DeadLetterNotFoundError)
@blueprint.errorhandler(JobNotFoundError)
@blueprint.errorhandler(ProviderNotFoundError)
@blueprint.errorhandler(EndpointNotFoundError)
def not_found(exc: Exception):
    return error(404, "not_found", str(exc))


@blueprint.errorhandler(SettingsError)
def not_configured(exc: SettingsError):
    return error(503, "not_configured", str(exc))


@blueprint.errorhandler(ConflictError)
@blueprint.errorhandler(ProviderConflictError)
def conflict(exc: Exception):
    return error(409, "conflict", str(exc))


@blueprint.errorhandler(MarkRefusedError)
def refused(exc: MarkRefusedError):
    return error(409, "invalid_transition", str(exc))


@blueprint.errorhandler(IdempotencyConflictError)
def idempotency_conflict(exc: IdempotencyConflictError):
    return error(409, "idempotency_conflict", str(exc))


@blueprint.errorhandler(InsufficientCreditsError)
def insufficient(exc: InsufficientCreditsError):
    return error(409, "insufficient_credits", str(exc))


@blueprint.errorhandler(StripeNotConfiguredError)
def stripe_not_configured(exc: StripeNotConfiguredError):
    return error(503, "stripe_not_configured", str(exc))


@blueprint.errorhandler(PayPalNotConfiguredError)
def paypal_not_configured(exc: PayPalNotConfiguredError):
    return error(503, "paypal_not_configured", str(exc))


@blueprint.errorhandler(ProviderUnavailableError)
def provider_unavailable(exc: ProviderUnavailableError):
    response = error(503, "provider_unavailable", str(exc))
    response.headers["Retry-After"] = "5"
    return response


@blueprint.errorhandler(JobNotQueuedError)
def broker_unavailable(exc: JobNotQueuedError):
    response = error(503, "broker_unavailable", "the queue is unreachable; retry later")
    response.headers["Retry-After"] = "5"
    return response


@blueprint.errorhandler(ProviderRequestError)
def provider_refused(exc: ProviderRequestError):
    return error(502, "provider_error", str(exc))


# -- routes ---------------------------------------------------------------------


@blueprint.get("/openapi.json")
def openapi():
    return openapi_document(tuple(sorted(services().settings.credit_packages)))


@blueprint.get("/users/<user_id>/credits")
def user_credits(user_id: str):
    return reply(responses.Credits, services().tracker.balance(_user(user_id)))


@blueprint.get("/users/<user_id>/ledger")
def user_ledger(user_id: str):
    user_id = _user(user_id)
    page = _query(schemas.Page)
    return reply(responses.Ledger, services().tracker.ledger(user_id, page=page.page, page_size=page.page_size))


@blueprint.post("/users/<user_id>/spend")
def user_spend(user_id: str):
    user_id = _user(user_id)
    spend = _body(schemas.Spend)
    result = services().tracker.spend(user_id, spend.credits, idempotency_key=spend.idempotency_key, reason=spend.reason)
    return reply(responses.SpendResult, result)


@blueprint.post("/payments")
def create_payment():
    body = _body(schemas.CreatePayment)
    payment, created = services().tracker.create_pending_payment(
        user_id=body.user_id,
        amount_cents=body.amount_cents,
        currency=body.currency,
        credits=body.credits,
        session_id=body.session_id,
        payment_id=body.payment_id,
        provider=body.provider,
        package_id=body.package_id,
        package_name=body.package_name,
        expires_at=body.expires_at,
        metadata=body.metadata,
    )
    return reply(responses.PaymentSummary, payment), 201 if created else 200


@blueprint.post("/checkout")
def create_checkout():
    body = _body(schemas.CreateCheckout)
    key = request.headers.get("Idempotency-Key")
    headers = _validate(schemas.CheckoutHeaders, {} if key is None else {"Idempotency-Key": key})
    result = services().tracker.create_checkout(
        user_id=body.user_id,
        package_id=body.package_id,
        provider=body.provider,
        success_url=body.success_url,
        cancel_url=body.cancel_url,
        idempotency_key=headers.idempotency_key,
    )
    return reply(responses.Checkout, result), 201


@blueprint.post("/payments/verify")
def verify_payment():
    body = _body(schemas.VerifyPayment)
    return reply(responses.Verification, services().tracker.verify(body.session_id, provider=body.provider))


@blueprint.get("/payments/<id:payment_id>")
def get_payment(payment_id: int):
    return reply(responses.Payment, services().tracker.get(payment_id))


@blueprint.get("/payments")
def list_payments():
    query = _query(schemas.ListPayments)
    payments = services().tracker.history(
        user_id=query.user_id,
        provider=query.provider,
        status=query.status.value if query.status else None,
        page=query.page,
        page_size=query.page_size,
    )
    return reply(responses.PaymentList, payments)


# -- manual payments ----------------------------------------------------------------


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    return _validate(schemas.CheckoutHeaders, {} if key is None else {"Idempotency-Key": key}).idempotency_key


@blueprint.post("/payments/manual")
def create_manual_payment():
    body = _body(schemas.CreateManualPayment)
    payment, created = services().manual.record(**body.model_dump(), actor=_actor(), key=_idempotency_key())
    return reply(responses.PaymentSummary, payment), 201 if created else 200


@blueprint.post("/payments/<id:payment_id>/mark-paid")
def mark_paid(payment_id: int):
    body = _body(schemas.MarkPaid)
    payment = services().manual.mark_paid(payment_id, **body.model_dump(), actor=_actor(), key=_idempotency_key())
    return reply(responses.Payment, payment)


@blueprint.post("/payments/<id:payment_id>/mark-failed")
def mark_failed(payment_id: int):
    body = _body(schemas.MarkUnpaid)
    payment = services().manual.mark_failed(payment_id, reason=body.reason, actor=_actor(), key=_idempotency_key())
    return reply(responses.Payment, payment)


@blueprint.post("/payments/<id:payment_id>/cancel")
def cancel_payment(payment_id: int):
    body = _body(schemas.MarkUnpaid)
    payment = services().manual.cancel(payment_id, reason=body.reason, actor=_actor(), key=_idempotency_key())
    return reply(responses.Payment, payment)


@blueprint.post("/payments/<id:payment_id>/refund")
def refund_payment(payment_id: int):
    body = _body(schemas.RefundManual)
    payment = services().manual.refund(payment_id, **body.model_dump(), actor=_actor(), key=_idempotency_key())
    return reply(responses.Payment, payment)


@blueprint.get("/stats")
def stats():
    query = _query(schemas.StatsQuery)
    return reply(responses.Stats, services().tracker.stats(query.user_id, provider=query.provider))


# -- dead letters -------------------------------------------------------------------


def _dead_letter_filters(query: schemas.DeadLetterFilters) -> Filters:
    return Filters(
        status=None if query.status == "all" else DeadLetterStatus(query.status),
        provider=query.provider,
        event_type=query.type,
        since=query.since,
        error=query.error,
    )


def _actor() -> str:
    return "api"


@blueprint.get("/dead-letters")
def list_dead_letters():
    query = _query(schemas.ListDeadLetters)
    letters, total = services().dead_letters.list(
        _dead_letter_filters(query), limit=query.page_size, offset=(query.page - 1) * query.page_size
    )
    page = {"dead_letters": letters, "total_count": total, "page": query.page, "page_size": query.page_size}
    return reply(responses.DeadLetterList, page)


@blueprint.get("/dead-letters/<id:dead_letter_id>")
def show_dead_letter(dead_letter_id: int):
    return reply(responses.DeadLetterDetail, services().dead_letters.show(dead_letter_id))


@blueprint.post("/dead-letters/<id:dead_letter_id>/replay")
def replay_dead_letter(dead_letter_id: int):
    result = services().dead_letters.replay(dead_letter_id, _actor())
    outcome = {"id": result.dead_letter_id, "outcome": result.outcome, "event_status": result.event_status, "error": result.error}
    return reply(responses.ReplayResult, outcome)


@blueprint.post("/dead-letters/replay")
def replay_dead_letters():
    """Dry run: count them now. Otherwise a job a worker runs: 202 with the job to poll."""
    body = _body(schemas.ReplayDeadLetters)
    filters = _dead_letter_filters(body)
    if body.dry_run:
        ids = services().dead_letters.matching(filters)
        return reply(responses.DryRun, {"dry_run": True, "matched": len(ids), "ids": ids})
    params = body.model_dump(mode="json", exclude={"dry_run"}, exclude_none=True)
    job = services().jobs.replay_dead_letters(filters, params, _actor())
    return reply(responses.Job, job), 202, {"Location": f"{request.script_root}/api/jobs/{job['id']}"}


@blueprint.get("/jobs/<id:job_id>")
def show_job(job_id: int):
    return reply(responses.Job, services().jobs.get(job_id))


@blueprint.post("/dead-letters/<id:dead_letter_id>/discard")
def discard_dead_letter(dead_letter_id: int):
    body = _body(schemas.DiscardDeadLetter)
    return reply(responses.DeadLetter, services().dead_letters.discard(dead_letter_id, _actor(), body.reason))


# -- outbound webhook endpoints ------------------------------------------------------


@blueprint.get("/webhook-endpoints")
def list_endpoints():
    return reply(responses.WebhookEndpointList, {"endpoints": services().outbound.endpoints.list()})


@blueprint.post("/webhook-endpoints")
def create_endpoint():
    """201 with the endpoint and its signing secret, shown this once."""
    body = _body(schemas.CreateEndpoint)
    endpoint, secret = services().outbound.endpoints.add(body.url, list(body.event_types), body.description)
    return reply(responses.WebhookEndpointWithSecret, {**endpoint, "secret": secret}), 201


@blueprint.get("/webhook-endpoints/<id:endpoint_id>")
def show_endpoint(endpoint_id: int):
    return reply(responses.WebhookEndpoint, services().outbound.endpoints.get(endpoint_id))


@blueprint.post("/webhook-endpoints/<id:endpoint_id>/disable")
def disable_endpoint(endpoint_id: int):
    body = _body(schemas.DisableEndpoint) if request.content_length else schemas.DisableEndpoint()
    return reply(responses.WebhookEndpoint, services().outbound.endpoints.set_enabled(endpoint_id, False, body.reason))


@blueprint.post("/webhook-endpoints/<id:endpoint_id>/enable")
def enable_endpoint(endpoint_id: int):
    return reply(responses.WebhookEndpoint, services().outbound.endpoints.set_enabled(endpoint_id, True))


@blueprint.post("/webhook-endpoints/<id:endpoint_id>/rotate-secret")
def rotate_endpoint_secret(endpoint_id: int):
    """The new secret, shown this once; the old one is signed with too until previous_secret_expires_at."""
    endpoint, secret = services().outbound.endpoints.rotate_secret(endpoint_id)
    return reply(responses.WebhookEndpointWithSecret, {**endpoint, "secret": secret})


@blueprint.post("/webhook-endpoints/<id:endpoint_id>/test")
def test_endpoint(endpoint_id: int):
    svc = services()
    delivery_id = svc.outbound.endpoints.test(endpoint_id)
    svc.send_deliveries([delivery_id])
    return reply(responses.TestDelivery, {"delivery_id": delivery_id}), 202


@blueprint.get("/webhook-endpoints/<id:endpoint_id>/deliveries")
def endpoint_deliveries(endpoint_id: int):
    return reply(responses.DeliveryList, {"deliveries": services().outbound.endpoints.deliveries(endpoint_id)})


@blueprint.post("/webhook-endpoints/<id:endpoint_id>/replay")
def replay_deliveries(endpoint_id: int):
    body = _body(schemas.ReplayDeliveries)
    svc = services()
    outbound = svc.outbound
    ids = [i for i in outbound.replayable(endpoint_id, message_id=body.message_id, since=body.since, until=body.until)
           if outbound.reopen(i)]
    svc.send_deliveries(ids)
    return reply(responses.Replayed, {"replayed": len(ids), "delivery_ids": ids}), 202
