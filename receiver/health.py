"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint

from receiver.services import services

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    return {"status": "ok"}


@blueprint.get("/readyz")
def readyz():
    svc = services()
    checks = {
        "redis": _check(lambda: svc.publisher.ping()),
        "database": _check(lambda: svc.database.ping()),
    }
    ready = all(value == "ok" for value in checks.values())
    if ready:
        return {"ready": True, "checks": checks}
    failing = ", ".join(name for name, value in checks.items() if value != "ok")
    return {"ready": False, "checks": checks, "message": f"not ready: {failing}"}, 503


def _check(probe) -> str:
    try:
        probe()
    except Exception as exc:  # any failure means not ready; the class says which kind
        return f"unavailable ({exc.__class__.__name__})"
    return "ok"
