"""models/settlement.py: a payment's status and credits as pure functions of its facts.

No session and no database: PaymentRow values in, a Settled value (the row,
its status change, its ledger postings) out.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import keys
from models.enums import DisputeStatus as D
from models.enums import FraudPolicy, LedgerKind, RefundStatus
from models.enums import PaymentStatus as S
from models.lifecycle import TransitionError
from models.payments import PaymentRow
from models.settlement import (
    UNPAID,
    captured_amount,
    derive_status,
    ledger_key,
    refunded_amount,
    settle,
    takeback_target,
)

PAID_AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
OPEN, WON, LOST = D.OPEN.value, D.WON.value, D.LOST.value


def payment(
    disputes=(),
    *,
    credits: int = 100,
    amount: int | None = 1000,
    refunded: int = 0,
    paid: bool = True,
    unpaid_status: str | None = None,
    **fields,
) -> PaymentRow:
    """A payment's facts; ``disputes`` is a list of dispute statuses, one dispute each."""
    columns = dict(
        id=1,
        provider="stripe",
        provider_session_id="cs_test_settlement",
        provider_payment_id="pi_settlement",
        user_id="user_1",
        credits=credits,
        amount_cents=amount,
        currency="usd",
        refunded_cents=refunded,
        paid_at=PAID_AT if paid else None,
        unpaid_status=unpaid_status,
        disputes={f"dp_{i}": {"status": status} for i, status in enumerate(disputes)},
    )
    return PaymentRow(**(columns | fields))


# -- derive_status ----------------------------------------------------------------------


def test_unpaid_without_unpaid_status_is_pending():
    assert derive_status(payment(paid=False)) is S.PENDING


@pytest.mark.parametrize("status", sorted(UNPAID))
def test_unpaid_takes_its_unpaid_status(status):
    result = derive_status(payment(paid=False, unpaid_status=status.value))

    assert result == status
    assert isinstance(result, S)


@pytest.mark.parametrize("disputes", [[OPEN], [LOST], [WON]])
def test_unpaid_ignores_refunds_and_disputes(disputes):
    p = payment(disputes, paid=False, unpaid_status=S.FAILED.value, refunded=1000)

    assert derive_status(p) == S.FAILED


def test_paid_is_completed():
    assert derive_status(payment()) == S.COMPLETED


def test_paid_wins_over_an_earlier_unpaid_status():
    assert derive_status(payment(unpaid_status=S.PROCESSING.value)) == S.COMPLETED


@pytest.mark.parametrize("refunded", [1, 250, 999])
def test_partial_refund_is_partially_refunded(refunded):
    assert derive_status(payment(refunded=refunded)) == S.PARTIALLY_REFUNDED


@pytest.mark.parametrize("refunded", [1000, 1001, 5000])
def test_refund_of_the_whole_amount_is_refunded(refunded):
    assert derive_status(payment(refunded=refunded)) == S.REFUNDED


def test_open_dispute_is_disputed():
    assert derive_status(payment([OPEN])) == S.DISPUTED


def test_open_dispute_beats_a_partial_refund():
    assert derive_status(payment([OPEN], refunded=250)) == S.DISPUTED


def test_won_dispute_returns_to_completed():
    assert derive_status(payment([WON])) == S.COMPLETED


def test_won_dispute_returns_to_partially_refunded():
    assert derive_status(payment([WON], refunded=250)) == S.PARTIALLY_REFUNDED


def test_lost_dispute_is_refunded():
    assert derive_status(payment([LOST])) == S.REFUNDED


@pytest.mark.parametrize("disputes", [[OPEN, LOST], [LOST, OPEN], [WON, LOST, OPEN]])
def test_lost_dispute_beats_an_open_one(disputes):
    assert derive_status(payment(disputes, refunded=250)) == S.REFUNDED


def test_full_refund_beats_an_open_dispute():
    assert derive_status(payment([OPEN], refunded=1000)) == S.REFUNDED


