"""A local fake of the parts of Stripe's HTTP API that payhooks talks to.

The official ``stripe`` SDK works against it unchanged::

    with FakeStripe() as fake:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": fake.url})
        session = client.v1.checkout.sessions.create(params={...})
        event = fake.pay(session.id)          # checkout.session.completed
        client.v1.events.list(params={"types": ["checkout.session.completed"]})

What it serves (v1, form-encoded requests the way the SDK sends them):

- ``POST /v1/checkout/sessions``, ``GET /v1/checkout/sessions/<id>``,
  ``POST /v1/checkout/sessions/<id>/expire``
- ``GET /v1/events`` (newest first; ``created[gt|gte|lt|lte]``, ``type`` with ``*``
  wildcards, ``types[N]``, ``limit``, ``starting_after``, ``ending_before``),
  ``GET /v1/events/<id>``
- ``GET /v1/checkout/sessions/<id>/line_items`` (``expand[]=data.price.product``,
  ``limit``, ``starting_after``, ``ending_before``), for sessions created through
  the API and for sessions registered with ``add_session`` (a Payment Link's,
  with no metadata)
- ``GET /v1/payment_intents/<id>`` for the payment intents ``pay()`` creates or
  ``add_payment_intent`` registers
- ``POST /v1/webhook_endpoints``, ``GET /v1/webhook_endpoints`` (newest first,
  paginated), ``GET|POST|DELETE /v1/webhook_endpoints/<id>``: the ``secret`` is
  returned only by the create call, ``api_version`` and ``enabled_events`` must
  be ones Stripe knows (the SDK's generated literals), and ``api_version`` cannot
  be changed by an update (as on Stripe, it is an unknown parameter there)

Every object starts as a deep copy of Stripe's published fixture of its kind
(``tests/fixtures/stripe/objects.json``, with canary customer data in:
tests/support/canaries.py); only the fields a scenario decides are changed. Errors use Stripe's envelope ``{"error": {"type", "message", "code",
"param", ...}}`` and every response carries a ``Request-Id`` header.

Behaviour copied from Stripe on purpose, because client code must cope with it:

- ``Authorization: Bearer sk_test_…`` (or HTTP basic with the key as user) is
  required; anything else is a 401.
- Unknown top-level parameters are a 400 ``Received unknown parameter: x`` (the
  allowed names come from the SDK's own generated ``*Params`` types), as are
  unknown keys inside ``line_items``.
- ``Idempotency-Key`` on POST: the first successful (2xx) response is stored per
  API key and replayed (with ``Idempotent-Replayed: true``) for the same method,
  path and parameters; the same key with other parameters is a 400
  ``idempotency_error``. Failures injected with ``fail_next``/``outage`` happen
  before the endpoint runs, so they are never stored — exactly what lets an SDK
  retry (which reuses its key) succeed.
- Cursors (``starting_after``/``ending_before``) are positions in the listing,
  so events added while a client pages are not returned mid-walk.

Not modelled: sessions never expire by the clock, no other events are emitted
than the checkout ones named below, ``expand`` supports only ``payment_intent``
on a session and ``data.price.product`` on line items, ``line_items[N][price]``
needs a price added with ``add_price`` (and ``price_data[product]`` a product
added with ``add_product``), and webhook endpoints never deliver anything.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import string
import threading
import time
import traceback
from collections import namedtuple
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask, Response, request

from tests.support.canaries import load_fixtures
from tests.support.local_server import LocalServer

# Stripe's example objects with canary customer data (tests/support/canaries.py).
FIXTURES: dict[str, dict] = load_fixtures()

try:  # the version the installed SDK pins; events carry it as Stripe's do
    from stripe._api_version import _ApiVersion

    DEFAULT_API_VERSION = _ApiVersion.CURRENT
except (ImportError, AttributeError):  # pragma: no cover - the SDK is a project dependency
    DEFAULT_API_VERSION = "2026-10-28.endive"

SESSION_LIFETIME = 24 * 3600
MIN_SESSION_LIFETIME = 30 * 60
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 10

# Keys of the SDK's RequestOptions: they belong in ``options=``, never in
# ``params=``. Passed as params, the SDK sends them as form fields and Stripe
# answers "Received unknown parameter" — and so does this fake.
_REQUEST_OPTION_KEYS = frozenset(
    {
        "api_key",
        "content_type",
        "headers",
        "idempotency_key",
        "max_network_retries",
        "stripe_account",
        "stripe_context",
        "stripe_version",
    }
)


def _sdk_param_names(module: str, name: str, fallback: set[str]) -> frozenset[str]:
    """Top-level parameter names of an endpoint, from the SDK's generated types."""
    try:
        import importlib

        params_type = getattr(importlib.import_module(module), name)
        names = set()
        for klass in reversed(params_type.__mro__):
            names.update(getattr(klass, "__annotations__", {}))
        return frozenset(names - _REQUEST_OPTION_KEYS) or frozenset(fallback)
    except (ImportError, AttributeError):  # pragma: no cover - older SDK layouts
        return frozenset(fallback)


SESSION_CREATE_PARAMS = _sdk_param_names(
    "stripe.params.checkout",
    "SessionCreateParams",
    {
        "cancel_url", "client_reference_id", "currency", "customer", "customer_email",
        "expand", "expires_at", "line_items", "locale", "metadata", "mode",
        "payment_intent_data", "payment_method_types", "submit_type", "subscription_data",
        "success_url", "ui_mode",
    },
)  # fmt: skip
EVENT_LIST_PARAMS = _sdk_param_names(
    "stripe.params",
    "EventListParams",
    {"created", "delivery_success", "ending_before", "expand", "limit", "starting_after", "type", "types"},
)  # fmt: skip
LINE_ITEM_LIST_PARAMS = _sdk_param_names(
    "stripe.params.checkout",
    "SessionLineItemListParams",
    {"ending_before", "expand", "limit", "starting_after"},
)
WEBHOOK_ENDPOINT_CREATE_PARAMS = _sdk_param_names(
    "stripe.params",
    "WebhookEndpointCreateParams",
    {"api_version", "connect", "description", "enabled_events", "expand", "metadata", "url"},
)
WEBHOOK_ENDPOINT_UPDATE_PARAMS = _sdk_param_names(
    "stripe.params",
    "WebhookEndpointUpdateParams",
    {"description", "disabled", "enabled_events", "expand", "metadata", "url"},
)
WEBHOOK_ENDPOINT_LIST_PARAMS = _sdk_param_names(
    "stripe.params",
    "WebhookEndpointListParams",
    {"ending_before", "expand", "limit", "starting_after"},
)


