"""A local fake of the parts of PayPal's REST API that payhooks talks to.

``providers.paypal_api.PayPalAPI`` works against it unchanged::

    with FakePayPal() as fake:
        api = PayPalAPI(fake.client_id, fake.client_secret, fake.url)
        order = api.create_order(amount_cents=999, currency="USD", user_id="u", credits=100, request_id="r1")
        approved = fake.approve(order["id"])            # CHECKOUT.ORDER.APPROVED, signed
        captured = api.capture_order(order["id"])       # PAYMENT.CAPTURE.COMPLETED, signed
        body, headers = fake.delivery(approved["id"])   # what PayPal would POST to the receiver

What it serves (JSON, as PayPal does):

- ``POST /v1/oauth2/token``: client credentials in HTTP basic auth, form
  ``grant_type=client_credentials``; tokens expire after ``token_lifetime`` seconds.
- ``POST /v2/checkout/orders`` (``PayPal-Request-Id``: the same id answers the
  same order), ``GET /v2/checkout/orders/<id>``,
  ``POST /v2/checkout/orders/<id>/capture``: only an APPROVED order; the same
  ``PayPal-Request-Id`` answers the first capture again; an order captured
  before is a 422 ``ORDER_ALREADY_CAPTURED``. The capture comes back COMPLETED,
  or PENDING for an order marked with ``pend_capture``, or is refused with a
  422 ``INSTRUMENT_DECLINED`` once for an order in ``declines`` — an answer the
  same ``PayPal-Request-Id`` then always gets, as PayPal answers a repeated id
  with its earlier answer. ``reapprove`` is the buyer approving again after it.
- ``GET /v2/payments/captures/<id>``, ``POST /v2/payments/captures/<id>/refund``.
- ``GET /v1/notifications/webhooks-events``: ``start_time``, ``end_time``,
  ``event_type``, ``page_size``, newest first, paginated with ``links[rel=next]``.
- ``POST /v1/notifications/verify-webhook-signature``: SUCCESS only for a
  delivery the fake signed, for its webhook id, with the event embedded byte for
  byte (PayPal checks the CRC32 of what it is sent).
- ``GET /v1/notifications/certs/<name>``: the signing certificate (and its
  intermediate) of the fake's test PKI; no authentication, as on PayPal.

Every event is signed as PayPal signs it (``tests.support.paypal_events``),
with the certificate address on PayPal's sandbox host; ``PayPalAPI`` fetches
such addresses from its API base when that is not PayPal's, i.e. from here.

Failure injection: ``fail_next(count, status)``, ``outage(True, status)``
(network-level: every request but the certificate's, unless ``certificates=True``),
``slow(seconds)``. Errors use PayPal's envelope ``{"name", "message", "debug_id",
"details": [{"issue", "description"}]}``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import secrets
import string
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from flask import Flask, Response, request

from providers import paypal
from tests.support import canaries
from tests.support import paypal_events as pe
from tests.support.canaries import EMAIL, NAME
from tests.support.local_server import LocalServer

_UPPER = string.ascii_uppercase + string.digits


def paypal_id(length: int = 17) -> str:
    return "".join(secrets.choice(_UPPER) for _ in range(length))


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PayPalError(Exception):
    def __init__(self, status: int, name: str, message: str, issue: str | None = None) -> None:
        super().__init__(message)
        self.status, self.name, self.message, self.issue = status, name, message, issue


class FakePayPal(LocalServer):
    name = "fake-paypal"

    def __init__(
        self,
        *,
        client_id: str = "AfakeClientId0c4n4ryPP",
        client_secret: str = canaries.PAYPAL_CLIENT_SECRET,
        webhook_ids: tuple[str, ...] = (pe.WEBHOOK_ID,),
        token_lifetime: int = 32400,
        pki: pe.TestPKI | None = None,
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.webhook_ids = webhook_ids
        self.token_lifetime = token_lifetime
        self.pki = pki or pe.default_pki()
        self.cert_url = pe.CERT_URL
        self.lock = threading.RLock()
        self.orders: dict[str, dict] = {}
        self.captures: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.events: list[dict] = []  # oldest first
        self.deliveries: dict[str, tuple[bytes, dict[str, str]]] = {}  # by event id, as signed
        self.tokens: dict[str, float] = {}  # token -> expiry
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.errors: list[str] = []
        self.pend_capture: set[str] = set()  # orders whose capture comes back PENDING
        self.declines: set[str] = set()  # orders whose next capture the buyer's funding source declines
        self._by_request_id: dict[tuple[str, str], tuple[int, dict]] = {}
        self._fail_count = 0
        self._fail_status = 500
        self._outage_status: int | None = None
        self._outage_certificates = False
        self._delay = 0.0
        self._app = self._build_app()

    # -- failure injection ------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` requests with ``status`` (429 and 5xx are PayPal's transient ones)."""
        with self.lock:
            self._fail_count, self._fail_status = count, status

    def outage(
        self, enabled: bool = True, status: int = 503, *, certificates: bool = False
    ) -> None:
        """Fail every request with ``status`` until ``outage(False)``; certificates too if asked."""
        with self.lock:
            self._outage_status = status if enabled else None
            self._outage_certificates = certificates

    def slow(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each request (0 to stop)."""
        self._delay = seconds

    # -- the buyer's side and PayPal's own doings (test helpers) ---------------------

    def reapprove(self, order_id: str) -> dict:
        """The buyer, sent back after a declined capture, approves again with another funding source."""
        with self.lock:
            order = self.orders[order_id]
            if order["status"] != "APPROVED":
                raise ValueError(f"order {order_id} is {order['status']}, not APPROVED")
            before = dt.datetime.strptime(order["update_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            later = max(dt.datetime.now(dt.UTC), before + dt.timedelta(seconds=1))  # PayPal's times are in seconds
            order.update(update_time=later.strftime("%Y-%m-%dT%H:%M:%SZ"))
            return self.record_event("CHECKOUT.ORDER.APPROVED", order)

    def approve(self, order_id: str) -> dict:
        """The buyer approves the order: APPROVED, with a payer; CHECKOUT.ORDER.APPROVED is recorded."""
        with self.lock:
            order = self.orders[order_id]
            if order["status"] != "CREATED":
                raise ValueError(f"order {order_id} is {order['status']}, not CREATED")
            order.update(
                status="APPROVED",
                update_time=_now_iso(),
                payer={
                    "name": {"given_name": NAME.split()[0], "surname": NAME.split()[1]},
                    "email_address": EMAIL,
                    "payer_id": paypal_id(13),
                },
            )
            return self.record_event("CHECKOUT.ORDER.APPROVED", order)

    def reverse_approval(self, order_id: str) -> dict:
        """Not captured in time: PayPal voids the order (CHECKOUT.PAYMENT-APPROVAL.REVERSED)."""
        with self.lock:
            order = self.orders[order_id]
            order["status"] = "VOIDED"
            unit = order["purchase_units"][0]
            resource = {
                "order_id": order_id,
                "purchase_units": [
                    {k: unit[k] for k in ("reference_id", "custom_id") if k in unit}
                ],
            }
            return self.record_event("CHECKOUT.PAYMENT-APPROVAL.REVERSED", resource)

    def complete_capture(self, capture_id: str) -> dict:
        """A PENDING capture clears (PAYMENT.CAPTURE.COMPLETED)."""
        return self._settle_capture(capture_id, "COMPLETED", "PAYMENT.CAPTURE.COMPLETED")

    def deny_capture(self, capture_id: str) -> dict:
        """A PENDING capture is denied (PAYMENT.CAPTURE.DENIED)."""
        return self._settle_capture(capture_id, "DENIED", "PAYMENT.CAPTURE.DENIED")

    def refund(
        self, capture_id: str, amount_cents: int | None = None, *, reversal: bool = False
    ) -> dict:
        """Refund (or reverse) a capture, wholly or in part; PAYMENT.CAPTURE.REFUNDED (.REVERSED) is recorded."""
        with self.lock:
            refund = self._refund(capture_id, amount_cents)
            return self.record_event(
                "PAYMENT.CAPTURE.REVERSED" if reversal else "PAYMENT.CAPTURE.REFUNDED", refund
            )

    def open_dispute(self, capture_id: str, amount_cents: int | None = None) -> dict:
        with self.lock:
            capture = self.captures[capture_id]
            currency = capture["amount"]["currency_code"]
            amount = (
                amount_cents
                if amount_cents is not None
                else paypal.to_minor_units(capture["amount"]["value"], currency)
            )
            dispute = pe.dispute(
                f"PP-D-{paypal_id(6)}", capture_id, amount_cents=amount, currency=currency
            )
            dispute.update(status="OPEN", create_time=_now_iso(), update_time=_now_iso())
            return self.record_event("CUSTOMER.DISPUTE.CREATED", dispute)

    def resolve_dispute(self, created: dict, outcome: str) -> dict:
        """Resolve the dispute a CUSTOMER.DISPUTE.CREATED event opened, with ``outcome``."""
        with self.lock:
            dispute = copy.deepcopy(created["resource"])
            dispute.update(
                status="RESOLVED", dispute_outcome={"outcome_code": outcome}, update_time=_now_iso()
            )
            return self.record_event("CUSTOMER.DISPUTE.RESOLVED", dispute)

    def record_event(
        self, event_type: str, resource: dict, *, create_time: dt.datetime | None = None
    ) -> dict:
        """Record an event around a copy of ``resource`` and sign its delivery; returns the event."""
        created = (create_time or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[
            :-3
        ] + "Z"
        event = pe.event(event_type, resource, create_time=created)
        body = pe.encode(event)
        headers = pe.sign_headers(
            body, pki=self.pki, webhook_id=self.webhook_ids[0], cert_url=self.cert_url
        )
        with self.lock:
            self.events.append(event)
            self.deliveries[event["id"]] = (body, headers)
        return copy.deepcopy(event)

    def delivery(self, event_id: str) -> tuple[bytes, dict[str, str]]:
        """The body and signature headers PayPal would POST for an event."""
        with self.lock:
            return self.deliveries[event_id]

    # -- HTTP ------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("fake_paypal")

        @app.route("/<path:path>", methods=["GET", "POST"])
        def dispatch(path: str) -> Response:
            return self._dispatch("/" + path)

        return app

    def _dispatch(self, path: str) -> Response:
        if self._delay:
            time.sleep(self._delay)
        debug_id = secrets.token_hex(6)
        with self.lock:
            self.requests.append((request.method, path, dict(request.headers)))
            try:
                certificate = path.startswith(paypal.CERT_PATH)
                if self._outage_status is not None and (
                    self._outage_certificates or not certificate
                ):
                    raise PayPalError(
                        self._outage_status,
                        "SERVICE_UNAVAILABLE",
                        "Service Unavailable (fake outage).",
                    )
                if self._fail_count > 0:
                    self._fail_count -= 1
                    name = (
                        "RATE_LIMIT_REACHED"
                        if self._fail_status == 429
                        else "INTERNAL_SERVER_ERROR"
                    )
                    raise PayPalError(
                        self._fail_status, name, "An internal server error occurred (fake failure)."
                    )
                if certificate:
                    return self._certificate(path)
                if path == "/v1/oauth2/token" and request.method == "POST":
                    return self._json(200, self._token())
                self._authenticate()
                status, body = self._route(request.method, path)
                return self._json(status, body)
            except PayPalError as exc:
                return self._json(exc.status, self._error_body(exc, debug_id))
            except Exception as exc:  # noqa: BLE001 - a bug in the fake: say so, as a 500
                self.errors.append(traceback.format_exc())
                return self._json(
                    500,
                    {
                        "name": "INTERNAL_SERVER_ERROR",
                        "message": f"FakePayPal crashed: {exc!r}",
                        "debug_id": debug_id,
                    },
                )

    @staticmethod
    def _json(status: int, body: dict) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")

    @staticmethod
    def _error_body(exc: PayPalError, debug_id: str) -> dict:
        if exc.status == 401 and exc.name in ("invalid_client", "invalid_token"):
            return {"error": exc.name, "error_description": exc.message}
        body: dict[str, Any] = {"name": exc.name, "message": exc.message, "debug_id": debug_id}
        if exc.issue:
            body["details"] = [{"issue": exc.issue, "description": exc.message}]
        return body

    def _certificate(self, path: str) -> Response:
        if path != paypal.CERT_PATH + self.cert_url.rsplit("/", 1)[1]:
            raise PayPalError(
                404,
                "RESOURCE_NOT_FOUND",
                "The specified resource does not exist.",
                "INVALID_RESOURCE_ID",
            )
        return Response(self.pki.leaf_pem(), status=200, mimetype="application/x-pem-file")

    def _token(self) -> dict:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        try:
            user, _, password = base64.b64decode(credential).decode().partition(":")
        except ValueError:
            user = password = ""
        if scheme != "Basic" or (user, password) != (self.client_id, self.client_secret):
            raise PayPalError(401, "invalid_client", "Client Authentication failed")
        if request.form.get("grant_type") != "client_credentials":
            raise PayPalError(400, "unsupported_grant_type", "Grant Type is NULL")
        token = "A21AA" + secrets.token_urlsafe(40)
        self.tokens[token] = time.monotonic() + self.token_lifetime
        return {
            "scope": "https://uri.paypal.com/services/payments/payment",
            "access_token": token,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": self.token_lifetime,
            "nonce": f"{_now_iso()}{secrets.token_hex(8)}",
        }

    def _authenticate(self) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self.tokens.get(token) if scheme == "Bearer" else None
        if expiry is None or expiry <= time.monotonic():
            raise PayPalError(401, "invalid_token", "Token signature verification failed")

    def expire_tokens(self) -> None:
        """Every token issued so far stops working, as if revoked."""
        with self.lock:
            self.tokens.clear()

    def _route(self, method: str, path: str) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        routes: list[tuple[str, list[str], Callable[..., tuple[int, dict]]]] = [
            ("POST", ["v2", "checkout", "orders"], self._create_order),
            ("GET", ["v2", "checkout", "orders", "*"], self._get_order),
            ("POST", ["v2", "checkout", "orders", "*", "capture"], self._capture_order),
            ("GET", ["v2", "payments", "captures", "*"], self._get_capture),
            ("POST", ["v2", "payments", "captures", "*", "refund"], self._refund_endpoint),
            ("GET", ["v1", "notifications", "webhooks-events"], self._list_events),
            ("POST", ["v1", "notifications", "verify-webhook-signature"], self._verify_signature),
        ]
        for route_method, pattern, handler in routes:
            if (
                method == route_method
                and len(pattern) == len(parts)
                and all(p in ("*", q) for p, q in zip(pattern, parts))
            ):
                return handler(*[q for p, q in zip(pattern, parts) if p == "*"])
        raise PayPalError(
            404,
            "RESOURCE_NOT_FOUND",
            "The specified resource does not exist.",
            "INVALID_RESOURCE_ID",
        )

    def _body(self) -> dict:
        try:
            body = json.loads(request.get_data() or b"{}")
        except ValueError:
            raise PayPalError(
                400, "INVALID_REQUEST", "Request is not well-formed.", "MALFORMED_REQUEST_JSON"
            ) from None
        if not isinstance(body, dict):
            raise PayPalError(
                400, "INVALID_REQUEST", "Request is not well-formed.", "MALFORMED_REQUEST_JSON"
            )
        return body

    def _idempotent(self, kind: str, run: Callable[[], tuple[int, dict]]) -> tuple[int, dict]:
        request_id = request.headers.get("PayPal-Request-Id")
        if request_id and (kind, request_id) in self._by_request_id:
            answer = self._by_request_id[(kind, request_id)]
            if isinstance(answer, PayPalError):
                raise answer
            status, body = answer
            return status, copy.deepcopy(body)
        try:
            status, body = run()
        except PayPalError as exc:
            # "the latest status of the previous request": a decline is the answer to that id from now on
            if request_id and exc.issue == "INSTRUMENT_DECLINED":
                self._by_request_id[(kind, request_id)] = exc
            raise
        if request_id:
            self._by_request_id[(kind, request_id)] = (status, copy.deepcopy(body))
        return status, body

    # -- orders and captures ----------------------------------------------------------

    def _create_order(self) -> tuple[int, dict]:
        return self._idempotent("order", self._new_order)

    def _new_order(self) -> tuple[int, dict]:
        body = self._body()
        if body.get("intent") not in ("CAPTURE", "AUTHORIZE"):
            raise PayPalError(
                400, "INVALID_REQUEST", "Request is not well-formed.", "INVALID_PARAMETER_VALUE"
            )
        units = body.get("purchase_units")
        if not isinstance(units, list) or len(units) != 1 or not isinstance(units[0], dict):
            raise PayPalError(
                400,
                "INVALID_REQUEST",
                "The fake takes exactly one purchase unit.",
                "INVALID_ARRAY_LENGTH",
            )
        unit = units[0]
        amount = unit.get("amount") if isinstance(unit.get("amount"), dict) else {}
        currency, value = amount.get("currency_code"), amount.get("value")
        try:
            paypal.to_minor_units(value, currency or "")
        except (ValueError, TypeError):
            raise PayPalError(
                400, "INVALID_REQUEST", "Request is not well-formed.", "INVALID_PARAMETER_VALUE"
            ) from None
        if currency in paypal.WHOLE_UNITS_ONLY and "." in value:
            raise PayPalError(
                422,
                "UNPROCESSABLE_ENTITY",
                "Currency does not support decimals.",
                "DECIMALS_NOT_SUPPORTED",
            )
        custom_id = unit.get("custom_id")
        if custom_id is not None and (
            not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 127
        ):
            raise PayPalError(
                400, "INVALID_REQUEST", "Request is not well-formed.", "INVALID_STRING_LENGTH"
            )
        order_id = paypal_id()
        order = {
            "id": order_id,
            "intent": body["intent"],
            "status": "CREATED",
            "purchase_units": [
                {
                    "reference_id": unit.get("reference_id", "default"),
                    "amount": {"currency_code": currency, "value": value},
                    "payee": {
                        "email_address": "merchant@example.com",
                        "merchant_id": "D8GJX2YRPAJWG",
                    },
                    **({"custom_id": custom_id} if custom_id else {}),
                    **({"description": unit["description"]} if unit.get("description") else {}),
                }
            ],
            "create_time": _now_iso(),
            "links": [
                {
                    "href": f"https://api.sandbox.paypal.com/v2/checkout/orders/{order_id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"https://www.sandbox.paypal.com/checkoutnow?token={order_id}",
                    "rel": "approve",
                    "method": "GET",
                },
                {
                    "href": f"https://api.sandbox.paypal.com/v2/checkout/orders/{order_id}/capture",
                    "rel": "capture",
                    "method": "POST",
                },
            ],
        }
        self.orders[order_id] = order
        return 201, copy.deepcopy(order)

    def _order(self, order_id: str) -> dict:
        order = self.orders.get(order_id)
        if order is None:
            raise PayPalError(
                404,
                "RESOURCE_NOT_FOUND",
                "The specified resource does not exist.",
                "INVALID_RESOURCE_ID",
            )
        return order

    def _get_order(self, order_id: str) -> tuple[int, dict]:
        return 200, copy.deepcopy(self._order(order_id))

    def _capture_order(self, order_id: str) -> tuple[int, dict]:
        return self._idempotent(f"capture:{order_id}", lambda: self._capture(order_id))

    def _capture(self, order_id: str) -> tuple[int, dict]:
        order = self._order(order_id)
        if order_id in self.declines and order["status"] == "APPROVED":
            self.declines.discard(order_id)
            raise PayPalError(
                422,
                "UNPROCESSABLE_ENTITY",
                "The instrument presented was either declined by the processor or bank, or it can't be used "
                "for this payment.",
                "INSTRUMENT_DECLINED",
            )
        if order["status"] == "COMPLETED":
            raise PayPalError(
                422,
                "UNPROCESSABLE_ENTITY",
                "The requested action could not be performed.",
                "ORDER_ALREADY_CAPTURED",
            )
        if order["status"] != "APPROVED":
            raise PayPalError(
                422,
                "UNPROCESSABLE_ENTITY",
                "The requested action could not be performed.",
                "ORDER_NOT_APPROVED",
            )
        unit = order["purchase_units"][0]
        currency = unit["amount"]["currency_code"]
        pending = order_id in self.pend_capture
        capture = pe.capture(
            paypal_id(),
            order_id=order_id,
            status="PENDING" if pending else "COMPLETED",
            amount_cents=paypal.to_minor_units(unit["amount"]["value"], currency),
            currency=currency,
            user_id=None,
            credits=None,
            reason="PENDING_REVIEW" if pending else None,
        )
        if unit.get("custom_id"):
            capture["custom_id"] = unit["custom_id"]
        capture.update(create_time=_now_iso(), update_time=_now_iso())
        self.captures[capture["id"]] = capture
        unit["payments"] = {"captures": [copy.deepcopy(capture)]}
        order.update(status="COMPLETED", update_time=_now_iso())
        self.record_event(
            "PAYMENT.CAPTURE.PENDING" if pending else "PAYMENT.CAPTURE.COMPLETED", capture
        )
        return 201, copy.deepcopy(order)

    def _capture_or_404(self, capture_id: str) -> dict:
        capture = self.captures.get(capture_id)
        if capture is None:
            raise PayPalError(
                404,
                "RESOURCE_NOT_FOUND",
                "The specified resource does not exist.",
                "INVALID_RESOURCE_ID",
            )
        return capture

    def _get_capture(self, capture_id: str) -> tuple[int, dict]:
        return 200, copy.deepcopy(self._capture_or_404(capture_id))

    def _settle_capture(self, capture_id: str, status: str, event_type: str) -> dict:
        with self.lock:
            capture = self.captures[capture_id]
            if capture["status"] != "PENDING":
                raise ValueError(f"capture {capture_id} is {capture['status']}, not PENDING")
            capture["status"] = status
            capture.pop("status_details", None)
            capture["update_time"] = _now_iso()
            self._sync_order(capture)
            return self.record_event(event_type, capture)

    def _sync_order(self, capture: dict) -> None:
        order_id = capture.get("supplementary_data", {}).get("related_ids", {}).get("order_id")
        if order_id in self.orders:
            self.orders[order_id]["purchase_units"][0]["payments"] = {
                "captures": [copy.deepcopy(capture)]
            }

    def _refund_endpoint(self, capture_id: str) -> tuple[int, dict]:
        def run() -> tuple[int, dict]:
            body = self._body()
            amount = body.get("amount")
            capture = self._capture_or_404(capture_id)
            cents = None
            if isinstance(amount, dict):
                if amount.get("currency_code") != capture["amount"]["currency_code"]:
                    raise PayPalError(
                        422,
                        "UNPROCESSABLE_ENTITY",
                        "Currency mismatch.",
                        "REFUND_CURRENCY_MISMATCH",
                    )
                cents = paypal.to_minor_units(amount.get("value"), amount["currency_code"])
            refund = self._refund(capture_id, cents)
            self.record_event("PAYMENT.CAPTURE.REFUNDED", refund)
            return 201, refund

        return self._idempotent(f"refund:{capture_id}", run)

    def _refund(self, capture_id: str, amount_cents: int | None) -> dict:
        capture = self._capture_or_404(capture_id)
        if capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            raise PayPalError(
                422,
                "UNPROCESSABLE_ENTITY",
                "The capture cannot be refunded.",
                "CAPTURE_FULLY_REFUNDED",
            )
        currency = capture["amount"]["currency_code"]
        captured = paypal.to_minor_units(capture["amount"]["value"], currency)
        before = sum(r["_cents"] for r in self.refunds.values() if r["_capture"] == capture_id)
        amount = captured - before if amount_cents is None else amount_cents
        if not 0 < amount <= captured - before:
            raise PayPalError(
                422,
                "UNPROCESSABLE_ENTITY",
                "The refund amount is too large.",
                "REFUND_AMOUNT_EXCEEDED",
            )
        refund = pe.refund(
            paypal_id(),
            capture_id,
            amount_cents=amount,
            total_refunded_cents=before + amount,
            currency=currency,
        )
        refund.update(create_time=_now_iso(), update_time=_now_iso())
        self.refunds[refund["id"]] = {**refund, "_cents": amount, "_capture": capture_id}
        capture["status"] = "REFUNDED" if before + amount == captured else "PARTIALLY_REFUNDED"
        self._sync_order(capture)
        return copy.deepcopy(refund)

    # -- webhooks ----------------------------------------------------------------------

    def _list_events(self) -> tuple[int, dict]:
        query = {
            k: v[-1]
            for k, v in parse_qs(request.query_string.decode(), keep_blank_values=True).items()
        }
        try:
            page_size = int(query.get("page_size", "10"))
        except ValueError:
            raise PayPalError(
                400, "INVALID_REQUEST", "Request is not well-formed.", "INVALID_PARAMETER_VALUE"
            ) from None
        if not 1 <= page_size <= 300:
            raise PayPalError(
                400, "INVALID_REQUEST", "Request is not well-formed.", "INVALID_PARAMETER_VALUE"
            )
        bounds = []
        for name, keep in (("start_time", lambda t, b: t >= b), ("end_time", lambda t, b: t <= b)):
            if query.get(name):
                bound = paypal._parse_time(query[name])
                if bound is None:
                    raise PayPalError(
                        400,
                        "INVALID_REQUEST",
                        "Request is not well-formed.",
                        "INVALID_PARAMETER_SYNTAX",
                    )
                bounds.append((keep, bound))
        selected = [
            e
            for e in reversed(self.events)  # newest first
            if (not query.get("event_type") or e["event_type"] == query["event_type"])
            and all(keep(paypal._parse_time(e["create_time"]), bound) for keep, bound in bounds)
        ]
        after = query.get("next_page_id")
        if after:
            ids = [e["id"] for e in selected]
            if after not in ids:
                raise PayPalError(
                    400, "INVALID_REQUEST", "Request is not well-formed.", "INVALID_PARAMETER_VALUE"
                )
            selected = selected[ids.index(after) + 1 :]
        page = selected[:page_size]
        links = []
        if len(selected) > page_size:
            following = {k: v for k, v in query.items() if k != "next_page_id"} | {
                "next_page_id": page[-1]["id"]
            }
            links.append(
                {
                    "href": f"https://api.sandbox.paypal.com/v1/notifications/webhooks-events?{urlencode(following)}",
                    "rel": "next",
                    "method": "GET",
                }
            )
        return 200, {"events": copy.deepcopy(page), "count": len(page), "links": links}

    def _verify_signature(self) -> tuple[int, dict]:
        raw = request.get_data()
        body = self._body()
        missing = [
            k
            for k in (
                "auth_algo",
                "cert_url",
                "transmission_id",
                "transmission_sig",
                "transmission_time",
                "webhook_id",
                "webhook_event",
            )
            if not body.get(k)
        ]
        if missing:
            raise PayPalError(
                400,
                "VALIDATION_ERROR",
                "Invalid request - see details.",
                "MISSING_REQUIRED_PARAMETER",
            )
        event = body["webhook_event"]
        signed = self.deliveries.get(event.get("id")) if isinstance(event, dict) else None
        ok = (
            signed is not None
            and body["webhook_id"] == self.webhook_ids[0]  # the id the fake signs for
            and signed[0] in raw  # PayPal checks the CRC32 of what it is sent: byte for byte
            and all(
                body[k] == signed[1][h]
                for k, h in (
                    ("transmission_id", paypal.TRANSMISSION_ID_HEADER),
                    ("transmission_sig", paypal.TRANSMISSION_SIG_HEADER),
                    ("transmission_time", paypal.TRANSMISSION_TIME_HEADER),
                    ("cert_url", paypal.CERT_URL_HEADER),
                    ("auth_algo", paypal.AUTH_ALGO_HEADER),
                )
            )  # fmt: skip
        )
        return 200, {"verification_status": "SUCCESS" if ok else "FAILURE"}