def test_won_and_open_disputes_are_disputed():
    assert derive_status(payment([WON, OPEN])) == S.DISPUTED


def test_enum_members_work_as_dispute_statuses():
    # settle() reads Dispute.status from the database as plain strings; enum members compare equal.
    assert derive_status(payment([D.LOST])) == S.REFUNDED
    assert derive_status(payment([D.OPEN])) == S.DISPUTED


def test_free_paid_payment_is_completed():
    assert derive_status(payment(amount=0)) == S.COMPLETED


def test_paid_payment_with_unknown_amount_is_completed():
    assert derive_status(payment(amount=None)) == S.COMPLETED


@pytest.mark.parametrize("amount", [0, None], ids=["amount-0", "amount-None"])
def test_status_is_refunded_when_refunds_take_back_every_credit(amount):
    p = payment(amount=amount, refunded=500)
    assert takeback_target(p) == p.credits

    assert derive_status(p) == S.REFUNDED


# -- takeback_target --------------------------------------------------------------------


@pytest.mark.parametrize("disputes", [[], [OPEN], [LOST]])
def test_unpaid_takes_back_nothing(disputes):
    assert takeback_target(payment(disputes, paid=False, refunded=1000)) == 0


def test_paid_without_refund_takes_back_nothing():
    assert takeback_target(payment()) == 0


@pytest.mark.parametrize("disputes", [[OPEN], [WON], [OPEN, WON]])
def test_open_or_won_dispute_takes_back_nothing(disputes):
    assert takeback_target(payment(disputes)) == 0


@pytest.mark.parametrize(
    ("credits", "amount", "refunded", "expected"),
    [
        (100, 999, 333, 33),  # 33.33… rounds down
        (100, 1000, 250, 25),
        (100, 1000, 1, 0),  # less than one credit's worth takes nothing back yet
        (100, 1000, 999, 99),  # 99.9 rounds down, never up
        (3, 10, 5, 1),  # 1.5
        (7, 3, 2, 4),  # 4.66…
        (10**12, 10**9 + 7, 1, 999),
    ],
)
def test_partial_refund_takes_back_the_floor_of_its_share(credits, amount, refunded, expected):
    assert takeback_target(payment(credits=credits, amount=amount, refunded=refunded)) == expected


@pytest.mark.parametrize("refunded", [1000, 1001, 10**6])
def test_full_refund_takes_back_exactly_the_credits(refunded):
    assert takeback_target(payment(credits=97, amount=1000, refunded=refunded)) == 97


@pytest.mark.parametrize("refunded", [0, 250, 1000])
def test_lost_dispute_takes_back_all_the_credits(refunded):
    assert takeback_target(payment([LOST], credits=97, refunded=refunded)) == 97


def test_open_dispute_does_not_change_the_refund_share():
    assert takeback_target(payment([OPEN], refunded=250)) == 25


@pytest.mark.parametrize("amount", [0, None], ids=["amount-0", "amount-None"])
def test_refund_with_no_known_amount_takes_back_all_the_credits(amount):
    assert takeback_target(payment(credits=97, amount=amount, refunded=1)) == 97


@pytest.mark.parametrize("amount", [0, None], ids=["amount-0", "amount-None"])
def test_no_refund_with_no_known_amount_takes_back_nothing(amount):
    assert takeback_target(payment(credits=97, amount=amount, refunded=0)) == 0


# -- properties ---------------------------------------------------------------------------

CREDITS = st.integers(min_value=1, max_value=10**12)
AMOUNTS = st.integers(min_value=1, max_value=10**9)
DISPUTE_SETS = st.lists(st.sampled_from([OPEN, WON, LOST]), max_size=3)


@st.composite
def refund_histories(draw):
    """credits, amount and a non-decreasing list of cumulative refunds ending at amount."""
    credits = draw(CREDITS)
    amount = draw(AMOUNTS)
    steps = draw(st.lists(st.integers(min_value=0, max_value=amount), max_size=12))
    return credits, amount, [*sorted(steps), amount]


