"""application/apply.py through a World whose loaders read in-memory rows. No I/O.

The batch (application/batch.py) hands ``World`` loaders that lock and read the
database; here they read a dict, so finding, merging, holding and the business
rules are plain function calls. ``apply`` below does what the batch does for
one event: a step, ``apply_change``, and a commit only if nothing raised.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from application.apply import Applied, NothingToRecordError, apply_change
from application.world import World
from models.enums import FraudPolicy, LedgerKind, ZeroAmountInvoices
from models.enums import PaymentStatus as S
from models.errors import (
    LookupNeededError,
    NotReadyError,
    StaleEventError,
    UnknownPaymentError,
)
from models.lifecycle import TransitionError
from models.payments import PaymentRow
from models.rules import Plan, Rules
from models.settlement import UNPAID_RANK, StatusChange
from models.subscriptions import SubscriptionRow
from providers import stripe
from providers.changes import (
    ActionRequired,
    DisputeOpened,
    FraudWarning,
    InvoicePaid,
    LineItem,
    PaymentCanceled,
    PaymentExpired,
    PaymentFailed,
    PaymentLinked,
    PaymentProcessing,
    PaymentRef,
    PaymentSucceeded,
    ProviderEvent,
    Purchase,
    RefundChanged,
    Refunded,
)
from tests.support.stripe_events import encode, event, invoice, refund

P = "stripe"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PAID_AT = T0 - timedelta(hours=1)
# What the batch does with these: ignore the event (the others hold it or dead-letter it).
NOTHING_TO_DO = (TransitionError, StaleEventError, NothingToRecordError)


class Store:
    """The rows the database holds, served the way the batch's loaders serve them."""

    def __init__(self, *rows: PaymentRow, subscriptions=(), accounts=None) -> None:
        self.payments = {row.id: row for row in rows}
        self.subscriptions = {(s.provider, s.provider_subscription_id): s for s in subscriptions}
        self.accounts = dict(accounts or {})  # user -> (balance, held)
        self.next_id = 1000

    def load_payments(self, refs):
        found = {}
        for provider, session_id, payment_id in refs:
            for row in self.payments.values():
                if row.provider == provider and (
                    (session_id and row.provider_session_id == session_id)
                    or (payment_id and row.provider_payment_id == payment_id)
                ):
                    found[row.id] = row
        return [found[i] for i in sorted(found)]

    def load_subscriptions(self, refs):
        return [self.subscriptions[ref] for ref in refs if ref in self.subscriptions]

    def reserve_ids(self, count):
        ids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        return ids

    def load_accounts(self, users):
        return {user: self.accounts[user] for user in users if user in self.accounts}

    def world(self) -> World:
        return World(
            load_payments=self.load_payments,
            load_subscriptions=self.load_subscriptions,
            reserve_ids=self.reserve_ids,
            load_accounts=self.load_accounts,
        )


_event_ids = itertools.count(1)


def provider_event(event_id: str | None = None, at: datetime | None = T0) -> ProviderEvent:
    return ProviderEvent(P, event_id or f"evt_{next(_event_ids):06d}", "test.event", at, {}, "{}")


def apply(world: World, change, *, event_id=None, at=T0, rules=Rules()) -> Applied:
    """One event as the batch applies it: commit its step only if nothing raised."""
    step = world.step()
    applied = apply_change(step, provider_event(event_id, at), change, rules)
    world.commit(step)
    return applied


def row(id: int, **columns) -> PaymentRow:
    defaults = dict(provider=P, user_id="user_1", credits=100, amount_cents=1000, currency="usd")
    return PaymentRow(id=id, **(defaults | columns))


def paid(id: int, **columns) -> PaymentRow:
    """A paid payment whose credits were granted, as an earlier batch left it."""
    defaults = dict(
        status=S.COMPLETED,
        paid_at=PAID_AT,
        paid_amount_cents=1000,
        paid_currency="usd",
        credits_granted=100,
    )
    return row(id, **(defaults | columns))


def postings(world: World) -> list[tuple[LedgerKind, int, str]]:
    return [(p.kind, p.amount, p.key) for p in world.effects.postings]


# -- finding the payment ------------------------------------------------------------------


