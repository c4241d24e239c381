"""Sentry error reporting that does not collect what it would have to scrub.

``init_sentry(settings, component)`` is called once at each process's edge
(receiver, worker, beat). Without ``SENTRY_DSN`` it does nothing at all: no
client, no patching, no network.

This process handles signing secrets, API keys and tokens, and signed webhook
bodies full of customer e-mails, names, addresses and card details. Sentry, left
to its defaults, collects request headers and bodies, every frame's local
variables, Celery task arguments, ``sys.argv`` and what the auto-enabled
integrations see (Redis commands, SQL). So the client is told not to collect
them (``data_collection``, the successor of ``send_default_pii``):

* requests: no body, no cookies, no query string, and only the headers named in
  ``_HEADERS`` (never Authorization, Stripe-Signature or PayPal's signature
  headers); no user;
* exceptions: types, messages and stack frames with their source lines, no
  local variables;
* Celery: the task name and id, not its arguments (and Celery's own repr of
  them is id-only, tasks/base.py); no Redis or SQL data, no command line;
* only the integrations named here, plus the SDK's defaults minus ``argv``.

What cannot be switched off is text written by code we do not control: an
exception message from a library, a log message. Ours carry ids, never payloads
(models/db.py keeps PostgreSQL's DETAIL, which quotes rows, out of exception
messages). ``before_send`` is the last line for the rest: it masks values whose
shape gives them away — e-mail addresses, Stripe secrets and keys, signatures,
bearer credentials — in those free-text fields.

The canary suite (tests/support/leaks.py) runs every integration and fault test
with customer data and secrets in every event and searches every envelope a
fake Sentry receives.
"""

from __future__ import annotations

import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.argv import ArgvIntegration
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.flask import FlaskIntegration

from infra.settings import Settings

FILTERED = "[Filtered]"

# Request headers worth seeing in an error report; every other header is filtered.
_HEADERS = ["content-type", "content-length", "user-agent", "host", "accept", "x-request-id"]

_OFF = {"mode": "off"}
DATA_COLLECTION: dict[str, Any] = {
    "user_info": False,
    "cookies": _OFF,
    "http_headers": {"request": {"mode": "allowlist", "terms": _HEADERS}},
    "http_bodies": [],
    "url_query_params": _OFF,
    "graphql": {"document": False, "variables": False},
    "gen_ai": {"inputs": False, "outputs": False},
    "database_query_data": False,
    "queues": False,
    "stack_frame_variables": False,
}


def init_sentry(settings: Settings, component: str, *, transport: Any = None) -> bool:
    """Start Sentry for this process if SENTRY_DSN is set; return whether it did.

    ``component`` ("web", "worker", ...) becomes a tag on every event.
    ``transport`` is for tests that keep envelopes in memory.
    """
    if not settings.sentry_dsn:
        # Do not call sentry_sdk.init at all: without a dsn it would fall back to
        # reading SENTRY_DSN from the environment itself.
        return False
    options: dict[str, Any] = {
        "dsn": settings.reveal("sentry_dsn"),
        # No tracing, so no trace headers in every Celery message either.
        "integrations": [FlaskIntegration(), CeleryIntegration(propagate_traces=False)],
        "auto_enabling_integrations": False,
        "disabled_integrations": [ArgvIntegration()],
        "data_collection": DATA_COLLECTION,
        # Read by code paths that do not consult data_collection (log records' stacks).
        "include_local_variables": False,
        "max_request_body_size": "never",
        "before_send": before_send,
    }
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(**options)
    # The global scope, not sentry_sdk.set_tag (the isolation scope): request and
    # task scopes are forked per thread/request and would not all see it.
    sentry_sdk.get_global_scope().set_tag("component", component)
    return True


_GIVEAWAYS = re.compile(
    r"[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"  # e-mail addresses
    r"|whsec_\w+|\b[rs]k_(?:live|test)_\w+"  # Stripe signing secrets and API keys
    r"|\bt=\d+,v1=[0-9a-fA-F]+|\bv1=[0-9a-fA-F]{16,}"  # Stripe-Signature values
    r"|\b(?i:bearer|basic)\s+[\w.~+/=-]{8,}"  # HTTP credentials
)


def mask(text: Any) -> Any:
    """Text with every value that looks like an e-mail, key, signature or credential masked."""
    return _GIVEAWAYS.sub(FILTERED, text) if isinstance(text, str) else text


def before_send(event: dict, hint: dict) -> dict:
    """Mask giveaway values in an event's free text: exception and log messages."""
    for error in (event.get("exception") or {}).get("values") or ():
        error["value"] = mask(error.get("value"))
    entry = event.get("logentry")
    if isinstance(entry, dict):
        for key in ("message", "formatted"):
            entry[key] = mask(entry.get(key))
        params = entry.get("params")
        if isinstance(params, list):
            entry["params"] = [mask(param) for param in params]
        elif isinstance(params, dict):
            entry["params"] = {key: mask(param) for key, param in params.items()}
    if "message" in event:
        event["message"] = mask(event["message"])
    for crumb in (event.get("breadcrumbs") or {}).get("values") or ():
        crumb["message"] = mask(crumb.get("message"))
    return event