@settings(max_examples=200)
@given(refund_histories())
def test_a_full_refund_takes_back_exactly_the_credits_however_it_is_split(history):
    credits, amount, cumulative = history
    targets = [0] + [
        takeback_target(payment(credits=credits, amount=amount, refunded=r)) for r in cumulative
    ]

    taken = sum(max(after - before, 0) for before, after in pairwise(targets))

    assert taken == credits


@settings(max_examples=200)
@given(
    credits=CREDITS,
    amount=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
    refunds=st.tuples(
        st.integers(min_value=0, max_value=2 * 10**9), st.integers(min_value=0, max_value=2 * 10**9)
    ),
    disputes=DISPUTE_SETS,
)
def test_takeback_target_is_monotone_in_refunded_cents(credits, amount, refunds, disputes):
    low, high = sorted(refunds)

    before = takeback_target(payment(disputes, credits=credits, amount=amount, refunded=low))
    after = takeback_target(payment(disputes, credits=credits, amount=amount, refunded=high))

    assert before <= after


@settings(max_examples=200)
@given(
    credits=st.integers(min_value=0, max_value=10**12),
    amount=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
    refunded=st.integers(min_value=0, max_value=2 * 10**9),
    paid=st.booleans(),
    disputes=DISPUTE_SETS,
)
def test_takeback_target_stays_between_zero_and_the_credits(
    credits, amount, refunded, paid, disputes
):
    target = takeback_target(
        payment(disputes, credits=credits, amount=amount, refunded=refunded, paid=paid)
    )

    assert 0 <= target <= credits


@settings(max_examples=200)
@given(credits=CREDITS, amount=AMOUNTS, data=st.data())
def test_partial_refund_target_is_the_floor_of_the_exact_share(credits, amount, data):
    refunded = data.draw(
        st.integers(min_value=0, max_value=amount - 1) if amount > 1 else st.just(0)
    )

    target = takeback_target(payment(credits=credits, amount=amount, refunded=refunded))

    share = Fraction(credits * refunded, amount)
    assert target <= share < target + 1


# -- refunded_amount: refunds known by the charge's figure and one by one ----------------


def refunds(*items: tuple[int, str]) -> dict:
    """Refund objects as recorded on the payment: (amount, status) each."""
    return {
        f"re_{i}": {"amount_cents": amount, "status": status}
        for i, (amount, status) in enumerate(items)
    }


@pytest.mark.parametrize(
    ("cumulative", "items", "expected"),
    [
        pytest.param(300, [], 300, id="only-the-charge-figure"),
        pytest.param(0, [(300, "succeeded")], 300, id="refund-event-before-the-charge-event"),
        pytest.param(300, [(300, "succeeded")], 300, id="one-refund-known-both-ways-counts-once"),
        pytest.param(
            300, [(300, "succeeded"), (200, "pending")], 500, id="newer-refund-not-in-figure"
        ),
        pytest.param(500, [(300, "succeeded"), (200, "pending")], 500, id="both-in-figure"),
        pytest.param(
            500, [(300, "requires_action"), (200, "succeeded")], 500, id="requires-action-is-live"
        ),
        pytest.param(300, [(300, "failed")], 0, id="failed-after-the-charge-reported-it"),
        pytest.param(300, [(300, "canceled")], 0, id="canceled-after-the-charge-reported-it"),
        pytest.param(0, [(300, "failed")], 0, id="never-below-zero"),
        pytest.param(500, [(300, "succeeded"), (200, "failed")], 300, id="one-of-two-failed"),
        # the charge reported after the first refund had failed: its figure never held it
        pytest.param(
            200, [(300, "failed"), (200, "succeeded")], 200, id="figure-after-the-failure"
        ),
        pytest.param(800, [(300, "failed")], 500, id="unseen-refunds-in-the-figure"),
    ],
)
def test_refunded_amount_is_the_larger_of_live_refunds_and_the_figure_less_failures(
    cumulative, items, expected
):
    row = payment(refunded=cumulative, refunds=refunds(*items))

    assert refunded_amount(row) == expected
    # the formula in the module docstring, spelled out
    live = sum(a for a, s in items if s not in ("failed", "canceled"))
    failed = sum(a for a, s in items if s in ("failed", "canceled"))
    assert expected == max(live, cumulative - failed, 0)