def _sdk_literal(module: str, name: str, field: str) -> frozenset[str]:
    """The values a parameter may take, from the Literal in the SDK's generated types."""
    import importlib
    from typing import get_args, get_origin

    try:
        annotation = getattr(importlib.import_module(module), name).__annotations__[field]
    except (ImportError, AttributeError, KeyError):  # pragma: no cover - older SDK layouts
        return frozenset()
    values: set[str] = set()
    stack = [annotation]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            values.add(node)
        elif get_origin(node) is not None or get_args(node):
            stack.extend(get_args(node))
    return frozenset(values)


# Every event type and API version Stripe accepts for a webhook endpoint.
EVENT_TYPES = _sdk_literal("stripe.params", "WebhookEndpointCreateParams", "enabled_events")
API_VERSIONS = _sdk_literal("stripe.params", "WebhookEndpointCreateParams", "api_version")
MAX_WEBHOOK_ENDPOINTS = 16  # per account, as on Stripe

LINE_ITEM_PARAMS = frozenset(
    {"adjustable_quantity", "dynamic_tax_rates", "metadata", "price", "price_data", "quantity", "tax_rates"}
)  # fmt: skip
PRICE_DATA_PARAMS = frozenset(
    {"currency", "product", "product_data", "recurring", "tax_behavior", "unit_amount", "unit_amount_decimal"}
)  # fmt: skip
PRODUCT_DATA_PARAMS = frozenset(
    {"description", "images", "metadata", "name", "tax_code", "unit_label"}
)
# Simple string fields of the request that the session object shows as given.
_ECHOED_SESSION_FIELDS = (
    "billing_address_collection",
    "customer",
    "customer_creation",
    "customer_email",
    "locale",
    "origin_context",
    "submit_type",
    "ui_mode",
)

_ALPHANUM = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHANUM) for _ in range(length))


class StripeAPIError(Exception):
    """An error answered in Stripe's envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}


def _invalid(message: str, param: str | None = None, code: str | None = None) -> StripeAPIError:
    return StripeAPIError(
        400,
        message,
        param=param,
        code=code or ("parameter_unknown" if message.startswith("Received unknown") else None),
    )


def _missing(kind: str, object_id: str, param: str) -> StripeAPIError:
    return StripeAPIError(
        404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
    )


class RecordedRequest(namedtuple("_RecordedRequest", "method path params")):
    """One API request as the fake received it: a ``(method, path, params)`` tuple.

    ``params`` are decoded the way Stripe reads them (``metadata[user_id]=u`` →
    ``{"metadata": {"user_id": "u"}}``, ``types[0]=a`` → ``{"types": ["a"]}``); every
    leaf value is the string that was sent. Extra attributes: ``headers`` (a plain
    dict), ``idempotency_key``, ``api_key`` and ``status`` (the status answered).
    """

    def __new__(
        cls, method: str, path: str, params: dict, *, headers: dict[str, str] | None = None
    ):
        self = super().__new__(cls, method, path, params)
        self.headers = dict(headers or {})
        lowered = {k.lower(): v for k, v in self.headers.items()}
        self.idempotency_key = lowered.get("idempotency-key")
        self.api_key = None
        self.status = None
        return self


# -- form decoding -------------------------------------------------------------

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def decode_params(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding back into nested dicts and lists.

    ``a[b][0][c]=1`` → ``{"a": {"b": [{"c": "1"}]}}``; ``expand[]=x`` appends.
    Dicts whose keys are all indices become lists, except under ``metadata``
    (where "0" is an ordinary key).
    """
    root: dict = {}
    for key, value in pairs:
        match = _KEY_RE.match(key)
        if not match:
            raise _invalid(f"Invalid parameter name: {key}")
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for depth, part in enumerate(path):
            if part == "":
                part = str(len(node))
            if depth == len(path) - 1:
                if isinstance(node.get(part), dict):
                    raise _invalid(f"Invalid value for {key}: expected a hash or array")
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    if child == "":  # "metadata=" followed by "metadata[x]=": the latter wins
                        child = node[part] = {}
                    else:
                        raise _invalid(f"Invalid hash or array: {key}")
                node = child
    return _listify(root)


def _listify(value: Any, key: str | None = None) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v, k) for k, v in value.items()}
    if key != "metadata" and converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _param_path(*parts: Any) -> str:
    head, *rest = parts
    return str(head) + "".join(f"[{p}]" for p in rest)


def _reject_unknown(params: dict, allowed: frozenset[str] | set[str], *prefix: Any) -> None:
    for name in params:
        if name not in allowed:
            raise _invalid(
                f"Received unknown parameter: {_param_path(*prefix, name)}",
                _param_path(*prefix, name),
            )


def _int(value: Any, param: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, (dict, list)):
        raise _invalid(f"Invalid integer: {param} must be an integer", param)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _invalid(f"Invalid integer: {value}", param) from None
    if minimum is not None and number < minimum:
        raise _invalid(
            f"This value must be greater than or equal to {minimum} (it currently is '{number}').",
            param,
        )
    if maximum is not None and number > maximum:
        raise _invalid(
            f"This value must be less than or equal to {maximum} (it currently is '{number}').",
            param,
        )
    return number


def _str(value: Any, param: str, *, max_length: int | None = None) -> str:
    if isinstance(value, (dict, list)):
        raise _invalid(f"Invalid string: {param} must be a string", param)
    if max_length is not None and len(value) > max_length:
        raise _invalid(
            f"Invalid string: {value[:40]}...; must be at most {max_length} characters", param
        )
    return value


def _hash(value: Any, param: str) -> dict:
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"Invalid hash: {param} must be a hash", param)
    return value


def _array(value: Any, param: str) -> list:
    if value == "":
        return []
    if not isinstance(value, list):
        raise _invalid(f"Invalid array: {param} must be an array", param)
    return value


def _metadata(value: Any, param: str) -> dict[str, str]:
    metadata = _hash(value, param)
    if len(metadata) > 50:
        raise _invalid("Invalid metadata: metadata can have up to 50 keys", param)
    result = {}
    for key, item in metadata.items():
        item = _str(item, _param_path(param, key))
        if len(key) > 40:
            raise _invalid(f"Invalid metadata key: {key!r} is longer than 40 characters", param)
        if len(item) > 500:
            raise _invalid(f"Invalid metadata value for {key!r}: longer than 500 characters", param)
        if item != "":  # an empty value unsets the key, as on Stripe
            result[key] = item
    return result


