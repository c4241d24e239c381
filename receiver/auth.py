"""Bearer tokens: /api wants API_TOKEN, /metrics wants METRICS_TOKEN when one is set."""

from __future__ import annotations

import hmac

from flask import request

from receiver.errors import error


def bearer_matches(token: str) -> bool:
    """True if the request carries ``Authorization: Bearer <token>`` (compared in constant time)."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def unauthorized(variable: str, realm: str):
    response = error(401, "unauthorized", f"send Authorization: Bearer <{variable}>")
    response.headers["WWW-Authenticate"] = f'Bearer realm="{realm}"'
    return response