def test_a_refund_that_fails_takes_its_share_of_credits_and_status_back():
    before = payment(refunded=250, refunds=refunds((250, "succeeded")))
    after = payment(refunded=250, refunds=refunds((250, "failed")))

    assert (derive_status(before), takeback_target(before)) == (S.PARTIALLY_REFUNDED, 25)
    assert (derive_status(after), takeback_target(after)) == (S.COMPLETED, 0)


# -- captured_amount: refunds are measured against what was taken ----------------------


@pytest.mark.parametrize(
    ("amount", "paid_amount", "expected"),
    [(1000, 500, 500), (1000, None, 1000), (None, 700, 700), (None, None, None), (0, None, 0)],
)
def test_captured_amount_prefers_what_was_paid_to_the_price_recorded(amount, paid_amount, expected):
    assert captured_amount(payment(amount=amount, paid_amount_cents=paid_amount)) == expected


def test_takeback_target_is_measured_against_the_captured_amount():
    # recorded at 1000, captured 500: refunding 250 gives back half of what was paid
    row = payment(credits=100, amount=1000, paid_amount_cents=500, refunded=250)

    assert takeback_target(row) == 50
    assert derive_status(row) == S.PARTIALLY_REFUNDED


def test_refunding_everything_captured_is_a_full_refund_whatever_the_price():
    row = payment(credits=100, amount=1000, paid_amount_cents=500, refunded=500)

    assert takeback_target(row) == 100
    assert derive_status(row) == S.REFUNDED


# -- settle: postings ---------------------------------------------------------------------


def granted(**fields) -> PaymentRow:
    """A paid payment whose credits were granted, as settle leaves it."""
    return settle(payment(**fields), "evt_paid").row


def kinds(settled) -> list[tuple[LedgerKind, int]]:
    return [(p.kind, p.amount) for p in settled.postings]


def test_paying_grants_the_credits_once():
    first = settle(payment(status=S.PENDING), "evt_paid")
    again = settle(first.row, "evt_paid_copy")

    assert kinds(first) == [(LedgerKind.GRANT, 100)]
    assert first.row.credits_granted == 100
    assert first.row.status == S.COMPLETED
    assert again.postings == ()


def test_an_unpaid_payment_posts_nothing():
    settled = settle(payment(paid=False, unpaid_status=S.PROCESSING.value), "evt_processing")

    assert settled.postings == ()
    assert settled.row.credits_granted == 0


def test_a_refund_that_fails_posts_a_reversal():
    row = granted()
    refunded = settle(replace(row, refunds=refunds((1000, "succeeded"))), "evt_refund")
    failed = settle(replace(refunded.row, refunds=refunds((1000, "failed"))), "evt_refund_failed")

    assert kinds(refunded) == [(LedgerKind.CLAWBACK, -100)]
    assert refunded.row.status == S.REFUNDED
    assert kinds(failed) == [(LedgerKind.REVERSAL, 100)]
    assert failed.row.credits_taken_back == 0
    assert failed.status_change.to_status == S.COMPLETED
    assert failed.postings[0].key == "stripe:payment:1:reversal:evt_refund_failed"