def test_a_payment_is_found_by_its_session_id_and_learns_its_payment_id():
    world = Store(row(1, provider_session_id="cs_1")).world()

    apply(world, PaymentSucceeded(PaymentRef("cs_1", "pi_1"), Purchase()), event_id="evt_paid")

    payment = world.payments[1]
    assert (payment.status, payment.paid_at, payment.provider_payment_id) == (
        S.COMPLETED,
        T0,
        "pi_1",
    )
    assert postings(world) == [(LedgerKind.GRANT, 100, "stripe:payment:1:grant")]
    assert world.effects.status_changes == [StatusChange(1, S.PENDING, S.COMPLETED, "evt_paid")]
    assert world.by_payment[(P, "pi_1")] == 1
    assert world.dirty_payments == {1}


def test_a_payment_is_found_by_its_payment_id():
    world = Store(paid(1, provider_payment_id="pi_1")).world()

    apply(world, Refunded(PaymentRef(payment_id="pi_1"), refunded_cents=250, captured_cents=1000))

    assert world.payments[1].status == S.PARTIALLY_REFUNDED
    assert [(kind, amount) for kind, amount, _ in postings(world)] == [(LedgerKind.CLAWBACK, -25)]


def test_a_payment_id_learnt_in_a_batch_finds_the_payment_for_the_next_event():
    world = Store(row(1, provider_session_id="cs_1")).world()
    apply(world, PaymentSucceeded(PaymentRef("cs_1", "pi_1"), Purchase()))

    apply(world, RefundChanged(PaymentRef(payment_id="pi_1"), "re_1", 1000, "succeeded"))

    assert world.payments[1].status == S.REFUNDED
    assert [kind for kind, _, _ in postings(world)] == [LedgerKind.GRANT, LedgerKind.CLAWBACK]


def test_a_recorded_payment_wins_over_what_the_event_says():
    world = Store(row(1, provider_session_id="cs_1", credits=100, user_id="user_1")).world()

    apply(world, PaymentSucceeded(PaymentRef("cs_1"), Purchase(user_id="someone", credits=5)))

    assert (world.payments[1].user_id, world.payments[1].credits) == ("user_1", 100)
    assert postings(world) == [(LedgerKind.GRANT, 100, "stripe:payment:1:grant")]


def test_a_payment_nobody_recorded_is_recorded_from_the_event():
    world = Store().world()

    apply(
        world,
        PaymentSucceeded(
            PaymentRef("cs_new", "pi_new"), Purchase("user_2", 50, 500, "usd", "pkg_small")
        ),
    )

    (payment,) = world.payments.values()
    assert payment.id == 1000  # a reserved id, so the ledger key can name it
    assert (payment.provider_session_id, payment.provider_payment_id) == ("cs_new", "pi_new")
    assert (payment.user_id, payment.credits, payment.package_id) == ("user_2", 50, "pkg_small")
    assert postings(world) == [(LedgerKind.GRANT, 50, "stripe:payment:1000:grant")]


def test_a_translated_stripe_event_applies_like_its_change():
    body = encode(
        event(
            "refund.updated",
            refund("ch_1", "pi_1", 1000, "succeeded", refund_id="re_1"),
            event_id="evt_refund_1",
        )
    )
    parsed = stripe.parse_event(body)
    world = Store(paid(1, provider_payment_id="pi_1")).world()

    step = world.step()
    apply_change(step, parsed, stripe.translate(parsed), Rules())
    world.commit(step)

    assert world.payments[1].refunds == {"re_1": {"amount_cents": 1000, "status": "succeeded"}}
    assert postings(world) == [
        (LedgerKind.CLAWBACK, -100, "stripe:payment:1:clawback:evt_refund_1")
    ]


# -- merging a session's payment with its own PaymentIntent's -----------------------------
# A PaymentIntent-only event may record a payment before the Checkout Session's event
# arrives; when an event names both ids, the two rows are one payment.


