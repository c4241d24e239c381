"""Recovery for PayPal: what application/recovery.py does for Stripe, through PayPal's APIs.

* ``sweep_pending``: PayPal payments still pending or processing after a
  minimum age are read through the Orders API (``GET /v2/checkout/orders/<id>``),
  claimed as the Stripe sweep claims its own (``SKIP LOCKED`` and a lease, no
  transaction across a call). The order as it stands becomes a synthetic
  ``CHECKOUT.ORDER.APPROVED`` event (``sweep:<order>:<order status>:<capture
  status>``) applied like any other: a capture completed, pending or declined
  is applied as such; a voided order is cancelled; an approval nobody
  captured (its webhook lost) asks for the capture, after commit, through the
  lookup mechanism; an order the buyer has not approved is left alone until
  its expiry (``expires_at``: PAYPAL_ORDER_EXPIRY_SECONDS after it was made)
  plus the grace has passed, and then expired (``paypal.ORDER_EXPIRED``), as is
  an overdue order PayPal no longer knows. An approval that comes after all
  still captures and pays: the lifecycle lets an expired payment complete.
* ``reconcile_events``: PayPal's webhook events since the cursor (minus an
  overlap), ``GET /v1/notifications/webhooks-events``; those of the types we
  handle that the inbox lacks are applied as found by reconciliation. The
  cursor, per provider, moves only after a clean run.
* ``verify``: one order, now (the buyer is back on the return page before the webhook).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from application.recovery import (
    Claimed,
    ProviderRecovery,
    credits_added,
    look_up_now,
    reconcile_listed,
    verification,
)
from application.unit import UnitOfWork
from models.enums import PaymentStatus
from providers import paypal
from providers.changes import (
    CaptureRequested,
    Ignored,
    PaymentCanceled,
    PaymentExpired,
    PaymentFailed,
    PaymentProcessing,
    PaymentSucceeded,
    ProviderEvent,
)
from providers.errors import ProviderNotFoundError

OUTCOMES = {
    PaymentSucceeded: "completed",
    PaymentProcessing: "still open",
    PaymentFailed: "failed",
    PaymentCanceled: "expired",
    PaymentExpired: "expired",
    CaptureRequested: "capture requested",
}


def order_event(source: str, order: dict, now: datetime) -> ProviderEvent:
    """An order as PayPal answers it, as the approval event that would carry it."""
    unit = paypal._first(order.get("purchase_units"))
    capture = paypal._latest_capture(unit) or {}
    body = {
        "id": f"{source}:{order.get('id')}:{order.get('status')}:{capture.get('status', 'none')}",
        "event_type": "CHECKOUT.ORDER.APPROVED",
        "resource_type": "checkout-order",
        "create_time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "resource": order,
    }
    return paypal.parse_event(orjson.dumps(body))


def expired_order_event(source: str, order_id: str, status: str, now: datetime) -> ProviderEvent:
    """The sweep's verdict on an order nobody approved before its expiry (``status``: PayPal's, or GONE)."""
    body = {
        "id": f"{source}:{order_id}:{status}:expired",
        "event_type": paypal.ORDER_EXPIRED,
        "resource_type": "checkout-order",
        "create_time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "resource": {"id": order_id, "status": status},
    }
    return paypal.parse_event(orjson.dumps(body))


class PayPalRecovery(ProviderRecovery):
    provider = paypal.NAME

    def __init__(self, unit: UnitOfWork, api) -> None:
        super().__init__(unit)
        self.api = api

    def look(self, claim: Claimed, *, now: datetime, expiry_grace: timedelta) -> tuple[str, ProviderEvent | None]:
        """The order as it stands; one nobody approved (or PayPal forgot) past its expiry and the grace, expired."""
        # Only a payment still pending: one processing has a capture on its way, whatever the order says.
        overdue = claim.status == PaymentStatus.PENDING and claim.overdue(now, expiry_grace)
        try:
            order = self.api.get_order(claim.session_id)
        except ProviderNotFoundError:
            if not overdue:  # a typo'd id, or PayPal's listing not caught up: ask again next time
                raise
            order = None  # PayPal forgot an order nobody approved
        event = order_event("sweep", order, now) if order is not None else None
        change = paypal.translate(event) if event is not None else Ignored("order gone")
        if isinstance(change, Ignored) and overdue:
            status = str(order.get("status") or "UNKNOWN") if order is not None else "GONE"
            event = expired_order_event("sweep", claim.session_id, status, now)
            change = paypal.translate(event)
        if isinstance(change, Ignored):
            return "still open", None
        return OUTCOMES.get(type(change), "still open"), event

    def reconcile_events(
        self,
        *,
        overlap: timedelta,
        initial_lookback: timedelta,
        since: datetime | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> dict:
        """Apply every PayPal event of a handled type that the inbox lacks; return what was found."""
        handled = set(paypal.HANDLED_TYPES)
        return reconcile_listed(
            self.database, paypal.NAME,
            lambda start: self.api.list_webhook_events(start_time=start),
            created_of=lambda raw: paypal._parse_time(raw.get("create_time")),
            handled=lambda raw: raw.get("event_type") in handled,
            parse=lambda raw: paypal.parse_event(orjson.dumps(raw)),
            apply=self._apply,
            overlap=overlap, initial_lookback=initial_lookback, since=since, dry_run=dry_run, now=now,
        )

    def verify(self, order_id: str, *, now: datetime | None = None) -> dict:
        """Ask PayPal about one order now and apply its answer (the return page's check).

        An order approved but not captured yet is captured here, before the
        answer (the same ``PayPal-Request-Id`` as every other capture of it).
        """
        now = now or datetime.now(UTC)
        order = self.api.get_order(order_id)
        event = order_event("verify", order, now)
        added = 0
        if not isinstance(paypal.translate(event), Ignored):
            result = self._apply(event, source="verify")
            look_up_now(self.unit, self.api, paypal.NAME, order_id, result)  # an approval: capture it now
            added = credits_added(self.database, event.id) if not result.duplicate else 0
        capture = paypal._latest_capture(paypal._first(order.get("purchase_units"))) or {}
        return verification(self.database, paypal.NAME, order_id, added,
                            provider_status=order.get("status"), provider_payment_status=capture.get("status"))

