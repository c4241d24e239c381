"""Sentry error reporting, with everything secret or personal scrubbed before it leaves.

``init_sentry(settings, component)`` is called once at each process's edge
(receiver, worker, beat, CLI). Without ``SENTRY_DSN`` it does nothing at all: no
client, no patching that does anything, no network.

Why scrub so hard: this process handles webhook signing secrets, Stripe API keys,
the API token, signed webhook bodies (which carry customer e-mails, names,
addresses and card details such as last4 and fingerprint) and their
``Stripe-Signature`` headers. Sentry collects far more than the exception: local
variables of every frame, the source lines around them, log messages and their
arguments, breadcrumbs, request headers and bodies, Celery task arguments. Any of
these may hold a secret, and Sentry is a third party. The SDK's own defaults
(``send_default_pii=False``, its EventScrubber denylist) stop some of it but not
all: they let ``Stripe-Signature`` through, know nothing of ``whsec_``/``sk_live_``
values or card numbers, and do not look inside strings. So:

* the client is configured not to collect request bodies
  (``max_request_body_size="never"``) nor default PII (``send_default_pii=False``),
  and no performance data (``traces_sample_rate=0``);
* every error/message event goes through ``scrub_event`` (``before_send``, and
  ``before_send_transaction`` too in case tracing is ever turned on) and every
  breadcrumb through ``scrub_breadcrumb`` (``before_breadcrumb``). Both walk the
  whole structure recursively: request (url, query string, headers, cookies,
  body, env), user, extra, contexts, tags, breadcrumbs, exception values and
  stack-frame local variables (``vars``) and source lines, log entries (message,
  params, formatted).

What is removed (replaced by ``[Filtered]``):

* by key name, anywhere: request bodies (``request.data``) and cookies; keys
  that name a raw body (``payload``, ``body``, ``raw``, ``raw_body``...), and
  ``data`` when it holds a string or something shaped like a Stripe object;
  anything whose name contains secret, token, signature, password, passwd, key,
  auth, cookie, session, csrf, credential, dsn or private (so the headers
  ``Stripe-Signature``, ``Authorization``, ``Cookie``, ``X-Api-Key``); card-like
  fields (``card``, ``number``, ``last4``, ``exp_month``, ``exp_year``, ``cvc``,
  ``cvv``, ``fingerprint``); personal fields (``email``, ``phone``, ``address``,
  ``ip_address``, ``remote_addr``, ``x_forwarded_for``...); everything in ``user``
  except its ``id``;
* by value, inside any string: raw webhook bodies (JSON or Python-repr text with
  a Stripe ``"object": "..."`` marker, ``livemode`` or ``api_version``: the
  braces are cut out, the text around them kept; a string that is a whole JSON
  document goes entirely), ``whsec_...`` secrets, ``sk_``/``rk_``/``ek_``
  ``live``/``test`` keys, ``Bearer``/``Basic`` credentials, ``t=...,v1=...``
  signature headers and ``v1=<hex>`` signatures, bare SHA-256 hex digests,
  header lines such as ``Authorization: ...``, ``name=value`` pairs whose name
  looks secret, passwords in URLs, e-mail addresses (also percent-encoded), and
  card numbers (13-19 digits, spaces or dashes allowed, passing the Luhn check;
  also as integers).

What is kept, so an error stays useful: event ids (``evt_...``), Celery task ids,
exception types, and the rest of every message once the above is cut out.

The scrubbers never raise: on any internal error they drop the event or
breadcrumb (return ``None``) rather than risk sending it unscrubbed.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.utils import AnnotatedValue

from workers.settings import Settings

FILTERED = "[Filtered]"
_MAX_DEPTH = 64

# -- init ---------------------------------------------------------------------


def init_sentry(settings: Settings, component: str, *, transport: Any = None) -> bool:
    """Start Sentry for this process if SENTRY_DSN is set; return whether it did.

    ``component`` ("receiver", "worker", "beat", ...) becomes a tag on every
    event. ``transport`` is for tests: a ``sentry_sdk.transport.Transport``
    instance or subclass that receives the envelopes instead of the network.
    """
    dsn = settings.sentry_dsn
    if not dsn:
        # Do not call sentry_sdk.init at all: without a dsn it would fall back to
        # reading SENTRY_DSN from the environment itself.
        return False
    options: dict[str, Any] = {
        "dsn": dsn,
        "integrations": [FlaskIntegration(), CeleryIntegration()],
        "send_default_pii": False,
        "max_request_body_size": "never",
        "before_send": scrub_event,
        # No transactions are sampled (traces_sample_rate=0); should that change,
        # they are scrubbed like errors.
        "before_send_transaction": scrub_event,
        "before_breadcrumb": scrub_breadcrumb,
        "traces_sample_rate": 0,
    }
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(**options)
    # The global scope, not sentry_sdk.set_tag (the isolation scope): request and
    # task scopes are forked per thread/request and would not all see it.
    sentry_sdk.get_global_scope().set_tag("component", component)
    return True


# -- entry points -------------------------------------------------------------


def scrub_event(event: Any, hint: Any) -> Any:
    """``before_send``: the event with secrets and personal data removed, or None."""
    try:
        if not isinstance(event, Mapping):
            return None
        scrubbed = {}
        for key, value in event.items():
            if key == "request":
                scrubbed[key] = _scrub_request(value, 1)
            elif key == "user":
                scrubbed[key] = _scrub_user(value, 1)
            elif key == "_meta":
                # The SDK's annotations (lengths, removal reasons): structure only.
                scrubbed[key] = _scrub(value, 1, check_keys=False)
            else:
                # Top-level keys are Sentry's own (fingerprint, release, ...):
                # scrub what they hold, but do not judge them by name.
                scrubbed[key] = _scrub(value, 1)
        return scrubbed
    except Exception:  # noqa: BLE001 - never raise into the SDK; never send unscrubbed
        return None


def scrub_breadcrumb(crumb: Any, hint: Any) -> Any:
    """``before_breadcrumb``: the breadcrumb with secrets and personal data removed, or None."""
    try:
        if not isinstance(crumb, Mapping):
            return None
        return {key: _scrub(value, 1, key=key) for key, value in crumb.items()}
    except Exception:  # noqa: BLE001
        return None


# -- key names ----------------------------------------------------------------

_SECRET_NAME_PARTS = (
    "secret",
    "token",
    "signature",
    "password",
    "passwd",
    "passphrase",
    "key",
    "auth",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "credential",
    "dsn",
    "private",
)
_BODY_NAMES = frozenset(
    {"payload", "body", "raw", "raw_body", "request_body", "raw_payload", "webhook_body", "content"}
)
_CARD_TOKENS = frozenset({"card", "cvc", "cvv", "cvc2", "cvv2", "last4", "fingerprint", "pan"})
_CARD_NAMES = frozenset({"number", "exp_month", "exp_year", "expiry", "expiration", "iin"})
_PERSONAL_TOKENS = frozenset({"email", "phone", "address", "addr", "ssn", "dob", "birthdate"})
_PERSONAL_NAMES = frozenset(
    {
        "ip",
        "ip_address",
        "remote_addr",
        "x_forwarded_for",
        "x_real_ip",
        "forwarded",
        "shipping",
        "billing_details",
        "customer_details",
        "customer_email",
        "customer_name",
        "username",
    }
)

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _normal(name: str) -> str:
    return _NON_ALNUM.sub("_", _CAMEL.sub(r"\1_\2", name).lower()).strip("_")


def _filtered_name(name: Any) -> bool:
    """Whether a key's value goes wholesale, whatever it holds."""
    if not isinstance(name, str):
        return False
    norm = _normal(name)
    if not norm:
        return False
    flat = norm.replace("_", "")
    if any(part in flat for part in _SECRET_NAME_PARTS):
        return True
    if norm in _BODY_NAMES or norm in _CARD_NAMES or norm in _PERSONAL_NAMES:
        return True
    tokens = set(norm.split("_"))
    return bool(tokens & _CARD_TOKENS or tokens & _PERSONAL_TOKENS)


