"""The JSON API for the application that sells credits. Every route needs the bearer token."""

from __future__ import annotations

import hmac

from flask import Blueprint, request

from models import ledger
from receiver.errors import error
from receiver.services import services

blueprint = Blueprint("api", __name__)


@blueprint.before_request
def require_token():
    token = services().settings.api_token
    if not token:
        return error(503, "api_disabled", "API_TOKEN is not set, so the API is closed")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), token.encode()
    ):
        response = error(401, "unauthorized", "send Authorization: Bearer <API_TOKEN>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="payhooks"'
        return response
    return None


@blueprint.get("/users/<user_id>/credits")
def user_credits(user_id: str):
    with services().database.transaction() as session:
        return ledger.account_summary(session, user_id)