def test_the_paid_intent_payment_survives_and_the_session_payment_is_retired():
    session_row = row(1, provider_session_id="cs_1", status=S.PENDING)
    intent_row = paid(2, provider_payment_id="pi_1")
    world = Store(session_row, intent_row).world()

    apply(world, PaymentSucceeded(PaymentRef("cs_1", "pi_1"), Purchase()), event_id="evt_cs")

    survivor, retired = world.payments[2], world.payments[1]
    assert (survivor.provider_session_id, survivor.provider_payment_id) == ("cs_1", "pi_1")
    assert survivor.status == S.COMPLETED
    assert retired.status == S.CANCELLED
    assert (retired.provider_session_id, retired.provider_payment_id) == (None, None)
    assert retired.details == {"merged_into": 2}
    assert world.effects.status_changes == [
        StatusChange(1, S.PENDING, S.CANCELLED, "evt_cs (merged into payment 2)")
    ]
    assert postings(world) == []  # the intent's payment was granted already: not twice
    assert world.by_session[(P, "cs_1")] == world.by_payment[(P, "pi_1")] == 2
    assert world.dirty_payments == {1, 2}


def test_when_neither_is_paid_the_session_payment_survives_and_is_paid_once():
    session_row = row(
        1, provider_session_id="cs_1", status=S.PROCESSING, unpaid_status=S.PROCESSING
    )
    intent_row = row(2, provider_payment_id="pi_1", status=S.PROCESSING, unpaid_status=S.PROCESSING)
    world = Store(session_row, intent_row).world()

    apply(world, PaymentSucceeded(PaymentRef("cs_1", "pi_1"), Purchase()))

    survivor, retired = world.payments[1], world.payments[2]
    assert (survivor.provider_session_id, survivor.provider_payment_id) == ("cs_1", "pi_1")
    assert survivor.status == S.COMPLETED
    assert (retired.status, retired.provider_session_id, retired.provider_payment_id) == (
        S.CANCELLED,
        None,
        None,
    )
    assert postings(world) == [(LedgerKind.GRANT, 100, "stripe:payment:1:grant")]
    assert world.by_session[(P, "cs_1")] == world.by_payment[(P, "pi_1")] == 1


def test_a_merge_keeps_the_credits_recorded_for_the_session_on_record():
    session_row = row(1, provider_session_id="cs_1", credits=120)
    intent_row = paid(2, provider_payment_id="pi_1", credits=100)
    world = Store(session_row, intent_row).world()

    apply(world, PaymentSucceeded(PaymentRef("cs_1", "pi_1"), Purchase()))

    assert world.payments[2].credits == 100  # what was granted stays granted
    assert world.payments[2].details == {"recorded_credits": 120}


def test_two_paid_payments_for_one_payment_are_for_an_operator():
    world = Store(paid(1, provider_session_id="cs_1"), paid(2, provider_payment_id="pi_1")).world()

    with pytest.raises(UnknownPaymentError, match="both were paid"):
        apply(world, PaymentSucceeded(PaymentRef("cs_1", "pi_1"), Purchase()))

    assert world.dirty_payments == set()


def test_after_a_link_merges_two_payments_the_payment_id_still_finds_the_survivor():
    # invoice_payment.paid names an invoice's payment recorded under the invoice, and a
    # payment recorded under its PaymentIntent (unpaid): they merge into the paid one.
    invoice_row = paid(1, provider_session_id="in_1")
    intent_row = row(2, provider_payment_id="pi_1", status=S.PROCESSING, unpaid_status=S.PROCESSING)
    world = Store(invoice_row, intent_row).world()

    apply(world, PaymentLinked(PaymentRef("in_1", "pi_1")))

    assert world.payments[1].provider_payment_id == "pi_1"
    assert world.payments[2].provider_payment_id is None
    assert world.by_payment.get((P, "pi_1")) == 1
    # a refund of the PaymentIntent later in the same batch finds the invoice's payment
    apply(world, Refunded(PaymentRef(payment_id="pi_1"), refunded_cents=1000, captured_cents=1000))
    assert world.payments[1].status == S.REFUNDED


# -- holding: an event about a payment not known, or not paid, yet -------------------------

AFTER_PAYMENT = [
    pytest.param(Refunded(PaymentRef(payment_id="pi_x"), 250, 1000), id="charge.refunded"),
    pytest.param(RefundChanged(PaymentRef(payment_id="pi_x"), "re_1", 250, "pending"), id="refund"),
    pytest.param(DisputeOpened(PaymentRef(payment_id="pi_x"), "dp_1", 1000), id="dispute"),
    pytest.param(FraudWarning(PaymentRef(payment_id="pi_x"), "issfr_1", True), id="warning"),
]


