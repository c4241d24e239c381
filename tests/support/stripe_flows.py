"""The flow corpus: what Stripe sends for each kind of purchase, and what it must end in.

Each flow function takes fresh ids (``Ids``) and a shape (``"basil"`` or
``"legacy"``, see ``stripe_events``) and returns a ``Flow``: the events in the
order Stripe creates them (plain dicts, ready to encode, sign and deliver), the
configuration the flow needs (credit catalog, plans, fraud policy, a payment
recorded beforehand, line items the fake Stripe must serve), and the expected
end state — per payment its status and credits, per user the balance and totals.

The expectations are the specification of issue 8, written as data:

- credits are granted once per paid payment: a one-off Checkout Session, a
  PaymentIntent-only payment, each paid invoice with an amount above zero; a
  Checkout Session and its own PaymentIntent are one payment;
- refunds take back ``floor(credits × refunded / captured)`` of the cumulative
  refunded amount, so a full refund takes back everything; a refund that later
  fails or is canceled gives back what it took, and the status follows the
  refunded amount that remains;
- a lost dispute takes back everything and ends ``refunded``; a won one returns
  the payment to what it was; an open dispute keeps the credits (frozen if the
  fraud policy freezes);
- before payment the newest event by ``created`` wins, and a paid event beats
  expired/cancelled; a tie in ``created`` may end either way, but the same way
  whatever the arrival order;
- subscription-mode Checkout events never grant; $0 invoices grant nothing
  unless the plan allows it.

Every flow must end the same whatever order its events are delivered in
(DESIGN.md, invariant 4), so a test may deliver ``flow.events`` in any
permutation and compare with ``flow.payments`` and ``flow.users``.

``taken_back`` is net: what clawbacks took minus what failed refunds gave back,
so ``balance = purchased − taken_back − spent`` always holds. ``frozen`` credits
are part of the balance but not spendable.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from providers.stripe import parse_event
from tests.support import stripe_events as se
from tests.support.stripe_events import SHAPES, encode

STATUSES = frozenset(
    {
        "pending",
        "processing",
        "completed",
        "failed",
        "expired",
        "cancelled",
        "refunded",
        "partially_refunded",
        "disputed",
    }
)

CREDITS = 100  # a one-off purchase
AMOUNT = 2000  # its price, in cents
PERIOD_CREDITS = 500  # a subscription period
PLAN_AMOUNT = 2000
DAY = 86400


# -- ids and time ----------------------------------------------------------------------


class Ids:
    """Fresh provider ids for one flow, all carrying one tag so every row it makes can be found.

    ``ids("pi")`` is the flow's PaymentIntent, the same on every call;
    ``ids("pi", "2")`` a second one; ``ids.fresh("evt")`` a new id each call.
    ``t0`` is the ``created`` time of the flow's first event (default: a day ago).
    """

    def __init__(self, tag: str | None = None, *, t0: int | None = None) -> None:
        self.tag = tag or uuid.uuid4().hex[:12]
        self.t0 = t0 if t0 is not None else int(time.time()) - DAY
        self._named: dict[tuple[str, str], str] = {}
        self._seq = itertools.count(1)
        self.issued: set[str] = set()

    def __call__(self, prefix: str, name: str = "") -> str:
        key = (prefix, name)
        if key not in self._named:
            self._named[key] = self._issue(f"{prefix}_{self.tag}" + (f"_{name}" if name else ""))
        return self._named[key]

    def fresh(self, prefix: str) -> str:
        return self._issue(f"{prefix}_{self.tag}_{next(self._seq)}")

    def _issue(self, value: str) -> str:
        self.issued.add(value)
        return value

    # the ids most flows use
    @property
    def user(self) -> str:
        return self("user")

    @property
    def session(self) -> str:
        return self("cs_test")

    @property
    def pi(self) -> str:
        return self("pi")

    @property
    def charge(self) -> str:
        return self("ch")


class _Timeline:
    """Events in Stripe's order, with ``created`` times that never go backwards."""

    def __init__(self, ids: Ids, shape: str) -> None:
        se.api_version(shape)  # rejects an unknown shape
        self.ids, self.shape = ids, shape
        self.now = ids.t0
        self.events: list[dict] = []

    def later(self, seconds: int) -> int:
        self.now += seconds
        return self.now

    def emit(self, event_type: str, obj: dict, *, previous_attributes: dict | None = None) -> dict:
        evt = se.event(
            event_type,
            obj,
            event_id=self.ids.fresh("evt"),
            created=self.now,
            shape=self.shape,
            previous_attributes=previous_attributes,
        )
        self.events.append(evt)
        return evt


# -- what a flow is --------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedPayment:
    """A payment the host application recorded before checkout (``POST /api/payments``)."""

    session_id: str
    user_id: str
    credits: int
    amount_cents: int
    currency: str = "usd"