# -- values -------------------------------------------------------------------

_SAFE_SCALARS = (
    bool,
    float,
    type(None),
    _dt.datetime,
    _dt.date,
    _dt.time,
    _dt.timedelta,
    decimal.Decimal,
    uuid.UUID,
)


def _scrub(value: Any, depth: int, *, key: Any = None, check_keys: bool = True) -> Any:
    if depth > _MAX_DEPTH:
        return FILTERED
    if check_keys and key is not None:
        if _filtered_name(key):
            return FILTERED
        if isinstance(key, str) and _normal(key) == "data" and _is_body_like(value):
            return FILTERED
        if isinstance(key, str) and _normal(key) == "headers":
            return _scrub_headers(value, depth)
    if isinstance(value, str):
        return _scrub_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _scrub_string(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, int) and not isinstance(value, bool):
        return FILTERED if _is_card_number(str(abs(value))) else value
    if isinstance(value, _SAFE_SCALARS):
        return value
    if isinstance(value, AnnotatedValue):
        return AnnotatedValue(_scrub(value.value, depth + 1, check_keys=check_keys), value.metadata)
    if isinstance(value, Mapping):
        return {k: _scrub(v, depth + 1, key=k, check_keys=check_keys) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub(item, depth + 1, check_keys=check_keys) for item in value]
    # Anything else (only in breadcrumbs, before the SDK serializes): its repr.
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        return FILTERED
    return _scrub_string(text)