def _expand(params: dict, supported: set[str]) -> list[str]:
    paths = [_str(p, "expand") for p in _array(params.get("expand", []), "expand")]
    for path in paths:
        if path not in supported:
            raise _invalid(f"This property cannot be expanded ({path}) by FakeStripe.", "expand")
    return paths


# -- the fake ---------------------------------------------------------------------


class FakeStripe(LocalServer):
    name = "fake-stripe"

    """Stripe's checkout-session and event API, served on 127.0.0.1 for tests.

    State (``sessions``, ``events``, ``payment_intents``, ``prices``, ``requests``)
    lives in plain attributes guarded by ``lock``; read them freely, and hold the
    lock when changing them while requests may be in flight.
    """

    def __init__(self, *, api_version: str = DEFAULT_API_VERSION):
        self.api_version = api_version
        self.lock = threading.RLock()
        self.sessions: dict[str, dict] = {}
        self.events: list[dict] = []  # in the order recorded; the API lists newest first
        self.payment_intents: dict[str, dict] = {}
        self.prices: dict[str, dict] = {}
        self.products: dict[str, dict] = {}
        self.line_items: dict[str, list[dict]] = {}  # per session, ``price.product`` as an id
        # webhook endpoints in creation order (the API lists them newest first)
        self.webhook_endpoints: dict[str, dict] = {}
        self.endpoint_secrets: dict[str, str] = {}  # what the create call returned, for tests
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # tracebacks of the fake's own crashes (answered as 500s)
        self._private: dict[str, dict] = {}  # per session: line items, payment_intent_data
        self._event_order: dict[str, tuple[int, int]] = {}
        self._event_seq = 0
        self._idempotent: dict[tuple[str, str], dict] = {}
        self._fail_count = 0
        self._fail_status = 500
        self._fail_should_retry: bool | None = None
        self._outage_status: int | None = None
        self._outage_should_retry: bool | None = None
        self.latency = 0.0  # seconds every answer waits, outside the lock (slow(), for slow-provider tests)
        self.waiting = 0  # requests in that wait now
        self._app = self._build_app()
        self._routes: list[tuple[str, re.Pattern, Callable[..., tuple[int, dict]]]] = [
            ("POST", re.compile(r"/v1/checkout/sessions"), self._create_session),
            ("GET", re.compile(r"/v1/checkout/sessions/([^/]+)"), self._retrieve_session),
            (
                "POST",
                re.compile(r"/v1/checkout/sessions/([^/]+)/expire"),
                self._expire_session_endpoint,
            ),
            ("GET", re.compile(r"/v1/events"), self._list_events),
            ("GET", re.compile(r"/v1/events/([^/]+)"), self._retrieve_event),
            ("GET", re.compile(r"/v1/payment_intents/([^/]+)"), self._retrieve_payment_intent),
            (
                "GET",
                re.compile(r"/v1/checkout/sessions/([^/]+)/line_items"),
                self._list_line_items,
            ),
            ("POST", re.compile(r"/v1/webhook_endpoints"), self._create_webhook_endpoint),
            ("GET", re.compile(r"/v1/webhook_endpoints"), self._list_webhook_endpoints),
            ("GET", re.compile(r"/v1/webhook_endpoints/([^/]+)"), self._retrieve_webhook_endpoint),
            ("POST", re.compile(r"/v1/webhook_endpoints/([^/]+)"), self._update_webhook_endpoint),
            ("DELETE", re.compile(r"/v1/webhook_endpoints/([^/]+)"), self._delete_webhook_endpoint),
        ]

    def reset(self) -> None:
        """Forget every object, event, recorded request and injected failure."""
        with self.lock:
            self.sessions.clear()
            self.events.clear()
            self.payment_intents.clear()
            self.prices.clear()
            self.products.clear()
            self.line_items.clear()
            self.webhook_endpoints.clear()
            self.endpoint_secrets.clear()
            self.requests.clear()
            self.errors.clear()
            self._private.clear()
            self._event_order.clear()
            self._idempotent.clear()
            self._fail_count = 0
            self._outage_status = None

    # -- failure injection -------------------------------------------------

    def fail_next(
        self, count: int = 1, status: int = 500, *, should_retry: bool | None = None
    ) -> None:
        """Answer the next ``count`` API requests with ``status`` and an error envelope.

        The envelope's type is ``api_error`` (``rate_limit`` code on a 429). The SDK
        retries 409 and ≥ 500 when ``max_network_retries`` > 0; ``should_retry``
        sends ``Stripe-Should-Retry: true/false``, which the SDK obeys over the status.
        ``fail_next(0)`` cancels pending failures.
        """
        with self.lock:
            self._fail_count = count
            self._fail_status = status
            self._fail_should_retry = should_retry

    def slow(self, seconds: float) -> None:
        """Answer every request `seconds` late (0: at once again); requests wait side by side."""
        self.latency = seconds

    def outage(
        self, enabled: bool = True, status: int = 500, *, should_retry: bool | None = None
    ) -> None:
        """Fail every API request with ``status`` until ``outage(False)``."""
        with self.lock:
            self._outage_status = status if enabled else None
            self._outage_should_retry = should_retry

    # -- test-side control -----------------------------------------------

    def get_session(self, session_id: str) -> dict:
        """A copy of a session as the API would return it (KeyError if unknown)."""
        with self.lock:
            return copy.deepcopy(self.sessions[session_id])

    def get_event(self, event_id: str) -> dict:
        with self.lock:
            return copy.deepcopy(self.events[self._event_index(event_id)])

    def add_price(
        self,
        price_id: str,
        unit_amount: int,
        currency: str = "usd",
        *,
        recurring: dict | None = None,
        product: str | None = None,
        metadata: dict | None = None,
    ) -> dict:
        """Register a price so ``line_items[N][price]=price_id`` can refer to it.

        Its product (``product``, default ``prod_<price id>``) is registered too if new.
        """
        product_id = product or f"prod_{price_id}"
        with self.lock:
            if product_id not in self.products:
                self.add_product(product_id, price_id)
            price = self._price_object(
                price_id,
                unit_amount,
                currency.lower(),
                product_id,
                recurring=recurring,
                metadata=metadata,
            )
            self.prices[price_id] = price
        return copy.deepcopy(price)

    def add_product(self, product_id: str, name: str, *, metadata: dict | None = None) -> dict:
        """Register a product (``metadata`` is what a credit catalog may read)."""
        product = copy.deepcopy(FIXTURES["product"])
        product.update(
            id=product_id,
            name=name,
            description=None,
            metadata=dict(metadata or {}),
            default_price=None,
            images=[],
            package_dimensions=None,
            created=int(time.time()),
            updated=int(time.time()),
            livemode=False,
        )
        with self.lock:
            self.products[product_id] = product
        return copy.deepcopy(product)

    def add_session(self, session: dict, *, line_items: list[dict] | tuple[dict, ...] = ()) -> dict:
        """Register a session as given, with its line items, as if made outside the API.

        This is how a Payment Link's or Pricing Table's session exists: no metadata,
        only ``client_reference_id``, and what was bought is in the line items.
        ``line_items`` are ``item`` objects (``tests.support.stripe_events.line_item``);
        a price or product embedded in them is registered (an expanded product is
        stored once and served as an id unless ``expand[]=data.price.product``).
        """
        stored_items = []
        with self.lock:
            for item in line_items:
                item = copy.deepcopy(item)
                price = item["price"]
                product = price.get("product")
                if isinstance(product, dict):
                    self.products[product["id"]] = copy.deepcopy(product)
                    price["product"] = product["id"]
                self.prices.setdefault(price["id"], copy.deepcopy(price))
                stored_items.append(item)
            self.sessions[session["id"]] = copy.deepcopy(session)
            self.line_items[session["id"]] = stored_items
        return copy.deepcopy(session)

    def add_payment_intent(self, intent: dict) -> dict:
        """Register a PaymentIntent as given (PaymentIntent-only flows have no session)."""
        with self.lock:
            self.payment_intents[intent["id"]] = copy.deepcopy(intent)
        return copy.deepcopy(intent)

    def _price_object(
        self,
        price_id: str,
        unit_amount: int,
        currency: str,
        product_id: str,
        *,
        recurring: dict | None = None,
        metadata: dict | None = None,
    ) -> dict:
        price = copy.deepcopy(FIXTURES["price"])
        price.update(
            id=price_id,
            object="price",
            unit_amount=unit_amount,
            unit_amount_decimal=str(unit_amount),
            currency=currency,
            product=product_id,
            metadata=dict(metadata or {}),
            type="recurring" if recurring else "one_time",
            recurring=(
                {
                    "interval": "month",
                    "interval_count": 1,
                    "meter": None,
                    "trial_period_days": None,
                    "usage_type": "licensed",
                    **recurring,
                }
                if recurring
                else None
            ),
            billing_scheme="per_unit",
            transform_quantity=None,
            custom_unit_amount=None,
            created=int(time.time()),
            livemode=False,
        )
        return price

    def add_event(self, event: dict) -> dict:
        """Record any event as given (a deep copy); ``created`` defaults to now.

        Returns the stored copy. Events are listed newest ``created`` first, and
        among equal ``created`` the one recorded last first.
        """
        stored = copy.deepcopy(event)
        stored.setdefault("id", random_id("evt_"))
        stored.setdefault("object", "event")
        stored.setdefault("created", int(time.time()))
        with self.lock:
            if stored["id"] in self._event_order:
                raise ValueError(f"event {stored['id']} already recorded")
            self._event_seq += 1
            self._event_order[stored["id"]] = (int(stored["created"]), self._event_seq)
            self.events.append(stored)
        return copy.deepcopy(stored)

    def record_event(
        self,
        event_type: str,
        data_object: dict,
        *,
        created: int | None = None,
        event_id: str | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict:
        """Record an event in the fixture's envelope around a copy of ``data_object``."""
        event = copy.deepcopy(FIXTURES["event"])
        event.update(
            id=event_id or random_id("evt_"),
            type=event_type,
            created=int(created) if created is not None else int(time.time()),
            data={"object": copy.deepcopy(data_object)},
            api_version=self.api_version,
            request={"id": request_id, "idempotency_key": idempotency_key},
        )
        return self.add_event(event)

    def pay(
        self, session_id: str, *, payment_intent: str | None = None, created: int | None = None
    ) -> dict:
        """Complete an open session as Stripe does when the customer pays.

        The session becomes ``complete``/``paid`` with ``payment_intent`` set (a new
        ``pi_…`` unless given; a succeeded payment intent carrying
        ``payment_intent_data[metadata]`` is stored in ``payment_intents``), and a
        ``checkout.session.completed`` event with a copy of it is recorded and returned.
        In subscription mode ``subscription``/``invoice`` are set instead; in setup
        mode ``setup_intent``, with ``payment_status`` ``no_payment_required``.
        """
        with self.lock:
            session = self.sessions[session_id]
            if session["status"] != "open":
                raise ValueError(f"session {session_id} is {session['status']}, not open")
            now = int(time.time())
            private = self._private.get(session_id, {})
            session.update(
                status="complete",
                url=None,
                customer_details=copy.deepcopy(FIXTURES["checkout.session"]["customer_details"]),
            )
            if session["mode"] == "setup":
                session.update(
                    setup_intent=random_id("seti_"), payment_status="no_payment_required"
                )
            elif session["mode"] == "subscription":
                session.update(
                    subscription=random_id("sub_"),
                    invoice=random_id("in_"),
                    payment_status="paid",
                    payment_intent=payment_intent,
                )
            else:
                intent_id = payment_intent or random_id("pi_")
                session.update(payment_status="paid", payment_intent=intent_id)
                intent = copy.deepcopy(FIXTURES["payment_intent"])
                intent.update(
                    id=intent_id,
                    amount=session["amount_total"],
                    amount_received=session["amount_total"],
                    currency=session["currency"],
                    status="succeeded",
                    created=now,
                    canceled_at=None,
                    last_payment_error=None,
                    next_action=None,
                    processing=None,
                    transfer_data=None,
                    client_secret=f"{intent_id}_secret_{random_id('', 25)}",
                    metadata=dict(private.get("payment_intent_metadata", {})),
                )
                self.payment_intents[intent_id] = intent
            return self.record_event("checkout.session.completed", session, created=created)

    def expire_session(self, session_id: str, *, created: int | None = None) -> dict:
        """Expire an open session and record ``checkout.session.expired``; returns the event."""
        with self.lock:
            return self._expire(session_id, created=created)

    # -- HTTP plumbing -------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("fake_stripe")

        @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
        @app.route("/<path:path>", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
        def dispatch(path: str) -> Response:
            return self._dispatch()

        return app

    def _dispatch(self) -> Response:
        if self.latency:
            with self.lock:
                self.waiting += 1
            try:
                time.sleep(self.latency)
            finally:
                with self.lock:
                    self.waiting -= 1
        request_id = random_id("req_", 14)
        method = request.method
        path = request.path
        try:
            raw = (
                request.get_data(as_text=True)
                if method == "POST"
                else request.query_string.decode()
            )
            params = decode_params(parse_qsl(raw, keep_blank_values=True))
        except StripeAPIError as exc:
            params, parse_error = {}, exc
        else:
            parse_error = None
        record = RecordedRequest(method, path, params, headers=dict(request.headers))
        with self.lock:
            self.requests.append(record)
            try:
                injected = self._injected_failure()
                if injected is not None:
                    raise injected
                record.api_key = self._authenticate(request.headers.get("Authorization"))
                if parse_error is not None:
                    raise parse_error
                handler, args = self._route(method, path)
                key = record.idempotency_key if method == "POST" else None
                if key:
                    replay = self._replay(record, key)
                    if replay is not None:
                        record.status = replay["status"]
                        return self._response(
                            replay["status"],
                            replay["body"],
                            replay["request_id"],
                            {"Idempotent-Replayed": "true"},
                        )
                status, body = handler(params, *args, request_id=request_id, idempotency_key=key)
                if key and 200 <= status < 300:
                    self._idempotent[(record.api_key, key)] = {
                        "method": method,
                        "path": path,
                        "params": params,
                        "status": status,
                        "body": body,
                        "request_id": request_id,
                    }
                record.status = status
                return self._response(status, body, request_id)
            except StripeAPIError as exc:
                record.status = exc.status
                return self._error_response(exc, request_id)
            except Exception as exc:  # noqa: BLE001 - a bug in the fake: say so in the envelope
                record.status = 500
                self.errors.append(traceback.format_exc())
                return self._error_response(
                    StripeAPIError(500, f"FakeStripe crashed: {exc!r}", type="api_error"),
                    request_id,
                )

    def _injected_failure(self) -> StripeAPIError | None:
        if self._outage_status is not None:
            status, should_retry = self._outage_status, self._outage_should_retry
        elif self._fail_count > 0:
            self._fail_count -= 1
            status, should_retry = self._fail_status, self._fail_should_retry
        else:
            return None
        headers = {}
        if should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
        if status == 429:
            return StripeAPIError(
                429,
                "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
                code="rate_limit",
                type="invalid_request_error",
                headers=headers,
            )
        return StripeAPIError(
            status,
            "An unknown error occurred (FakeStripe simulated failure).",
            type="api_error",
            headers=headers,
        )

    def _authenticate(self, header: str | None) -> str:
        if not header:
            raise StripeAPIError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
                "or we can help at https://support.stripe.com/.",
                headers={"WWW-Authenticate": 'Basic realm="Stripe"'},
            )
        scheme, _, credential = header.partition(" ")
        key = credential.strip()
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(key).decode().partition(":")[0]
            except ValueError:  # binascii.Error, UnicodeDecodeError
                key = ""
        elif scheme.lower() != "bearer":
            key = ""
        if not key.startswith("sk_test_") or len(key) <= len("sk_test_"):
            masked = (key[:8] + "*" * max(len(key) - 12, 0) + key[-4:]) if len(key) > 12 else key
            raise StripeAPIError(
                401,
                f"Invalid API Key provided: {masked}",
                headers={"WWW-Authenticate": 'Basic realm="Stripe"'},
            )
        return key

    def _route(self, method: str, path: str):
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return handler, match.groups()
        raise StripeAPIError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    def _replay(self, record: RecordedRequest, key: str) -> dict | None:
        stored = self._idempotent.get((record.api_key, key))
        if stored is None:
            return None
        if (stored["method"], stored["path"], stored["params"]) != (
            record.method,
            record.path,
            record.params,
        ):
            raise StripeAPIError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were "
                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                "different request.",
                type="idempotency_error",
            )
        return stored

    def _response(
        self, status: int, body: dict, request_id: str, headers: dict | None = None
    ) -> Response:
        response = Response(json.dumps(body, indent=2), status=status, mimetype="application/json")
        response.headers["Request-Id"] = request_id
        response.headers["Stripe-Version"] = self.api_version
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    def _error_response(self, exc: StripeAPIError, request_id: str) -> Response:
        error: dict[str, Any] = {}
        if exc.code:
            error["code"] = exc.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{exc.code.replace('_', '-')}"
        error["message"] = exc.message
        if exc.param:
            error["param"] = exc.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        error["type"] = exc.type
        return self._response(exc.status, {"error": error}, request_id, exc.headers)

    # -- endpoints (called with the lock held) ---------------------------------

    def _create_session(self, params: dict, *, request_id: str, idempotency_key: str | None):
        _reject_unknown(params, SESSION_CREATE_PARAMS)
        expand = _expand(params, {"payment_intent"})
        mode = params.get("mode")
        if mode is None:
            raise _invalid("Missing required param: mode.", "mode", "parameter_missing")
        if mode not in ("payment", "setup", "subscription"):
            raise _invalid(
                f"Invalid mode: must be one of payment, setup, or subscription (got '{mode}')",
                "mode",
            )
        now = int(time.time())
        currency = params.get("currency")
        currency = _str(currency, "currency").lower() if currency else None
        items = []
        for index, item in enumerate(_array(params.get("line_items", []), "line_items")):
            items.append(self._line_item(_hash(item, f"line_items[{index}]"), index))
        if mode in ("payment", "subscription") and not items:
            raise _invalid(
                f"line_items is required in {mode} mode.", "line_items", "parameter_missing"
            )
        currencies = {i["currency"] for i in items} | ({currency} if currency else set())
        if len(currencies) > 1:
            raise _invalid(
                "All line items must have the same currency as the Checkout Session "
                f"(got {', '.join(sorted(currencies))}).",
                "line_items",
            )
        currency = next(iter(currencies), None)
        amount = sum(i["unit_amount"] * i["quantity"] for i in items) if items else None
        expires_at = now + SESSION_LIFETIME
        if params.get("expires_at") is not None:
            expires_at = _int(params["expires_at"], "expires_at")
            if not now + MIN_SESSION_LIFETIME - 60 <= expires_at <= now + SESSION_LIFETIME + 60:
                raise _invalid(
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                    "Checkout Session creation.",
                    "expires_at",
                )
        payment_intent_data = _hash(params.get("payment_intent_data", {}), "payment_intent_data")
        pi_metadata = _metadata(
            payment_intent_data.get("metadata", {}), "payment_intent_data[metadata]"
        )

        session_id = random_id("cs_test_a1", 56)
        session = copy.deepcopy(FIXTURES["checkout.session"])
        session.update(
            id=session_id,
            object="checkout.session",
            mode=mode,
            status="open",
            payment_status="no_payment_required" if mode == "setup" else "unpaid",
            amount_subtotal=amount,
            amount_total=amount,
            currency=currency,
            metadata=_metadata(params.get("metadata", {}), "metadata"),
            client_reference_id=_str(
                params["client_reference_id"], "client_reference_id", max_length=200
            )
            if params.get("client_reference_id")
            else None,
            success_url=_str(params.get("success_url"), "success_url")
            if params.get("success_url")
            else None,
            cancel_url=_str(params.get("cancel_url"), "cancel_url")
            if params.get("cancel_url")
            else None,
            url=f"https://checkout.stripe.com/c/pay/{session_id}",
            created=now,
            expires_at=expires_at,
            payment_intent=None,
            subscription=None,
            invoice=None,
            setup_intent=None,
            customer=None,
            customer_email=None,
            livemode=False,
            # Consistent with an open session without discounts, tax, shipping or FX:
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            shipping_cost=None,
            currency_conversion=None,
            customer_details=None,
            collected_information=None,
        )
        for name in _ECHOED_SESSION_FIELDS:
            if params.get(name):
                session[name] = _str(params[name], name)
        if params.get("payment_method_types"):
            session["payment_method_types"] = _array(
                params["payment_method_types"], "payment_method_types"
            )
        self.sessions[session_id] = session
        line_items = []
        for item in items:
            if item["product"] is not None:
                product = item["product"]
                self.add_product(product["id"], product["name"], metadata=product["metadata"])
            self.prices.setdefault(item["price"]["id"], item["price"])
            line_items.append(self._item_object(item))
        self.line_items[session_id] = line_items
        self._private[session_id] = {
            "line_items": items,
            "payment_intent_data": payment_intent_data,
            "payment_intent_metadata": pi_metadata,
        }
        return 200, self._render_session(session, expand)

    def _line_item(self, item: dict, index: int) -> dict:
        prefix = ("line_items", index)
        _reject_unknown(item, LINE_ITEM_PARAMS, *prefix)
        if "quantity" not in item:
            raise _invalid(
                f"Missing required param: {_param_path(*prefix, 'quantity')}.",
                _param_path(*prefix, "quantity"),
                "parameter_missing",
            )
        quantity = _int(item["quantity"], _param_path(*prefix, "quantity"), minimum=1)
        if item.get("price"):
            price = self.prices.get(item["price"])
            if price is None:
                raise StripeAPIError(
                    400,
                    f"No such price: '{item['price']}'",
                    code="resource_missing",
                    param=_param_path(*prefix, "price"),
                )
            product = self.products.get(price["product"])
            return {
                "description": product["name"] if product else price["id"],
                "currency": price["currency"],
                "unit_amount": price["unit_amount"],
                "quantity": quantity,
                "price": price,
                "product": None,  # already registered
            }
        if "price_data" not in item:
            raise _invalid(
                f"You must specify either `price` or `price_data` in {_param_path(*prefix)}.",
                _param_path(*prefix),
                "parameter_missing",
            )
        data_prefix = (*prefix, "price_data")
        data = _hash(item["price_data"], _param_path(*data_prefix))
        _reject_unknown(data, PRICE_DATA_PARAMS, *data_prefix)
        for required in ("currency",):
            if not data.get(required):
                raise _invalid(
                    f"Missing required param: {_param_path(*data_prefix, required)}.",
                    _param_path(*data_prefix, required),
                    "parameter_missing",
                )
        if "unit_amount" in data:
            unit_amount = _int(
                data["unit_amount"], _param_path(*data_prefix, "unit_amount"), minimum=0
            )
        elif "unit_amount_decimal" in data:
            try:
                unit_amount = round(float(data["unit_amount_decimal"]))
            except (TypeError, ValueError):
                raise _invalid(
                    f"Invalid decimal: {data['unit_amount_decimal']}",
                    _param_path(*data_prefix, "unit_amount_decimal"),
                ) from None
        else:
            raise _invalid(
                f"Missing required param: {_param_path(*data_prefix, 'unit_amount')}.",
                _param_path(*data_prefix, "unit_amount"),
                "parameter_missing",
            )
        if "product_data" in data:
            product = _hash(data["product_data"], _param_path(*data_prefix, "product_data"))
            _reject_unknown(product, PRODUCT_DATA_PARAMS, *data_prefix, "product_data")
            if not product.get("name"):
                raise _invalid(
                    f"Missing required param: {_param_path(*data_prefix, 'product_data', 'name')}.",
                    _param_path(*data_prefix, "product_data", "name"),
                    "parameter_missing",
                )
            name = product["name"]
            new_product = {
                "id": random_id("prod_", 14),
                "name": name,
                "metadata": _metadata(
                    product.get("metadata", {}),
                    _param_path(*data_prefix, "product_data", "metadata"),
                ),
            }
        elif data.get("product"):
            known = self.products.get(_str(data["product"], _param_path(*data_prefix, "product")))
            if known is None:
                raise StripeAPIError(
                    400,
                    f"No such product: '{data['product']}'",
                    code="resource_missing",
                    param=_param_path(*data_prefix, "product"),
                )
            name, new_product = known["name"], None
        else:
            raise _invalid(
                f"You must specify either `product` or `product_data` in {_param_path(*data_prefix)}.",
                _param_path(*data_prefix),
                "parameter_missing",
            )
        currency = _str(data["currency"], _param_path(*data_prefix, "currency")).lower()
        # price_data makes an inline price (and product_data a product), as on Stripe
        price = self._price_object(
            random_id("price_", 24),
            unit_amount,
            currency,
            new_product["id"] if new_product else data["product"],
        )
        return {
            "description": name,
            "currency": currency,
            "unit_amount": unit_amount,
            "quantity": quantity,
            "price": price,
            "product": new_product,
        }

    @staticmethod
    def _item_object(item: dict) -> dict:
        """A Checkout line item (object ``item``) as the line_items endpoint returns it."""
        obj = copy.deepcopy(FIXTURES["item"])
        subtotal = item["unit_amount"] * item["quantity"]
        obj.update(
            id=random_id("li_", 24),
            price=copy.deepcopy(item["price"]),
            quantity=item["quantity"],
            currency=item["currency"],
            description=item["description"],
            amount_subtotal=subtotal,
            amount_discount=0,
            amount_tax=0,
            amount_total=subtotal,
            adjustable_quantity=None,
            metadata={},
        )
        return obj

    def _render_session(self, session: dict, expand: list[str]) -> dict:
        rendered = copy.deepcopy(session)
        if "payment_intent" in expand and rendered.get("payment_intent") in self.payment_intents:
            rendered["payment_intent"] = copy.deepcopy(
                self.payment_intents[rendered["payment_intent"]]
            )
        return rendered

    def _session_or_404(self, session_id: str) -> dict:
        session = self.sessions.get(session_id)
        if session is None:
            raise _missing("checkout.session", session_id, "session")
        return session

    def _retrieve_session(self, params: dict, session_id: str, **_):
        _reject_unknown(params, {"expand"})
        expand = _expand(params, {"payment_intent"})
        return 200, self._render_session(self._session_or_404(session_id), expand)

    def _expire(
        self, session_id: str, *, created=None, request_id=None, idempotency_key=None
    ) -> dict:
        session = self.sessions[session_id]
        if session["status"] != "open":
            raise ValueError(f"session {session_id} is {session['status']}, not open")
        session.update(status="expired", url=None)
        return self.record_event(
            "checkout.session.expired",
            session,
            created=created,
            request_id=request_id,
            idempotency_key=idempotency_key,
        )

    def _expire_session_endpoint(
        self, params: dict, session_id: str, *, request_id, idempotency_key
    ):
        _reject_unknown(params, {"expand"})
        expand = _expand(params, {"payment_intent"})
        session = self._session_or_404(session_id)
        if session["status"] != "open":
            raise _invalid(
                f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout '
                f'Session has a status of "{session["status"]}".',
            )
        self._expire(session_id, request_id=request_id, idempotency_key=idempotency_key)
        return 200, self._render_session(session, expand)

    def _event_index(self, event_id: str) -> int:
        for index, event in enumerate(self.events):
            if event["id"] == event_id:
                return index
        raise KeyError(event_id)

    def _retrieve_event(self, params: dict, event_id: str, **_):
        _reject_unknown(params, {"expand"})
        _expand(params, set())
        try:
            return 200, copy.deepcopy(self.events[self._event_index(event_id)])
        except KeyError:
            raise _missing("event", event_id, "id") from None

    def _retrieve_payment_intent(self, params: dict, intent_id: str, **_):
        _reject_unknown(params, {"client_secret", "expand"})
        _expand(params, set())
        intent = self.payment_intents.get(intent_id)
        if intent is None:
            raise _missing("payment_intent", intent_id, "intent")
        return 200, copy.deepcopy(intent)

    def _list_line_items(self, params: dict, session_id: str, **_):
        _reject_unknown(params, LINE_ITEM_LIST_PARAMS)
        expand = _expand(params, {"data.price.product"})
        self._session_or_404(session_id)
        items = []
        for stored in self.line_items.get(session_id, []):
            item = copy.deepcopy(stored)
            if "data.price.product" in expand and item["price"]["product"] in self.products:
                item["price"]["product"] = copy.deepcopy(self.products[item["price"]["product"]])
            items.append(item)
        return 200, self._page(items, params, f"/v1/checkout/sessions/{session_id}/line_items")

    def _page(self, objects: list[dict], params: dict, url: str) -> dict:
        """One page of a list whose cursors are object ids, in the order given."""
        limit = DEFAULT_LIST_LIMIT
        if params.get("limit") not in (None, ""):
            limit = _int(params["limit"], "limit", minimum=1, maximum=MAX_LIST_LIMIT)
        starting_after, ending_before = params.get("starting_after"), params.get("ending_before")
        if starting_after and ending_before:
            raise _invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                "ending_before",
            )
        ids = [obj["id"] for obj in objects]
        for name, cursor in (("starting_after", starting_after), ("ending_before", ending_before)):
            if cursor and _str(cursor, name) not in ids:
                raise StripeAPIError(
                    400, f"No such object: '{cursor}'", code="resource_missing", param=name
                )
        if starting_after:
            after = objects[ids.index(starting_after) + 1 :]
            page, has_more = after[:limit], len(after) > limit
        elif ending_before:
            before = objects[: ids.index(ending_before)]
            page, has_more = before[-limit:], len(before) > limit
        else:
            page, has_more = objects[:limit], len(objects) > limit
        return {"object": "list", "data": page, "has_more": has_more, "url": url}

    # -- webhook endpoints ----------------------------------------------------

    def _endpoint_or_404(self, endpoint_id: str) -> dict:
        endpoint = self.webhook_endpoints.get(endpoint_id)
        if endpoint is None:
            raise _missing("webhook_endpoint", endpoint_id, "id")
        return endpoint

    @staticmethod
    def _url(value: Any, param: str = "url") -> str:
        from urllib.parse import urlsplit

        url = _str(value, param, max_length=5000)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _invalid(f"Invalid URL: {url[:80]}", param, "url_invalid")
        return url

    @staticmethod
    def _enabled_events(value: Any) -> list[str]:
        events = [
            _str(e, f"enabled_events[{i}]") for i, e in enumerate(_array(value, "enabled_events"))
        ]
        if not events:
            raise _invalid(
                "Missing required param: enabled_events.", "enabled_events", "parameter_missing"
            )
        for index, name in enumerate(events):
            if EVENT_TYPES and name not in EVENT_TYPES:
                raise _invalid(
                    f"Invalid value for enabled_events[{index}]: {name!r} is not an event type.",
                    f"enabled_events[{index}]",
                )
        return list(dict.fromkeys(events))

    @staticmethod
    def _bool(value: Any, param: str) -> bool:
        if value not in ("true", "false"):
            raise _invalid(f"Invalid boolean: {value}", param)
        return value == "true"

    def _create_webhook_endpoint(self, params: dict, **_):
        _reject_unknown(params, WEBHOOK_ENDPOINT_CREATE_PARAMS)
        _expand(params, set())
        if not params.get("url"):
            raise _invalid("Missing required param: url.", "url", "parameter_missing")
        url = self._url(params["url"])
        events = self._enabled_events(params.get("enabled_events", ""))
        version = params.get("api_version")
        if version is not None:
            version = _str(version, "api_version")
            if API_VERSIONS and version not in API_VERSIONS:
                raise _invalid(f"Invalid API version: {version}", "api_version")
        if len(self.webhook_endpoints) >= MAX_WEBHOOK_ENDPOINTS:
            raise _invalid(
                f"You have reached the maximum of {MAX_WEBHOOK_ENDPOINTS} test webhook endpoints.",
                code="webhook_endpoints_limit",
            )
        endpoint = copy.deepcopy(FIXTURES["webhook_endpoint"])
        endpoint.update(
            id=random_id("we_", 24),
            url=url,
            enabled_events=events,
            api_version=version,
            description=_str(params["description"], "description")
            if params.get("description")
            else None,
            metadata=_metadata(params.get("metadata", {}), "metadata"),
            status="enabled",
            created=int(time.time()),
            application=None,
            livemode=False,
        )
        self.webhook_endpoints[endpoint["id"]] = endpoint
        secret = "whsec_" + random_id("", 32)
        self.endpoint_secrets[endpoint["id"]] = secret
        return 200, {**copy.deepcopy(endpoint), "secret": secret}

    def _list_webhook_endpoints(self, params: dict, **_):
        _reject_unknown(params, WEBHOOK_ENDPOINT_LIST_PARAMS)
        _expand(params, set())
        newest_first = [copy.deepcopy(e) for e in reversed(self.webhook_endpoints.values())]
        return 200, self._page(newest_first, params, "/v1/webhook_endpoints")

    def _retrieve_webhook_endpoint(self, params: dict, endpoint_id: str, **_):
        _reject_unknown(params, {"expand"})
        _expand(params, set())
        return 200, copy.deepcopy(self._endpoint_or_404(endpoint_id))

    def _update_webhook_endpoint(self, params: dict, endpoint_id: str, **_):
        # api_version is not among the update parameters: Stripe fixes it at creation.
        _reject_unknown(params, WEBHOOK_ENDPOINT_UPDATE_PARAMS)
        _expand(params, set())
        endpoint = self._endpoint_or_404(endpoint_id)
        changes: dict[str, Any] = {}
        if "url" in params:
            changes["url"] = self._url(params["url"])
        if "enabled_events" in params:
            changes["enabled_events"] = self._enabled_events(params["enabled_events"])
        if "disabled" in params:
            changes["status"] = (
                "disabled" if self._bool(params["disabled"], "disabled") else "enabled"
            )
        if "description" in params:
            changes["description"] = _str(params["description"], "description") or None
        if "metadata" in params:
            # metadata= clears everything; metadata[key]= clears one key; others merge
            metadata = {} if params["metadata"] == "" else dict(endpoint["metadata"])
            for key, value in _hash(params["metadata"], "metadata").items():
                if value == "":
                    metadata.pop(key, None)
                else:
                    metadata[key] = _str(value, f"metadata[{key}]")
            changes["metadata"] = metadata
        endpoint.update(changes)
        return 200, copy.deepcopy(endpoint)

    def _delete_webhook_endpoint(self, params: dict, endpoint_id: str, **_):
        _reject_unknown(params, set())
        self._endpoint_or_404(endpoint_id)
        del self.webhook_endpoints[endpoint_id]
        self.endpoint_secrets.pop(endpoint_id, None)
        return 200, {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}

    def _list_events(self, params: dict, **_):
        _reject_unknown(params, EVENT_LIST_PARAMS)
        _expand(params, set())
        limit = DEFAULT_LIST_LIMIT
        if params.get("limit") not in (None, ""):
            limit = _int(params["limit"], "limit", minimum=1, maximum=MAX_LIST_LIMIT)
        if "type" in params and "types" in params:
            raise _invalid("You may pass either `type` or `types`, but not both.", "types")
        matches: Callable[[dict], bool] = lambda event: True
        if params.get("type"):
            wildcard = _str(params["type"], "type")  # "checkout.session.*": `*` matches anything
            pattern = re.compile(".*".join(re.escape(part) for part in wildcard.split("*")))
            matches = lambda event: bool(pattern.fullmatch(event.get("type", "")))
        elif "types" in params:
            wanted = {_str(t, "types") for t in _array(params["types"], "types")}
            if len(wanted) > 20:
                raise _invalid("You may pass at most 20 event types.", "types")
            matches = lambda event: event.get("type") in wanted
        bounds = self._created_bounds(params.get("created"))
        starting_after, ending_before = params.get("starting_after"), params.get("ending_before")
        if starting_after and ending_before:
            raise _invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                "ending_before",
            )

        selected = [
            event
            for event in self.events
            if matches(event) and all(check(int(event["created"])) for check in bounds)
        ]
        selected.sort(
            key=lambda event: self._event_order[event["id"]], reverse=True
        )  # newest first
        if starting_after:
            cursor = self._cursor(starting_after, "starting_after")
            after = [e for e in selected if self._event_order[e["id"]] < cursor]
            page, has_more = after[:limit], len(after) > limit
        elif ending_before:
            cursor = self._cursor(ending_before, "ending_before")
            before = [e for e in selected if self._event_order[e["id"]] > cursor]
            page, has_more = before[-limit:], len(before) > limit
        else:
            page, has_more = selected[:limit], len(selected) > limit
        return 200, {
            "object": "list",
            "data": copy.deepcopy(page),
            "has_more": has_more,
            "url": "/v1/events",
        }

    def _cursor(self, event_id: Any, param: str) -> tuple[int, int]:
        cursor = self._event_order.get(_str(event_id, param))
        if cursor is None:
            raise StripeAPIError(
                400, f"No such event: '{event_id}'", code="resource_missing", param=param
            )
        return cursor

    @staticmethod
    def _created_bounds(created: Any) -> list[Callable[[int], bool]]:
        if created is None or created == "":
            return []
        if not isinstance(created, dict):
            exact = _int(created, "created")
            return [lambda value: value == exact]
        _reject_unknown(created, {"gt", "gte", "lt", "lte"}, "created")
        compare = {
            "gt": lambda bound: lambda value: value > bound,
            "gte": lambda bound: lambda value: value >= bound,
            "lt": lambda bound: lambda value: value < bound,
            "lte": lambda bound: lambda value: value <= bound,
        }
        return [compare[op](_int(bound, f"created[{op}]")) for op, bound in created.items()]