@pytest.mark.parametrize("change", AFTER_PAYMENT)
def test_money_after_payment_for_an_unknown_payment_is_held_under_its_payment_key(change):
    world = Store().world()

    with pytest.raises(NotReadyError) as excinfo:
        apply(world, change)

    assert excinfo.value.key == "stripe:payment:pi_x"
    assert "unknown" in str(excinfo.value)
    assert world.payments == {} and world.effects.postings == []


@pytest.mark.parametrize("change", AFTER_PAYMENT)
def test_money_after_payment_for_an_unpaid_payment_is_held_until_it_is_paid(change):
    world = Store(
        row(1, provider_payment_id="pi_x", status=S.PROCESSING, unpaid_status=S.PROCESSING)
    ).world()

    with pytest.raises(NotReadyError) as excinfo:
        apply(world, change)

    assert excinfo.value.key == "stripe:payment:pi_x"
    assert "not paid yet (processing)" in str(excinfo.value)
    assert world.payments[1].refunds == {} and world.effects.postings == []


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (PaymentCanceled(PaymentRef(payment_id="pi_x")), "stripe:payment:pi_x"),
        (PaymentFailed(PaymentRef(payment_id="pi_x")), "stripe:payment:pi_x"),
        (PaymentLinked(PaymentRef("in_x", "pi_x")), "stripe:session:in_x"),
    ],
    ids=["canceled", "intent-failed", "linked"],
)
def test_news_that_cannot_record_a_payment_waits_for_it(change, key):
    with pytest.raises(NotReadyError) as excinfo:
        apply(Store().world(), change)

    assert excinfo.value.key == key
    assert not isinstance(excinfo.value, LookupNeededError)


def test_action_required_for_an_unknown_payment_is_nothing_to_do():
    world = Store().world()

    assert apply(world, ActionRequired(PaymentRef(payment_id="pi_x"), "use_stripe_sdk")) == Applied(
        False, "no payment recorded for it"
    )


def test_action_required_records_an_attempt_and_leaves_the_status():
    world = Store(row(1, provider_payment_id="pi_1", status=S.PENDING)).world()

    apply(world, ActionRequired(PaymentRef(payment_id="pi_1"), "use_stripe_sdk"), event_id="evt_a")

    assert world.payments[1].status == S.PENDING
    assert [(a.payment_id, a.code, a.cause) for a in world.effects.attempts] == [
        (1, "use_stripe_sdk", "evt_a")
    ]


# -- a paid session that names no credits: its line items are looked up --------------------


def test_a_paid_session_with_neither_credits_nor_line_items_needs_a_lookup():
    world = Store().world()

    with pytest.raises(LookupNeededError) as excinfo:
        apply(world, PaymentSucceeded(PaymentRef("cs_x", "pi_x"), Purchase(user_id="user_1")))

    assert excinfo.value.key == "stripe:lookup:cs_x"
    assert isinstance(excinfo.value, NotReadyError)  # held like any waiting event
    assert world.payments == {}


def test_a_paid_session_whose_line_items_are_listed_takes_credits_from_them():
    rules = Rules(credit_catalog={"price_small": 10})
    items = (LineItem("price_small", 3), LineItem("price_pack", 2, credits_per_unit=50))
    world = Store().world()

    apply(
        world,
        PaymentSucceeded(PaymentRef("cs_x"), Purchase(user_id="user_1", line_items=items)),
        rules=rules,
    )

    (payment,) = world.payments.values()
    assert payment.credits == 3 * 10 + 2 * 50


@pytest.mark.parametrize(
    "line_items",
    [(), (LineItem("price_unknown", 1),)],
    ids=["none-listed", "not-in-the-catalog"],
)
def test_a_paid_session_whose_line_items_give_no_credits_is_a_dead_letter(line_items):
    change = PaymentSucceeded(PaymentRef("cs_x"), Purchase(user_id="user_1", line_items=line_items))

    with pytest.raises(UnknownPaymentError, match="names no credits"):
        apply(Store().world(), change)