def _scrub_request(request: Any, depth: int) -> Any:
    if not isinstance(request, Mapping):
        return _scrub(request, depth)
    scrubbed = {}
    for key, value in request.items():
        norm = _normal(key) if isinstance(key, str) else ""
        if norm in ("data", "body", "cookies"):
            # Bodies never go, whatever the SDK options say; cookies neither.
            scrubbed[key] = FILTERED if value not in (None, "", {}) else value
        elif norm == "query_string" and isinstance(value, str):
            scrubbed[key] = _scrub_query_string(value)
        else:
            scrubbed[key] = _scrub(value, depth + 1, key=key)
    return scrubbed


def _scrub_user(user: Any, depth: int) -> Any:
    if not isinstance(user, Mapping):
        return _scrub(user, depth)
    return {
        key: (_scrub(value, depth + 1) if key == "id" else FILTERED) for key, value in user.items()
    }


def _scrub_headers(headers: Any, depth: int) -> Any:
    if isinstance(headers, Mapping):
        return {k: _scrub(v, depth + 1, key=k) for k, v in headers.items()}
    if isinstance(headers, (list, tuple)):
        # Sentry also accepts [[name, value], ...].
        pairs = []
        for pair in headers:
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                name, value = pair
                pairs.append([_scrub(name, depth + 1), _scrub(value, depth + 1, key=name)])
            else:
                pairs.append(_scrub(pair, depth + 1))
        return pairs
    return _scrub(headers, depth)