def test_one_of_two_refunds_failing_reverses_only_its_share():
    row = granted()
    both = settle(replace(row, refunds=refunds((250, "succeeded"), (250, "succeeded"))), "evt_2")
    one_failed = settle(
        replace(both.row, refunds=refunds((250, "succeeded"), (250, "failed"))), "evt_3"
    )

    assert kinds(both) == [(LedgerKind.CLAWBACK, -50)]
    assert kinds(one_failed) == [(LedgerKind.REVERSAL, 25)]
    assert one_failed.row.status == S.PARTIALLY_REFUNDED


def test_a_lost_dispute_takes_back_every_credit():
    settled = settle(replace(granted(), disputes={"dp_1": {"status": LOST}}), "evt_lost")

    assert kinds(settled) == [(LedgerKind.CLAWBACK, -100)]
    assert settled.row.status == S.REFUNDED


# -- settle: freezing under FraudPolicy.FREEZE --------------------------------------------

WARNED = {"issfr_1": {"actionable": True, "fraud_type": "made_with_stolen_card"}}
RESOLVED = {"issfr_1": {"actionable": False, "fraud_type": "made_with_stolen_card"}}
FREEZE = FraudPolicy.FREEZE


# Holds move no credits: they are the payment's credits_frozen (and the account's frozen),
# not ledger entries. ``unheld`` is the user's balance less what is held for other payments.


def test_an_actionable_warning_holds_the_payments_credits():
    settled = settle(replace(granted(), fraud_warnings=WARNED), "evt_warn", fraud_policy=FREEZE, unheld=100)

    assert settled.postings == ()  # still in the balance, not spendable
    assert (settled.held, settled.row.credits_frozen) == (100, 100)
    assert settled.status_change is None  # a warning alone does not change the status


def test_without_the_freeze_policy_a_warning_holds_nothing():
    settled = settle(replace(granted(), fraud_warnings=WARNED), "evt_warn", unheld=100)

    assert (settled.postings, settled.held, settled.row.credits_frozen) == ((), 0, 0)


@pytest.mark.parametrize(("unheld", "held"), [(30, 30), (0, 0), (-40, 0), (None, 0), (500, 100)])
def test_a_hold_takes_no_more_than_the_unheld_balance(unheld, held):
    settled = settle(replace(granted(), fraud_warnings=WARNED), "evt_warn", fraud_policy=FREEZE, unheld=unheld)

    assert (settled.held, settled.row.credits_frozen) == (held, held)


def test_a_resolved_warning_releases_the_hold():
    held = settle(replace(granted(), fraud_warnings=WARNED), "evt_warn", fraud_policy=FREEZE, unheld=30)

    released = settle(replace(held.row, fraud_warnings=RESOLVED), "evt_warn_resolved", fraud_policy=FREEZE, unheld=30)

    assert (released.postings, released.held, released.row.credits_frozen) == ((), -30, 0)


def test_an_open_dispute_holds_and_a_won_one_releases():
    opened = settle(replace(granted(), disputes={"dp_1": {"status": OPEN}}), "evt_open", fraud_policy=FREEZE, unheld=100)
    won = settle(replace(opened.row, disputes={"dp_1": {"status": WON}}), "evt_won", fraud_policy=FREEZE, unheld=100)

    assert (opened.held, won.held) == (100, -100)
    assert won.row.status == S.COMPLETED


def test_a_lost_dispute_releases_the_hold_and_takes_everything_back():
    opened = settle(replace(granted(), disputes={"dp_1": {"status": OPEN}}), "evt_open", fraud_policy=FREEZE, unheld=100)

    lost = settle(replace(opened.row, disputes={"dp_1": {"status": LOST}}), "evt_lost", fraud_policy=FREEZE, unheld=100)

    assert kinds(lost) == [(LedgerKind.CLAWBACK, -100)]
    assert (lost.held, lost.row.credits_frozen, lost.row.credits_taken_back) == (-100, 0, 100)