def test_a_session_recorded_beforehand_needs_no_lookup():
    world = Store(row(1, provider_session_id="cs_x", credits=40)).world()

    apply(world, PaymentSucceeded(PaymentRef("cs_x"), Purchase(user_id="user_1")))

    assert world.payments[1].status == S.COMPLETED
    assert postings(world) == [(LedgerKind.GRANT, 40, "stripe:payment:1:grant")]


def test_an_intent_without_metadata_paid_before_its_session_is_not_a_dead_letter():
    # Payment Links and subscription invoices: the PaymentIntent carries no user_id or credits;
    # checkout.session.completed (line items) or invoice.paid + invoice_payment.paid will.
    world = Store().world()
    change = PaymentSucceeded(
        PaymentRef(payment_id="pi_x"), Purchase(amount_cents=1000, currency="usd", line_items=())
    )

    with pytest.raises((NotReadyError, NothingToRecordError)):
        apply(world, change)


# -- unpaid news of a payment nobody recorded ---------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        PaymentExpired(PaymentRef("cs_x")),
        PaymentExpired(PaymentRef("cs_x"), Purchase(user_id="user_1")),  # who, but not how many
        PaymentProcessing(PaymentRef("cs_x", "pi_x"), Purchase(credits=10)),
        PaymentFailed(PaymentRef("cs_x"), Purchase()),
    ],
    ids=["expired", "expired-no-credits", "processing-no-buyer", "failed"],
)
def test_unpaid_news_that_names_no_buyer_is_nothing_to_record(change):
    world = Store().world()

    with pytest.raises(NothingToRecordError):
        apply(world, change)

    assert world.payments == {}


def test_an_expired_session_that_names_its_buyer_is_recorded_as_expired():
    world = Store().world()

    apply(world, PaymentExpired(PaymentRef("cs_x"), Purchase("user_1", 10, 100, "usd")))

    (payment,) = world.payments.values()
    assert (payment.status, payment.unpaid_status, payment.credits) == (S.EXPIRED, S.EXPIRED, 10)
    assert postings(world) == []


# -- unpaid news: the newest wins, and a tie in the same second ends the same -------------

UNPAID_NEWS = {
    S.PROCESSING: lambda: PaymentProcessing(PaymentRef("cs_1")),
    S.FAILED: lambda: PaymentFailed(PaymentRef("cs_1")),
    S.CANCELLED: lambda: PaymentCanceled(PaymentRef("cs_1")),
    S.EXPIRED: lambda: PaymentExpired(PaymentRef("cs_1")),
}


def deliver(events: list[tuple[S, str, datetime]]) -> PaymentRow:
    """Apply unpaid news to a pending payment as the batch would, ignoring what it ignores."""
    world = Store(row(1, provider_session_id="cs_1", provider_payment_id="pi_1")).world()
    for status, event_id, at in events:
        change = UNPAID_NEWS[status]()
        if isinstance(change, PaymentCanceled):  # payment_intent.canceled names the intent
            change = PaymentCanceled(PaymentRef(payment_id="pi_1"))
        try:
            apply(world, change, event_id=event_id, at=at)
        except NOTHING_TO_DO:
            pass
    return world.payments[1]


PAIRS = [pytest.param(a, b, id=f"{a}-{b}") for a, b in itertools.combinations(UNPAID_NEWS, 2)]


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_two_unpaid_statuses_in_the_same_second_end_the_same_in_either_order(first, second):
    one_way = deliver([(first, "evt_a", T0), (second, "evt_b", T0)])
    other_way = deliver([(second, "evt_b", T0), (first, "evt_a", T0)])

    assert (one_way.status, one_way.unpaid_status, one_way.unpaid_status_event) == (
        other_way.status,
        other_way.unpaid_status,
        other_way.unpaid_status_event,
    )
    assert one_way.status == max(first, second, key=UNPAID_RANK.__getitem__)


@pytest.mark.parametrize(
    ("ended", "newer"),
    [
        (S.EXPIRED, S.PROCESSING),
        (S.CANCELLED, S.FAILED),
        (S.CANCELLED, S.EXPIRED),
        (S.EXPIRED, S.CANCELLED),
    ],
)
def test_unpaid_news_after_a_payment_ended_unpaid_ends_the_same_in_either_order(ended, newer):
    history = [(ended, "evt_a", T0), (newer, "evt_b", T0 + timedelta(seconds=5))]

    assert deliver(history).status == deliver(history[::-1]).status == newer