def _scrub_query_string(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        plain_name = unquote_plus(name)
        if _filtered_name(plain_name):
            parts.append(f"{_scrub_string(plain_name)}{sep}{FILTERED}")
        else:
            parts.append(f"{_scrub_string(plain_name)}{sep}{_scrub_string(unquote_plus(value))}")
    return "&".join(parts)


# -- strings ------------------------------------------------------------------

# A Stripe object (or a webhook body) as JSON or as a Python repr.
_Q = r"""\\?["']"""
_BODY_MARKER = re.compile(
    rf"{_Q}object{_Q}\s*:\s*{_Q}[a-z_.]+{_Q}"
    rf"|{_Q}livemode{_Q}\s*:"
    rf"|{_Q}api_version{_Q}\s*:"
    rf"|\bdata{_Q}?\s*[:=]\s*\{{\s*{_Q}object{_Q}"
)

_SECRET_NAME = r"[\w.-]*(?:secret|token|password|passwd|api[_-]?key|signature|authorization)[\w.-]*"
_SECRET_VALUE = r"(?!\[Filtered\])[^\s\"',;&)}\]\\]+"

_STRING_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header lines in a repr of request headers: "Authorization: ...\r\n".
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization|(?:set-)?cookie|stripe-signature|x-api-key)"
            r"(\s*:\s*)[^\r\n]*"
        ),
        rf"\1\2{FILTERED}",
    ),
    # Stripe-Signature values: t=<unix>,v1=<hex>[,v0=<hex>...], and lone v1=<hex>.
    (re.compile(r"\bt=\d+(?:\s*,\s*v\d+=[0-9A-Za-z]*)+"), FILTERED),
    (re.compile(r"\bv\d+=[0-9a-fA-F]{8,}"), FILTERED),
    # Stripe secrets and keys.
    (re.compile(r"whsec_[A-Za-z0-9_+/=-]*"), FILTERED),
    (re.compile(r"\b(?:sk|rk|ek)_(?:live|test)_[A-Za-z0-9_]*"), FILTERED),
    # HTTP credentials.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\1{FILTERED}"),
    (re.compile(r"\b(Basic\s+)[A-Za-z0-9+/=]{8,}"), rf"\1{FILTERED}"),
    # name=value, and 'name': 'value' (a dict's repr, JSON), where the name looks secret.
    # (Not "Name: value" in prose: "SignatureError: timestamp too old" must stay.)
    (re.compile(rf"(?i)\b({_SECRET_NAME}=\\?[\"']?){_SECRET_VALUE}"), rf"\1{FILTERED}"),
    (
        re.compile(rf"(?i)(\\?[\"']{_SECRET_NAME}\\?[\"']\s*:\s*\\?[\"']?){_SECRET_VALUE}"),
        rf"\1{FILTERED}",
    ),
    # Passwords in URLs: scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@"), rf"\1{FILTERED}@"),
    # Bare HMAC-SHA256 digests (a computed signature in a local variable).
    (re.compile(r"\b[0-9a-fA-F]{64,}\b"), FILTERED),
    # E-mail addresses.
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), FILTERED),
)

_CARD_CANDIDATE = re.compile(r"(?<!\w)(?<!\d[ -])(?:\d[ -]?){12,18}\d(?![ -]?\d)")
_NOT_DIGIT = re.compile(r"\D")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _is_card_number(text: str) -> bool:
    digits = _NOT_DIGIT.sub("", text)
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _mask_cards(text: str) -> str:
    return _CARD_CANDIDATE.sub(
        lambda m: FILTERED if _is_card_number(m.group()) else m.group(), text
    )


def _is_json_document(text: str) -> bool:
    stripped = text.strip()
    if len(stripped) < 2 or stripped[0] not in "{[":
        return False
    try:
        parsed = json.loads(stripped)
    except ValueError:
        return False
    return bool(parsed) and isinstance(parsed, (dict, list))


def _cut_bodies(text: str) -> str:
    """Cut each webhook body out of a string, from its outermost brace to the last one; keep the rest."""
    while True:
        marker = _BODY_MARKER.search(text)
        if marker is None:
            return text
        start, depth = -1, 0
        for index in range(marker.end() - 1, -1, -1):
            char = text[index]
            if char == "}":
                depth += 1
            elif char == "{":
                if depth:
                    depth -= 1
                else:
                    start = index  # encloses the marker; look for an outer one
        if start == -1:
            return FILTERED  # a body without its opening brace: take it all
        end = text.rfind("}")
        end = len(text) if end < marker.end() else end + 1
        text = text[:start] + FILTERED + text[end:]


def _scrub_string(text: str) -> str:
    if not text:
        return text
    if _is_json_document(text):
        return FILTERED
    text = _cut_bodies(text)
    for pattern, replacement in _STRING_PATTERNS:
        text = pattern.sub(replacement, text)
    text = _mask_cards(text)
    if "%" in text:
        decoded = unquote_plus(text)
        if decoded != text:
            rescrubbed = _scrub_string(decoded)
            if rescrubbed != decoded:  # something was hidden in percent-encoding
                return rescrubbed
    return text


def _is_body_like(value: Any) -> bool:
    """Whether a ``data`` value is a raw body rather than structured breadcrumb data."""
    if isinstance(value, (str, bytes, bytearray)):
        return True
    if isinstance(value, Mapping):
        return "object" in value or "livemode" in value or "api_version" in value
    return False