def test_a_partial_refund_of_a_held_payment_holds_only_what_is_left():
    # 100 granted and held (the balance is 100); a refund takes back 25: 75 are left to hold
    held = settle(replace(granted(), fraud_warnings=WARNED), "evt_warn", fraud_policy=FREEZE, unheld=100)

    refunded = settle(replace(held.row, refunded_cents=250), "evt_refund", fraud_policy=FREEZE, unheld=100)

    assert kinds(refunded) == [(LedgerKind.CLAWBACK, -25)]
    assert (refunded.row.credits_taken_back, refunded.row.credits_frozen, refunded.held) == (25, 75, -25)
    again = settle(refunded.row, "evt_again", fraud_policy=FREEZE, unheld=75)
    assert (again.postings, again.held) == ((), 0)


def test_a_hold_never_exceeds_what_the_clawback_of_the_same_settle_leaves():
    # 100 granted, 40 spent; a warning and a refund of a quarter arrive together
    row = replace(granted(), fraud_warnings=WARNED, refunded_cents=250)

    settled = settle(row, "evt_refund", fraud_policy=FREEZE, unheld=60)

    assert kinds(settled) == [(LedgerKind.CLAWBACK, -25)]
    assert settled.row.credits_frozen == 35  # the 60 unspent, less the 25 the refund took


# -- ledger keys --------------------------------------------------------------------------


def test_the_grant_key_is_one_per_payment_whatever_the_cause():
    row = payment()

    assert ledger_key(row, LedgerKind.GRANT, "evt_a") == ledger_key(row, LedgerKind.GRANT, "evt_b")
    assert ledger_key(row, LedgerKind.GRANT, "evt_a") != ledger_key(
        replace(row, id=2), LedgerKind.GRANT, "evt_a"
    )


def test_every_other_key_is_one_per_payment_kind_and_cause():
    others = [k for k in LedgerKind if k not in (LedgerKind.GRANT, LedgerKind.SPEND)]
    rows = [payment(), replace(payment(), id=2), replace(payment(), provider="paypal")]
    causes = ["evt_a", "evt_b", "x" * 300, "x" * 301]

    found = [ledger_key(row, kind, cause) for row in rows for kind in others for cause in causes]

    assert len(set(found)) == len(found)
    assert all(len(key) <= keys.MAX_KEY_LENGTH for key in found)
    assert ledger_key(rows[0], LedgerKind.CLAWBACK, "evt_a") == "stripe:payment:1:clawback:evt_a"


def test_postings_carry_their_key_cause_and_payment():
    paid = settle(payment(id=9, status=S.PENDING), "evt_x")
    refunded = settle(replace(paid.row, refunded_cents=250), "evt_y")

    assert [
        (p.key, p.cause, p.payment_id, p.user_id) for p in paid.postings + refunded.postings
    ] == [
        ("stripe:payment:9:grant", "evt_x", 9, "user_1"),
        ("stripe:payment:9:clawback:evt_y", "evt_y", 9, "user_1"),
    ]


# -- properties of settle over any history of facts -----------------------------------------

REFUND_STATUSES = [s.value for s in RefundStatus]
_DISPUTE_RANK = {OPEN: 0, WON: 1, LOST: 1}

facts = st.one_of(
    st.tuples(st.just("pay"), st.one_of(st.none(), st.integers(min_value=1, max_value=2000))),
    st.tuples(st.just("unpaid"), st.sampled_from(sorted(UNPAID))),
    st.tuples(st.just("charge_refunded"), st.integers(min_value=0, max_value=2500)),
    st.tuples(
        st.just("refund"),
        st.sampled_from(["re_a", "re_b", "re_c"]),
        st.integers(min_value=1, max_value=1200),
        st.sampled_from(REFUND_STATUSES),
    ),
    st.tuples(
        st.just("dispute"), st.sampled_from(["dp_a", "dp_b"]), st.sampled_from([OPEN, WON, LOST])
    ),
    st.tuples(st.just("warning"), st.sampled_from(["issfr_a", "issfr_b"]), st.booleans()),
    st.tuples(st.just("spend"), st.integers(min_value=1, max_value=150)),
)