@pytest.mark.parametrize("status", [S.PROCESSING, S.FAILED])
def test_the_same_status_twice_in_a_second_is_decided_by_event_id(status):
    one_way = deliver([(status, "evt_a", T0), (status, "evt_b", T0)])
    other_way = deliver([(status, "evt_b", T0), (status, "evt_a", T0)])

    assert one_way.unpaid_status_event == other_way.unpaid_status_event == "evt_b"


def test_older_unpaid_news_does_not_move_the_status():
    payment = deliver([(S.FAILED, "evt_b", T0), (S.PROCESSING, "evt_a", T0 - timedelta(seconds=5))])

    assert payment.status == S.FAILED


def test_unpaid_news_after_payment_is_refused():
    world = Store(paid(1, provider_session_id="cs_1")).world()

    with pytest.raises(TransitionError):
        apply(world, PaymentExpired(PaymentRef("cs_1")))

    assert world.payments[1].status == S.COMPLETED


def test_a_failed_attempt_after_payment_is_kept_for_the_record():
    world = Store(paid(1, provider_session_id="cs_1", provider_payment_id="pi_1")).world()

    apply(world, PaymentFailed(PaymentRef(payment_id="pi_1"), code="card_declined"))

    assert world.payments[1].status == S.COMPLETED
    assert [a.code for a in world.effects.attempts] == ["card_declined"]


# -- zero-amount invoices: skipped or granted, globally or per plan -------------------------


def invoice_paid(amount: int, price: str = "price_monthly") -> InvoicePaid:
    return InvoicePaid(
        PaymentRef(session_id=f"in_{price}_{amount}"),
        subscription_id="sub_1",
        purchase=Purchase(user_id="user_1", credits=500),
        price_id=price,
        paid_amount_cents=amount,
        paid_currency="usd",
    )


def granted_by(change: InvoicePaid, rules: Rules) -> tuple[Applied, list[int]]:
    world = Store().world()
    applied = apply(world, change, rules=rules)
    return applied, [p.amount for p in world.effects.postings if p.kind == LedgerKind.GRANT]


def test_a_zero_amount_invoice_grants_nothing_by_default():
    applied, grants = granted_by(invoice_paid(0), Rules())

    assert applied.changed is False
    assert "ZERO_AMOUNT_INVOICES=skip" in applied.reason
    assert grants == []


def test_a_zero_amount_invoice_grants_when_the_rule_says_grant():
    applied, grants = granted_by(
        invoice_paid(0), Rules(zero_amount_invoices=ZeroAmountInvoices.GRANT)
    )

    assert applied.changed is True
    assert grants == [500]


def test_a_plans_own_rule_wins_over_the_global_one():
    rules = Rules(
        zero_amount_invoices=ZeroAmountInvoices.SKIP,
        subscription_plans={
            "price_trial": Plan(50, ZeroAmountInvoices.GRANT),
            "price_monthly": Plan(500),
        },
    )

    assert granted_by(invoice_paid(0, "price_trial"), rules)[1] == [500]
    assert granted_by(invoice_paid(0, "price_monthly"), rules)[1] == []
    assert granted_by(invoice_paid(0, "price_unplanned"), rules)[1] == []


def test_a_plan_may_skip_zero_amount_invoices_when_the_global_rule_grants():
    rules = Rules(
        zero_amount_invoices=ZeroAmountInvoices.GRANT,
        subscription_plans={"price_monthly": Plan(500, ZeroAmountInvoices.SKIP)},
    )

    assert granted_by(invoice_paid(0, "price_monthly"), rules)[1] == []
    assert granted_by(invoice_paid(0, "price_other"), rules)[1] == [500]


def test_a_paid_invoice_grants_whatever_the_zero_amount_rule():
    rules = Rules(subscription_plans={"price_monthly": Plan(500, ZeroAmountInvoices.SKIP)})

    assert granted_by(invoice_paid(1), rules)[1] == [500]