@dataclass(frozen=True)
class Config:
    """What payhooks must be configured with for a flow to end as expected."""

    catalog: Mapping[str, int] = field(default_factory=dict)  # price id → credits per unit
    plans: Mapping[str, int] = field(
        default_factory=dict
    )  # subscription price id → credits per period
    zero_amount_plans: frozenset[str] = frozenset()  # plans whose $0 invoices grant (default: none)
    freeze_on_fraud: bool = False  # early fraud warnings and open disputes freeze unspent credits
    recorded: tuple[RecordedPayment, ...] = ()  # record these before delivering any event
    # Checkout Session id → its line items, as GET /v1/checkout/sessions/{id}/line_items
    # returns them with expand[]=data.price.product (see ``serve``)
    line_items: Mapping[str, tuple[dict, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PaymentOutcome:
    """How one payment must end. ``key`` is the provider id it is found by."""

    key: str  # Checkout Session, invoice or PaymentIntent id
    user_id: str
    statuses: frozenset[str]  # one status; two only where a same-second tie may go either way
    granted: int
    taken_back: int = 0
    frozen: int = 0
    amount_cents: int | None = None  # the amount refund proportions are computed on (captured)
    currency: str = "usd"
    also_known_as: tuple[
        str, ...
    ] = ()  # other provider ids of the same payment (its PaymentIntent)

    @property
    def status(self) -> str:
        if len(self.statuses) != 1:
            raise ValueError(f"{self.key} may end as any of {sorted(self.statuses)}")
        return next(iter(self.statuses))

    @property
    def net(self) -> int:
        return self.granted - self.taken_back


@dataclass(frozen=True)
class UserOutcome:
    balance: int
    purchased: int
    taken_back: int
    spent: int = 0
    frozen: int = 0


@dataclass(frozen=True)
class Flow:
    name: str
    shape: str
    description: str
    events: tuple[dict, ...]
    config: Config
    payments: tuple[PaymentOutcome, ...]
    users: Mapping[str, UserOutcome]
    subscriptions: Mapping[str, str] = field(default_factory=dict)  # subscription id → final status
    no_grant: tuple[str, ...] = ()  # provider ids that must never be granted for
    ids: frozenset[str] = frozenset()  # every provider id the flow issued

    def payment(self, key: str) -> PaymentOutcome:
        for outcome in self.payments:
            if key == outcome.key or key in outcome.also_known_as:
                return outcome
        raise KeyError(key)

    def bodies(self) -> list[bytes]:
        """The events as Stripe would send them: compact JSON bytes, to sign and deliver."""
        return [encode(evt) for evt in self.events]

    def parsed(self):
        """The events as ``providers.stripe.ProviderEvent``s, for handler-level tests."""
        return [parse_event(body) for body in self.bodies()]

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(evt["type"] for evt in self.events)


def _paid(
    key,
    user,
    credits,
    *,
    amount=AMOUNT,
    aka=(),
    taken_back=0,
    status=None,
    frozen=0,
    currency="usd",
):
    if status is None:
        status = (
            "completed"
            if not taken_back
            else ("refunded" if taken_back >= credits else "partially_refunded")
        )
    return PaymentOutcome(
        key=key,
        user_id=user,
        statuses=frozenset({status}),
        granted=credits,
        taken_back=taken_back,
        frozen=frozen,
        amount_cents=amount,
        currency=currency,
        also_known_as=tuple(aka),
    )


def _unpaid(key, user, *statuses: str, aka=()) -> PaymentOutcome:
    return PaymentOutcome(
        key=key, user_id=user, statuses=frozenset(statuses), granted=0, also_known_as=tuple(aka)
    )


def _user(purchased: int, taken_back: int = 0, *, frozen: int = 0) -> UserOutcome:
    return UserOutcome(
        balance=purchased - taken_back, purchased=purchased, taken_back=taken_back, frozen=frozen
    )


def _flow(name, tl: _Timeline, description, *, payments, users, config=None, **extra) -> Flow:
    return Flow(
        name=name,
        shape=tl.shape,
        description=description,
        events=tuple(tl.events),
        config=config or Config(),
        payments=tuple(payments),
        users=users,
        ids=frozenset(tl.ids.issued),
        **extra,
    )


# -- building blocks: what Stripe sends for one step ------------------------------------


def _session(ids: Ids, tl: _Timeline, **fields) -> dict:
    fields.setdefault("session_id", ids.session)
    fields.setdefault("user_id", ids.user)
    fields.setdefault("credits", str(CREDITS))
    fields.setdefault("amount_total", AMOUNT)
    fields.setdefault("payment_intent", ids.pi)
    fields.setdefault("created", ids.t0)
    return se.checkout_session(**fields)


def _intent(ids: Ids, tl: _Timeline, status: str, *, pi=None, amount=AMOUNT, **fields) -> dict:
    pi = pi or ids.pi
    if status == "succeeded":
        fields.setdefault("latest_charge", ids("ch", pi.removeprefix(f"pi_{ids.tag}").lstrip("_")))
    return se.payment_intent(pi, status, amount=amount, created=ids.t0, shape=tl.shape, **fields)


def _charge(
    ids: Ids, tl: _Timeline, refunded: int, *, amount=AMOUNT, pi=None, charge_id=None, **fields
) -> dict:
    return se.charge(
        pi or ids.pi,
        amount,
        refunded,
        charge_id=charge_id or ids.charge,
        created=ids.t0,
        shape=tl.shape,
        **fields,
    )


def _checkout_paid(ids: Ids, tl: _Timeline, **session_fields) -> dict:
    """A card payment through Checkout: its PaymentIntent succeeds, then the session completes."""
    amount = session_fields.get("amount_total", AMOUNT)
    tl.later(1)
    tl.emit("payment_intent.succeeded", _intent(ids, tl, "succeeded", amount=amount))
    session = _session(ids, tl, **session_fields)
    tl.emit("checkout.session.completed", session)
    return session


def _refund(
    ids: Ids,
    tl: _Timeline,
    refund_amount: int,
    cumulative: int,
    *,
    amount=AMOUNT,
    name="",
    status="succeeded",
    pi=None,
    charge_id=None,
    invoice=None,
) -> dict:
    """A refund as Stripe reports it: ``refund.created``, then ``charge.refunded`` (cumulative)."""
    pi, charge_id = pi or ids.pi, charge_id or ids.charge
    tl.later(60)
    obj = se.refund(charge_id, pi, refund_amount, status, refund_id=ids("re", name), created=tl.now)
    tl.emit("refund.created", obj)
    tl.emit(
        "charge.refunded",
        _charge(ids, tl, cumulative, amount=amount, pi=pi, charge_id=charge_id, invoice=invoice),
    )
    return obj


def _refund_reversed(tl: _Timeline, refund: dict, status: str) -> None:
    """A refund that failed or was canceled after it was created: every event Stripe sends."""
    obj = dict(refund, status=status)
    if status == "failed":
        obj = se.refund(
            refund["charge"],
            refund["payment_intent"],
            refund["amount"],
            "failed",
            refund_id=refund["id"],
            created=refund["created"],
            failure_balance_transaction=refund["id"].replace("re_", "txn_", 1),
        )
    previous = {"status": refund["status"]}
    tl.emit("refund.updated", obj, previous_attributes=previous)
    tl.emit("charge.refund.updated", obj, previous_attributes=previous)
    if status == "failed":
        tl.emit("refund.failed", obj)


def _subscription_invoice(
    ids: Ids,
    tl: _Timeline,
    n: str,
    sub: str,
    *,
    amount=PLAN_AMOUNT,
    user=None,
    credits=PERIOD_CREDITS,
    reason="subscription_cycle",
    price_id=None,
) -> str:
    """One paid subscription invoice, as each shape reports it; returns its PaymentIntent id.

    Basil: the invoice's PaymentIntent succeeds (no metadata, no invoice field),
    an ``invoice_payment.paid`` links the two, then ``invoice.paid``. Legacy:
    the PaymentIntent names its invoice and the invoice its PaymentIntent.
    A $0 invoice has no PaymentIntent at all.
    """
    invoice_id = ids("in", n)
    user = user or ids.user
    price_id = price_id or ids("price", "plan")
    pi = ids("pi", n) if amount else None
    charge_id = ids("ch", n) if amount else None
    if amount:
        intent = se.payment_intent(
            pi,
            "succeeded",
            amount=amount,
            latest_charge=charge_id,
            created=tl.now,
            invoice=invoice_id,
            shape=tl.shape,
        )
        tl.emit("payment_intent.succeeded", intent)
        if tl.shape == "basil":
            tl.emit(
                "invoice_payment.paid",
                se.invoice_payment(
                    invoice_id, pi, amount, inpay_id=ids("inpay", n), created=tl.now
                ),
            )
    inv = se.invoice(
        invoice_id,
        sub,
        user_id=user,
        credits=str(credits),
        price_id=price_id,
        amount_paid=amount,
        payment_intent=pi if tl.shape == "legacy" else None,
        charge_id=charge_id,
        customer=ids("cus"),
        billing_reason=reason,
        created=tl.now,
        period_start=tl.now,
        line_id=ids("il", n),
        subscription_item=ids("si"),
        shape=tl.shape,
    )
    tl.emit("invoice.paid", inv)
    return pi


def _subscription_obj(
    ids: Ids, tl: _Timeline, status: str, *, credits=PERIOD_CREDITS, **fields
) -> dict:
    fields.setdefault("current_period_end", tl.now + 30 * DAY)
    return se.subscription(
        ids("sub"),
        status,
        user_id=ids.user,
        credits=str(credits),
        price_id=ids("price", "plan"),
        customer=ids("cus"),
        unit_amount=PLAN_AMOUNT,
        created=ids.t0,
        item_id=ids("si"),
        shape=tl.shape,
        **fields,
    )


# -- the flows ----------------------------------------------------------------------------


def checkout_paid(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    _checkout_paid(ids, tl)
    return _flow(
        "checkout_paid",
        tl,
        "A one-off card payment through Checkout: the session's own PaymentIntent (no metadata) "
        "succeeds, then checkout.session.completed (paid) grants once.",
        payments=[_paid(ids.session, ids.user, CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS)},
    )


def async_paid(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    sepa = {"payment_method_types": ["sepa_debit"]}
    tl.later(1)
    tl.emit("payment_intent.processing", _intent(ids, tl, "processing", **sepa))
    tl.emit("checkout.session.completed", _session(ids, tl, paid=False, **sepa))
    tl.later(3 * DAY)
    tl.emit("payment_intent.succeeded", _intent(ids, tl, "succeeded", **sepa))
    tl.emit("checkout.session.async_payment_succeeded", _session(ids, tl, paid=True, **sepa))
    return _flow(
        "async_paid",
        tl,
        "SEPA Debit through Checkout: the session completes unpaid (processing), the payment "
        "clears days later (async_payment_succeeded) and grants once.",
        payments=[_paid(ids.session, ids.user, CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS)},
    )


def async_failed(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    sepa = {"payment_method_types": ["sepa_debit"]}
    tl.later(1)
    tl.emit("payment_intent.processing", _intent(ids, tl, "processing", **sepa))
    tl.emit("checkout.session.completed", _session(ids, tl, paid=False, **sepa))
    tl.later(3 * DAY)
    error = {
        "type": "invalid_request_error",
        "code": "payment_method_provider_decline",
        "message": "The customer's bank declined the debit.",
    }
    tl.emit(
        "payment_intent.payment_failed",
        _intent(ids, tl, "requires_payment_method", last_payment_error=error, **sepa),
    )
    tl.emit("checkout.session.async_payment_failed", _session(ids, tl, paid=False, **sepa))
    return _flow(
        "async_failed",
        tl,
        "SEPA Debit through Checkout whose debit fails: processing, then failed; nothing granted.",
        payments=[_unpaid(ids.session, ids.user, "failed", aka=[ids.pi])],
        users={ids.user: _user(0)},
    )


def expired(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    tl.later(DAY)
    # Since 2022-08-01 Checkout creates the PaymentIntent only when the customer
    # tries to pay, so an abandoned session has none.
    tl.emit(
        "checkout.session.expired",
        _session(ids, tl, status="expired", paid=False, payment_intent=None),
    )
    return _flow(
        "expired",
        tl,
        "A Checkout Session nobody paid, expired after 24 hours; nothing granted.",
        payments=[_unpaid(ids.session, ids.user, "expired")],
        users={ids.user: _user(0)},
    )


def failed_then_paid(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    tl.later(1)
    declined = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    }
    tl.emit(
        "payment_intent.payment_failed",
        _intent(ids, tl, "requires_payment_method", last_payment_error=declined),
    )
    tl.later(30)
    _checkout_paid(ids, tl)
    return _flow(
        "failed_then_paid",
        tl,
        "A declined card, then a second card that works, in one Checkout Session: the failed "
        "attempt is recorded, the payment completes and grants once.",
        payments=[_paid(ids.session, ids.user, CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS)},
    )


def partial_refunds_then_full(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    amount = 1999  # so each partial share rounds
    _checkout_paid(ids, tl, amount_total=amount)
    _refund(ids, tl, 333, 333, amount=amount, name="1")  # floor(100 × 333 / 1999) = 16
    _refund(ids, tl, 667, 1000, amount=amount, name="2")  # floor(100 × 1000 / 1999) = 50
    _refund(ids, tl, 999, 1999, amount=amount, name="3")  # everything
    return _flow(
        "partial_refunds_then_full",
        tl,
        "Three refunds of 333, 667 and 999 of 1999: 16, then 50 in all, then every credit taken "
        "back, because the share is computed on the cumulative amount.",
        payments=[
            _paid(ids.session, ids.user, CREDITS, amount=amount, taken_back=CREDITS, aka=[ids.pi])
        ],
        users={ids.user: _user(CREDITS, CREDITS)},
    )


def _dispute_flow(ids: Ids, shape: str, outcome: str | None) -> _Timeline:
    tl = _Timeline(ids, shape)
    _checkout_paid(ids, tl)
    tl.later(7 * DAY)
    dp = ids("dp")
    opened = se.dispute(ids.pi, dp, "needs_response", AMOUNT, charge_id=ids.charge, created=tl.now)
    tl.emit("charge.dispute.created", opened)
    if outcome:
        tl.later(60 * DAY)
        closed = se.dispute(
            ids.pi, dp, outcome, AMOUNT, charge_id=ids.charge, created=opened["created"]
        )
        tl.emit("charge.dispute.closed", closed, previous_attributes={"status": "under_review"})
    return tl


def dispute_won(ids: Ids, shape: str = "basil") -> Flow:
    tl = _dispute_flow(ids, shape, "won")
    return _flow(
        "dispute_won",
        tl,
        "A dispute the merchant wins: disputed, then back to completed, credits kept.",
        payments=[_paid(ids.session, ids.user, CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS)},
    )


def dispute_lost(ids: Ids, shape: str = "basil") -> Flow:
    tl = _dispute_flow(ids, shape, "lost")
    return _flow(
        "dispute_lost",
        tl,
        "A dispute the merchant loses: every credit taken back, ends refunded.",
        payments=[_paid(ids.session, ids.user, CREDITS, taken_back=CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS, CREDITS)},
    )


def dispute_open(ids: Ids, shape: str = "basil") -> Flow:
    tl = _dispute_flow(ids, shape, None)
    return _flow(
        "dispute_open",
        tl,
        "A dispute still open, fraud freeze off: disputed, credits kept and spendable.",
        payments=[_paid(ids.session, ids.user, CREDITS, status="disputed", aka=[ids.pi])],
        users={ids.user: _user(CREDITS)},
    )


def dispute_open_frozen(ids: Ids, shape: str = "basil") -> Flow:
    tl = _dispute_flow(ids, shape, None)
    return _flow(
        "dispute_open_frozen",
        tl,
        "A dispute still open with the fraud freeze on: disputed, credits kept but frozen "
        "until it closes.",
        config=Config(freeze_on_fraud=True),
        payments=[
            _paid(ids.session, ids.user, CREDITS, status="disputed", frozen=CREDITS, aka=[ids.pi])
        ],
        users={ids.user: _user(CREDITS, frozen=CREDITS)},
    )


def subscription_renewals(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    sub = ids("sub")
    tl.later(1)
    tl.emit("customer.subscription.created", _subscription_obj(ids, tl, "active"))
    pi1 = _subscription_invoice(ids, tl, "1", sub, reason="subscription_create")
    tl.later(30 * DAY)
    tl.emit(
        "customer.subscription.updated",
        _subscription_obj(ids, tl, "active"),
        previous_attributes={"latest_invoice": ids("in", "1")},
    )
    pi2 = _subscription_invoice(ids, tl, "2", sub)
    tl.later(10 * DAY)
    tl.emit(
        "customer.subscription.updated",
        _subscription_obj(ids, tl, "active", cancel_at_period_end=True),
        previous_attributes={"cancel_at_period_end": False},
    )
    tl.later(20 * DAY)
    tl.emit("customer.subscription.deleted", _subscription_obj(ids, tl, "canceled"))
    return _flow(
        "subscription_renewals",
        tl,
        "A subscription: created, first invoice paid, renewal paid, canceled at period end. "
        "Each paid invoice grants one period's credits once; the subscription ends canceled.",
        payments=[
            _paid(ids("in", "1"), ids.user, PERIOD_CREDITS, aka=[pi1]),
            _paid(ids("in", "2"), ids.user, PERIOD_CREDITS, aka=[pi2]),
        ],
        users={ids.user: _user(2 * PERIOD_CREDITS)},
        subscriptions={sub: "canceled"},
    )


def subscription_refunded(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    sub = ids("sub")
    tl.later(1)
    tl.emit("customer.subscription.created", _subscription_obj(ids, tl, "active"))
    pi = _subscription_invoice(ids, tl, "1", sub, reason="subscription_create")
    _refund(
        ids,
        tl,
        PLAN_AMOUNT,
        PLAN_AMOUNT,
        amount=PLAN_AMOUNT,
        pi=pi,
        charge_id=ids("ch", "1"),
        invoice=ids("in", "1"),
    )
    how = "invoice_payment.paid" if shape == "basil" else "invoice.payment_intent"
    return _flow(
        "subscription_refunded",
        tl,
        f"A subscription invoice refunded in full: charge.refunded names only the PaymentIntent, "
        f"which leads to the invoice's payment through {how}; the period's credits are taken back.",
        payments=[
            _paid(ids("in", "1"), ids.user, PERIOD_CREDITS, taken_back=PERIOD_CREDITS, aka=[pi])
        ],
        users={ids.user: _user(PERIOD_CREDITS, PERIOD_CREDITS)},
        subscriptions={sub: "active"},
    )


def subscription_checkout_sepa(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    sub, inv = ids("sub"), ids("in", "1")
    sepa = {"payment_method_types": ["sepa_debit"]}
    session_fields = dict(
        mode="subscription",
        subscription=sub,
        invoice=inv,
        customer=ids("cus"),
        credits=str(PERIOD_CREDITS),
        amount_total=PLAN_AMOUNT,
        **sepa,
    )
    tl.later(1)
    tl.emit("customer.subscription.created", _subscription_obj(ids, tl, "incomplete"))
    pending = se.payment_intent(
        ids("pi", "1"),
        "processing",
        amount=PLAN_AMOUNT,
        created=tl.now,
        invoice=inv,
        shape=shape,
        **sepa,
    )
    tl.emit("payment_intent.processing", pending)
    tl.emit("checkout.session.completed", _session(ids, tl, paid=False, **session_fields))
    tl.later(3 * DAY)
    pi = _subscription_invoice(ids, tl, "1", sub, reason="subscription_create")
    tl.emit(
        "customer.subscription.updated",
        _subscription_obj(ids, tl, "active"),
        previous_attributes={"status": "incomplete"},
    )
    tl.emit(
        "checkout.session.async_payment_succeeded", _session(ids, tl, paid=True, **session_fields)
    )
    return _flow(
        "subscription_checkout_sepa",
        tl,
        "A subscription bought through Checkout with SEPA Debit: the session completes unpaid, "
        "the first invoice is paid days later, then async_payment_succeeded arrives in "
        "subscription mode. Only the invoice grants, once; the session (whose metadata even "
        "names credits) never does.",
        payments=[_paid(inv, ids.user, PERIOD_CREDITS, aka=[pi])],
        users={ids.user: _user(PERIOD_CREDITS)},
        subscriptions={sub: "active"},
        no_grant=(ids.session,),
    )


def _tax_discount(ids: Ids, shape: str, refunded: int, name: str) -> Flow:
    tl = _Timeline(ids, shape)
    credits, listed = 101, 2000
    captured = listed - 500 + 150  # a 500 discount, then 150 tax
    recorded = RecordedPayment(ids.session, ids.user, credits, listed)
    _checkout_paid(
        ids,
        tl,
        credits=None,
        amount_subtotal=listed,
        amount_discount=500,
        amount_tax=150,
        amount_total=captured,
    )
    _refund(ids, tl, refunded, refunded, amount=captured)
    taken = credits * refunded // captured
    half = "half" if refunded < captured else "all"
    return _flow(
        name,
        tl,
        f"A payment recorded at {listed} but captured at {captured} (a discount, then tax); "
        f"a refund of {refunded} takes back {half} of the {credits} credits ({taken}), computed "
        f"on the captured amount. The paid amount is kept on the payment and the difference counted.",
        config=Config(recorded=(recorded,)),
        payments=[
            _paid(ids.session, ids.user, credits, amount=captured, taken_back=taken, aka=[ids.pi])
        ],
        users={ids.user: _user(credits, taken)},
    )


def tax_discount_full_refund(ids: Ids, shape: str = "basil") -> Flow:
    return _tax_discount(ids, shape, 1650, "tax_discount_full_refund")


def tax_discount_half_refund(ids: Ids, shape: str = "basil") -> Flow:
    return _tax_discount(ids, shape, 825, "tax_discount_half_refund")


def _trial(ids: Ids, shape: str, *, zero_grants: bool, name: str) -> Flow:
    tl = _Timeline(ids, shape)
    sub, plan = ids("sub"), ids("price", "plan")
    tl.later(1)
    trial_end = tl.now + 14 * DAY
    tl.emit(
        "customer.subscription.created",
        _subscription_obj(ids, tl, "trialing", trial_end=trial_end, current_period_end=trial_end),
    )
    _subscription_invoice(ids, tl, "0", sub, amount=0, reason="subscription_create")
    tl.later(14 * DAY)
    tl.emit(
        "customer.subscription.updated",
        _subscription_obj(ids, tl, "active", trial_end=trial_end),
        previous_attributes={"status": "trialing"},
    )
    pi = _subscription_invoice(ids, tl, "1", sub)
    paid = _paid(ids("in", "1"), ids.user, PERIOD_CREDITS, aka=[pi])
    if zero_grants:
        trial = _paid(ids("in", "0"), ids.user, PERIOD_CREDITS, amount=0)
        return _flow(
            name,
            tl,
            "A free trial ($0 first invoice) on a plan configured to grant $0 invoices, then the "
            "first paid invoice: both grant a period's credits.",
            config=Config(zero_amount_plans=frozenset({plan})),
            payments=[trial, paid],
            users={ids.user: _user(2 * PERIOD_CREDITS)},
            subscriptions={sub: "active"},
        )
    return _flow(
        name,
        tl,
        "A free trial: the $0 first invoice grants nothing (the default), the first paid invoice "
        "after the trial grants a period's credits.",
        payments=[paid],
        users={ids.user: _user(PERIOD_CREDITS)},
        subscriptions={sub: "active"},
        no_grant=(ids("in", "0"),),
    )


def trial_then_paid(ids: Ids, shape: str = "basil") -> Flow:
    return _trial(ids, shape, zero_grants=False, name="trial_then_paid")


def trial_granted_by_plan(ids: Ids, shape: str = "basil") -> Flow:
    return _trial(ids, shape, zero_grants=True, name="trial_granted_by_plan")


def payment_link(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    by_catalog = se.price(ids("price", "a"), 1000, product_id=ids("prod", "a"))
    by_price = se.price(
        ids("price", "b"), 500, product_id=ids("prod", "b"), metadata={"credits": "50"}
    )
    by_product = se.price(ids("price", "c"), 300, product_id=ids("prod", "c"))
    products = {
        ids("prod", "a"): se.product(ids("prod", "a"), "100 credits"),
        ids("prod", "b"): se.product(ids("prod", "b"), "Bonus pack"),
        ids("prod", "c"): se.product(ids("prod", "c"), "Top-up", metadata={"credits": "25"}),
    }
    items = tuple(
        se.line_item(p, quantity, item_id=ids("li", str(n)), product_obj=products[p["product"]])
        for n, (p, quantity) in enumerate([(by_catalog, 2), (by_price, 1), (by_product, 2)], 1)
    )
    total = sum(item["amount_total"] for item in items)
    credits = 100 * 2 + 50 * 1 + 25 * 2
    _checkout_paid(
        ids,
        tl,
        credits=None,
        user_id=None,
        metadata={},
        client_reference_id=ids.user,
        payment_link=ids("plink"),
        amount_total=total,
    )
    return _flow(
        "payment_link",
        tl,
        "A Payment Link purchase: the session has no metadata, only client_reference_id; its "
        "credits come from its line items read from the API: a price in the credit catalog "
        "(100 × 2), a price with metadata.credits (50 × 1), a product with metadata.credits "
        "(25 × 2) — 300 in all.",
        config=Config(catalog={by_catalog["id"]: 100}, line_items={ids.session: items}),
        payments=[_paid(ids.session, ids.user, credits, amount=total, aka=[ids.pi])],
        users={ids.user: _user(credits)},
    )


def _intent_only(ids: Ids, shape: str, first: str, name: str, description: str) -> Flow:
    tl = _Timeline(ids, shape)
    metadata = {"user_id": ids.user, "credits": str(CREDITS)}
    methods = ["us_bank_account"] if first == "processing" else ["card"]
    tl.later(1)
    tl.emit(
        f"payment_intent.{first}",
        _intent(ids, tl, first, metadata=metadata, payment_method_types=methods),
    )
    tl.later(2 * DAY if first == "processing" else 40)
    tl.emit(
        "payment_intent.succeeded",
        _intent(ids, tl, "succeeded", metadata=metadata, payment_method_types=methods),
    )
    return _flow(
        name,
        tl,
        description,
        payments=[_paid(ids.pi, ids.user, CREDITS)],
        users={ids.user: _user(CREDITS)},
    )


def payment_intent_only(ids: Ids, shape: str = "basil") -> Flow:
    return _intent_only(
        ids,
        shape,
        "processing",
        "payment_intent_only",
        "A PaymentIntent-only integration (Elements, ACH Debit): processing is recorded, "
        "succeeded grants metadata.credits once.",
    )


def payment_intent_requires_action(ids: Ids, shape: str = "basil") -> Flow:
    return _intent_only(
        ids,
        shape,
        "requires_action",
        "payment_intent_requires_action",
        "A PaymentIntent-only card payment that needs 3-D Secure: requires_action is "
        "recorded, succeeded grants once.",
    )


def session_intent_first(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    metadata = {"user_id": ids.user, "credits": str(CREDITS)}
    tl.later(1)
    # payment_intent_data.metadata copies the session's metadata to its PaymentIntent,
    # which can then be granted by itself: it and the session are one payment.
    tl.emit("payment_intent.succeeded", _intent(ids, tl, "succeeded", metadata=metadata))
    tl.later(1)
    tl.emit("checkout.session.completed", _session(ids, tl))
    return _flow(
        "session_intent_first",
        tl,
        "A Checkout Session whose PaymentIntent carries the same metadata and whose "
        "payment_intent.succeeded arrives first: one payment, granted once.",
        payments=[_paid(ids.session, ids.user, CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS)},
    )


def refund_fails(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    _checkout_paid(ids, tl)
    refund = _refund(ids, tl, AMOUNT, AMOUNT)
    tl.later(5 * DAY)
    _refund_reversed(tl, refund, "failed")
    return _flow(
        "refund_fails",
        tl,
        "A full refund that fails days later (the card was closed): refund.created and "
        "charge.refunded take every credit back, refund.updated / charge.refund.updated / "
        "refund.failed (status failed) give them all back; the payment is completed again.",
        payments=[_paid(ids.session, ids.user, CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS)},
    )


def refund_fails_partial(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    _checkout_paid(ids, tl)
    _refund(ids, tl, 500, 500, name="1")
    second = _refund(ids, tl, 1500, 2000, name="2")
    tl.later(5 * DAY)
    _refund_reversed(tl, second, "failed")
    kept = CREDITS * 500 // AMOUNT  # what the surviving refund of 500 takes back
    return _flow(
        "refund_fails_partial",
        tl,
        "Two refunds (500, then 1500: all of 2000), the second of which fails: what it took is "
        "given back and the status follows the 500 still refunded (partially_refunded, 25 taken).",
        payments=[_paid(ids.session, ids.user, CREDITS, taken_back=kept, aka=[ids.pi])],
        users={ids.user: _user(CREDITS, kept)},
    )


def refund_canceled(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    _checkout_paid(ids, tl)
    refund = _refund(ids, tl, AMOUNT, AMOUNT, status="requires_action")
    tl.later(2 * DAY)
    _refund_reversed(tl, refund, "canceled")
    return _flow(
        "refund_canceled",
        tl,
        "A refund that needed the customer's bank details (requires_action) and was canceled: "
        "what its charge.refunded took back is given back; completed again.",
        payments=[_paid(ids.session, ids.user, CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS)},
    )


def _fraud_warning(
    ids: Ids, tl: _Timeline, *, actionable: bool = True, created: int | None = None
) -> dict:
    return se.early_fraud_warning(
        ids.charge,
        ids.pi,
        efw_id=ids("issfr"),
        actionable=actionable,
        created=created if created is not None else tl.now,
    )


def fraud_warning(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    _checkout_paid(ids, tl)
    tl.later(2 * DAY)
    tl.emit("radar.early_fraud_warning.created", _fraud_warning(ids, tl))
    return _flow(
        "fraud_warning",
        tl,
        "An early fraud warning with the freeze off (the default): recorded, nothing changes.",
        payments=[_paid(ids.session, ids.user, CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS)},
    )


def fraud_warning_frozen(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    _checkout_paid(ids, tl)
    tl.later(2 * DAY)
    tl.emit("radar.early_fraud_warning.created", _fraud_warning(ids, tl))
    return _flow(
        "fraud_warning_frozen",
        tl,
        "An early fraud warning with the freeze on: the payment's unspent credits are frozen "
        "(kept in the balance, not spendable); the status stays completed.",
        config=Config(freeze_on_fraud=True),
        payments=[_paid(ids.session, ids.user, CREDITS, frozen=CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS, frozen=CREDITS)},
    )


def fraud_warning_frozen_then_refunded(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    _checkout_paid(ids, tl)
    tl.later(2 * DAY)
    warning = _fraud_warning(ids, tl)
    tl.emit("radar.early_fraud_warning.created", warning)
    _refund(ids, tl, AMOUNT, AMOUNT)
    tl.emit(
        "radar.early_fraud_warning.updated",
        _fraud_warning(ids, tl, actionable=False, created=warning["created"]),
        previous_attributes={"actionable": True},
    )
    return _flow(
        "fraud_warning_frozen_then_refunded",
        tl,
        "An early fraud warning with the freeze on, resolved the way Stripe suggests: a full "
        "refund (the warning becomes non-actionable). Everything taken back, nothing left frozen.",
        config=Config(freeze_on_fraud=True),
        payments=[_paid(ids.session, ids.user, CREDITS, taken_back=CREDITS, aka=[ids.pi])],
        users={ids.user: _user(CREDITS, CREDITS)},
    )


def expired_and_canceled_same_second(ids: Ids, shape: str = "basil") -> Flow:
    tl = _Timeline(ids, shape)
    tl.later(1)
    declined = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "generic_decline",
        "message": "Your card was declined.",
    }
    tl.emit(
        "payment_intent.payment_failed",
        _intent(ids, tl, "requires_payment_method", last_payment_error=declined),
    )
    tl.later(DAY)
    # Checkout expires the session and cancels the PaymentIntent the failed attempt
    # created, both stamped with the same second.
    tl.emit(
        "payment_intent.canceled", _intent(ids, tl, "canceled", cancellation_reason="abandoned")
    )
    tl.emit("checkout.session.expired", _session(ids, tl, status="expired", paid=False))
    return _flow(
        "expired_and_canceled_same_second",
        tl,
        "A session abandoned after a declined card: payment_intent.canceled and "
        "checkout.session.expired carry the same created second. Either expired or cancelled "
        "is right, but both arrival orders must end the same.",
        payments=[_unpaid(ids.session, ids.user, "expired", "cancelled", aka=[ids.pi])],
        users={ids.user: _user(0)},
    )


# -- the registry -----------------------------------------------------------------------

FLOWS: dict[str, Callable[[Ids, str], Flow]] = {
    f.__name__: f
    for f in (
        checkout_paid,
        async_paid,
        async_failed,
        expired,
        failed_then_paid,
        partial_refunds_then_full,
        dispute_won,
        dispute_lost,
        dispute_open,
        dispute_open_frozen,
        subscription_renewals,
        subscription_refunded,
        subscription_checkout_sepa,
        tax_discount_full_refund,
        tax_discount_half_refund,
        trial_then_paid,
        trial_granted_by_plan,
        payment_link,
        payment_intent_only,
        payment_intent_requires_action,
        session_intent_first,
        refund_fails,
        refund_fails_partial,
        refund_canceled,
        fraud_warning,
        fraud_warning_frozen,
        fraud_warning_frozen_then_refunded,
        expired_and_canceled_same_second,
    )
}

# Flows whose events differ in substance between the shapes (invoices, subscriptions,
# the invoice ↔ PaymentIntent link); the others differ only in api_version.
SHAPE_SENSITIVE = frozenset(
    {
        "subscription_renewals",
        "subscription_refunded",
        "subscription_checkout_sepa",
        "trial_then_paid",
        "trial_granted_by_plan",
    }
)


def build(name: str, shape: str = "basil", ids: Ids | None = None) -> Flow:
    return FLOWS[name](ids or Ids(), shape)


def all_flows(shapes=SHAPES) -> Iterator[Flow]:
    """Every flow in every shape, each with fresh ids."""
    for name, make in FLOWS.items():
        for shape in shapes:
            yield make(Ids(), shape)


def serve(flow: Flow, fake) -> None:
    """Register with a ``FakeStripe`` what the flow's payments look like at its end.

    Each Checkout Session (with its line items, if the flow has any) and each
    PaymentIntent is registered in the last state an event showed, so a retrieve
    (verify, sweep) or a line-items call answers as Stripe would after the flow.
    """
    last: dict[str, dict] = {}
    for evt in flow.events:
        obj = evt["data"]["object"]
        if obj.get("object") in ("checkout.session", "payment_intent"):
            last[obj["id"]] = obj
    for object_id, obj in last.items():
        if obj["object"] == "payment_intent":
            fake.add_payment_intent(obj)
        else:
            fake.add_session(obj, line_items=flow.config.line_items.get(object_id, ()))


def config_file(flows: list[Flow], path: Path) -> Path:
    """A PAYHOOKS_CONFIG file with what these flows need: their credit catalog and subscription plans."""
    catalog, plans = {}, {}
    for flow in flows:
        catalog.update(flow.config.catalog)
        for price in {*flow.config.plans, *flow.config.zero_amount_plans}:
            plan = {}
            if price in flow.config.plans:
                plan["credits"] = flow.config.plans[price]
            if price in flow.config.zero_amount_plans:
                plan["zero_amount_invoices"] = "grant"
            plans[price] = plan
    path.write_text(yaml.safe_dump({"credit_catalog": catalog, "subscription_plans": plans}))
    return path