def with_fact(row: PaymentRow, fact: tuple) -> PaymentRow:
    """Record one fact the way application/apply.py does: facts only move forward, and only
    a paid payment hears of refunds, disputes and warnings (the others are held until then)."""
    kind, *args = fact
    if kind == "pay":
        return row if row.paid_at else replace(row, paid_at=PAID_AT, paid_amount_cents=args[0])
    if kind == "unpaid":
        return row if row.paid_at else replace(row, unpaid_status=args[0])
    if row.paid_at is None:
        return row
    if kind == "charge_refunded":
        return replace(row, refunded_cents=max(row.refunded_cents, args[0]))
    if kind == "refund":
        refund_id, amount, status = args
        before = row.refunds.get(refund_id)
        if before and RefundStatus(before["status"]).rank >= RefundStatus(status).rank:
            status = before["status"]
        amount = max(amount, before["amount_cents"]) if before else amount
        return replace(
            row, refunds={**row.refunds, refund_id: {"amount_cents": amount, "status": status}}
        )
    if kind == "dispute":
        dispute_id, status = args
        before = row.disputes.get(dispute_id)
        if before and _DISPUTE_RANK[before["status"]] >= _DISPUTE_RANK[status]:
            return row
        return replace(row, disputes={**row.disputes, dispute_id: {"status": status}})
    if kind == "warning":
        warning_id, actionable = args
        before = row.fraud_warnings.get(warning_id, {"actionable": True})
        warning = {"actionable": before["actionable"] and actionable}
        return replace(row, fraud_warnings={**row.fraud_warnings, warning_id: warning})
    return row  # spend: the user's balance moves, not the payment


@settings(max_examples=250, deadline=None)
@given(
    history=st.lists(facts, max_size=14),
    paid_first=st.booleans(),  # most of what matters happens after payment
    policy=st.sampled_from(list(FraudPolicy)),
    credits=st.integers(min_value=1, max_value=500),
)
def test_postings_and_holds_always_add_up_to_what_the_row_says_and_settling_again_changes_nothing(
    history, paid_first, policy, credits
):
    if paid_first:
        history = [("pay", None), *history]
    row = payment(credits=credits, paid=False, status=S.PENDING)
    balance = 0  # this user's, who has no other payment
    held = 0
    posted: list = []
    for n, fact in enumerate(history):
        if fact[0] == "spend":
            balance -= min(fact[1], max(balance, 0))  # spends never overdraw
        candidate = with_fact(row, fact)
        try:
            settled = settle(candidate, f"evt_{n}", fraud_policy=policy, unheld=balance)
        except TransitionError:
            continue  # unpaid news the table refuses (the batch ignores that event)
        row = settled.row
        posted += settled.postings
        balance += sum(p.amount for p in settled.postings)
        held += settled.held

        mine = [p for p in posted if p.payment_id == row.id]
        assert sum(p.amount for p in mine) == row.credits_granted - row.credits_taken_back
        assert held == row.credits_frozen  # the account's frozen moves by exactly the row's
        assert row.credits_frozen <= max(balance, 0)  # a hold is never more than the balance
        assert row.credits_granted in (0, row.credits)
        assert 0 <= row.credits_frozen <= row.credits_granted - row.credits_taken_back
        assert len({p.key for p in posted}) == len(posted)  # each entry can happen once
        assert [p.key for p in posted if p.kind == LedgerKind.GRANT] in (
            [],
            [f"stripe:payment:{row.id}:grant"],
        )
        if policy == FraudPolicy.OFF:
            assert row.credits_frozen == 0

        again = settle(row, f"evt_{n}_again", fraud_policy=policy, unheld=balance)
        assert again.postings == () and again.held == 0
        assert again.status_change is None
        assert again.row == row