def test_an_invoice_takes_its_credits_from_the_plan_then_the_subscription():
    subscription = SubscriptionRow(
        P, "sub_1", "active", user_id="user_9", price_id="price_x", credits_per_period=70
    )
    world = Store(subscriptions=[subscription]).world()
    change = replace(invoice_paid(2000, "price_x"), purchase=Purchase())

    apply(world, change)

    (payment,) = world.payments.values()
    assert (payment.user_id, payment.credits) == ("user_9", 70)
    assert payment.details == {"subscription_id": "sub_1", "price_id": "price_x"}


def test_an_invoice_for_a_subscription_not_seen_yet_waits_for_it():
    change = replace(invoice_paid(2000), purchase=Purchase())

    with pytest.raises(NotReadyError) as excinfo:
        apply(Store().world(), change)

    assert excinfo.value.key == "stripe:subscription:sub_1"


def test_a_translated_invoice_applies_once_per_invoice():
    body = encode(
        event("invoice.paid", invoice("in_1", "sub_1", "user_1", "500", amount_paid=2000))
    )
    parsed = stripe.parse_event(body)
    world = Store().world()

    for _ in range(2):
        step = world.step()
        apply_change(step, parsed, stripe.translate(parsed), Rules())
        world.commit(step)

    assert len(world.payments) == 1
    assert [p.amount for p in world.effects.postings] == [500]


# -- a step that raises leaves the world as it was ------------------------------------------


def snapshot(world: World) -> dict:
    return {
        "payments": dict(world.payments),
        "by_session": dict(world.by_session),
        "by_payment": dict(world.by_payment),
        "subscriptions": dict(world.subscriptions),
        "accounts": dict(world.accounts),
        "dirty": (set(world.dirty_payments), set(world.dirty_subscriptions)),
        "effects": copy_effects(world),
        "spare_ids": list(world._spare_ids),
    }


def copy_effects(world: World) -> tuple:
    e = world.effects
    return (list(e.postings), list(e.status_changes), list(e.attempts), dict(e.holds), list(e.mismatches))


def test_a_step_that_raises_after_changing_rows_leaves_the_world_unchanged():
    # a row whose status and facts disagree (stored as refunded, never paid) hears of a failed
    # attempt: the attempt is recorded and the row put into the step, then the table refuses
    # REFUNDED -> FAILED
    broken = row(1, provider_session_id="cs_1", status=S.REFUNDED)
    world = Store(broken).world()
    world.preload([(P, "cs_1", "pi_1")], [])
    before = snapshot(world)

    step = world.step()
    with pytest.raises(TransitionError):
        apply_change(
            step, provider_event(), PaymentFailed(PaymentRef("cs_1", "pi_1"), code="x"), Rules()
        )

    assert step.effects.attempts and step.payments  # the step did change things
    assert snapshot(world) == before


def test_a_step_that_raises_after_creating_a_payment_gives_its_id_to_the_next():
    world = Store().world()
    world.reserve(1)
    before = snapshot(world)

    step = world.step()
    created = step.new_payment(provider=P, provider_session_id="cs_1", user_id="user_1", credits=5)
    step.settle(replace(created, paid_at=T0), "evt_doomed", Rules())
    assert step.effects.postings  # a grant was decided, then the event fails
    # (what the batch does on an exception: it does not commit the step)

    assert snapshot(world) == before
    apply(world, PaymentSucceeded(PaymentRef("cs_2"), Purchase("user_2", 7)))
    assert list(world.payments) == [created.id]
    assert world.payments[created.id].provider_session_id == "cs_2"


def test_a_step_that_fails_under_the_freeze_policy_leaves_holds_unchanged():
    rules = Rules(fraud_policy=FraudPolicy.FREEZE)
    world = Store(paid(1, provider_payment_id="pi_1"), accounts={"user_1": (100, 0)}).world()
    apply(world, FraudWarning(PaymentRef(payment_id="pi_1"), "issfr_1", True), rules=rules)
    assert world.accounts == {"user_1": (100, 100)}  # held: still in the balance, not spendable
    before = snapshot(world)

    step = world.step()
    apply_change(
        step, provider_event(), FraudWarning(PaymentRef(payment_id="pi_1"), "issfr_1", False), rules
    )
    assert step.account("user_1") == (100, 0)  # the step sees its own release
    # ... and then the event fails: the batch does not commit its step

    assert snapshot(world) == before
    assert world.step().account("user_1") == (100, 100)
