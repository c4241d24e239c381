"""What a batch of events changes, held in memory until the batch writes it.

``World`` holds the rows a batch has locked (payments, subscriptions), the
effects it has decided (ledger postings, status changes, attempts) and the
keys it has touched. Each event works in a ``Step``: reads go through the
step to the world, writes stay in the step, and only an event that succeeds
commits its step. An event that raises leaves the world as it was, so one
poison event in a batch costs only itself.

Rows are found by a payment's session id or payment id. Loading is done in
bulk (``preload``) for the whole batch; anything a released held event needs
that was not preloaded is loaded on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from models.enums import FraudPolicy
from models.history import Attempt
from models.payments import PaymentRow
from models.settlement import Posting, StatusChange, settle
from models.subscriptions import SubscriptionRow

PaymentLoader = Callable[[list[tuple[str, str | None, str | None]]], list[PaymentRow]]
SubscriptionLoader = Callable[[list[tuple[str, str]]], list[SubscriptionRow]]


@dataclass
class Effects:
    postings: list[Posting] = field(default_factory=list)
    status_changes: list[StatusChange] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    holds: dict[str, int] = field(default_factory=dict)  # user -> change in credits held
    mismatches: list[tuple[str, int]] = field(default_factory=list)  # (provider, payment id): paid ≠ recorded

    def extend(self, other: Effects) -> None:
        self.postings += other.postings
        self.status_changes += other.status_changes
        self.attempts += other.attempts
        for user, delta in other.holds.items():
            self.holds[user] = self.holds.get(user, 0) + delta
        self.mismatches += other.mismatches


class World:
    def __init__(
        self,
        load_payments: PaymentLoader,
        load_subscriptions: SubscriptionLoader,
        reserve_ids: Callable[[int], list[int]],
        load_accounts: Callable[[set[str]], dict[str, tuple[int, int]]],
    ) -> None:
        self._load_payments = load_payments
        self._load_subscriptions = load_subscriptions
        self._reserve_ids = reserve_ids
        self._load_accounts = load_accounts
        self.payments: dict[int, PaymentRow] = {}
        self.by_session: dict[tuple[str, str], int] = {}
        self.by_payment: dict[tuple[str, str], int] = {}
        self.subscriptions: dict[tuple[str, str], SubscriptionRow | None] = {}
        self.accounts: dict[str, tuple[int, int]] = {}  # user -> (balance, held), loaded only under the freeze policy
        self.dirty_payments: set[int] = set()
        self.dirty_subscriptions: set[tuple[str, str]] = set()
        self.effects = Effects()
        self._loaded_sessions: set[tuple[str, str]] = set()
        self._loaded_payments: set[tuple[str, str]] = set()
        self._spare_ids: list[int] = []

    # -- loading ----------------------------------------------------------------

    def preload(
        self, payment_refs: list[tuple[str, str | None, str | None]], subscription_refs: list[tuple[str, str]]
    ) -> None:
        """Lock and load, in bulk, every row these references may name (misses are remembered too)."""
        wanted = [
            (provider, s if s and (provider, s) not in self._loaded_sessions else None,
             p if p and (provider, p) not in self._loaded_payments else None)
            for provider, s, p in payment_refs
        ]
        wanted = [w for w in wanted if w[1] or w[2]]
        if wanted:
            for row in self._load_payments(wanted):
                if row.id not in self.payments:
                    self._index(row)
            for provider, s, p in wanted:
                if s:
                    self._loaded_sessions.add((provider, s))
                if p:
                    self._loaded_payments.add((provider, p))
        wanted_subs = sorted({ref for ref in subscription_refs if ref not in self.subscriptions})
        if wanted_subs:
            found = {(r.provider, r.provider_subscription_id): r for r in self._load_subscriptions(wanted_subs)}
            for ref in wanted_subs:
                self.subscriptions[ref] = found.get(ref)

    def reserve(self, count: int) -> None:
        """Set aside ids for payments the batch may create."""
        if count > len(self._spare_ids):
            self._spare_ids += self._reserve_ids(count - len(self._spare_ids))

    def _index(self, row: PaymentRow) -> None:
        self.payments[row.id] = row
        if row.provider_session_id:
            self.by_session[(row.provider, row.provider_session_id)] = row.id
        if row.provider_payment_id:
            self.by_payment[(row.provider, row.provider_payment_id)] = row.id

    def step(self) -> Step:
        return Step(self)

    def commit(self, step: Step) -> None:
        for row_id, row in step.payments.items():
            old = self.payments.get(row_id)
            if old is not None:
                # Forget an id this row gave up, unless another row of the step took it over first
                # (a merge puts the survivor, with the retired row's ids, before or after it).
                gone_session = (old.provider, old.provider_session_id)
                if old.provider_session_id != row.provider_session_id:
                    if self.by_session.get(gone_session) == row_id:
                        del self.by_session[gone_session]
                gone_payment = (old.provider, old.provider_payment_id)
                if old.provider_payment_id != row.provider_payment_id:
                    if self.by_payment.get(gone_payment) == row_id:
                        del self.by_payment[gone_payment]
            self._index(row)
            self.dirty_payments.add(row_id)
        for key, sub in step.subscriptions.items():
            self.subscriptions[key] = sub
            self.dirty_subscriptions.add(key)
        for user in {p.user_id for p in step.effects.postings} | set(step.effects.holds):
            if user in self.accounts:
                self.accounts[user] = step.account(user)
        self._spare_ids = self._spare_ids[step.ids_used:]
        self.effects.extend(step.effects)


class Step:
    """One event's view of the world: its reads see its own writes; nothing reaches the world unless committed."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.payments: dict[int, PaymentRow] = {}
        self.subscriptions: dict[tuple[str, str], SubscriptionRow] = {}
        self.effects = Effects()
        self.touched: set[str] = set()
        self.ids_used = 0
        self.payment_ids: list[int] = []  # payments this event changed, for logs

    # -- payments ---------------------------------------------------------------

    def _current(self, row_id: int) -> PaymentRow:
        return self.payments.get(row_id) or self.world.payments[row_id]

    def find(self, provider: str, session_id: str | None, payment_id: str | None) -> tuple[PaymentRow | None, PaymentRow | None]:
        """The payment recorded under the session id, and the one whose money moves under the payment id."""
        self.world.preload([(provider, session_id, payment_id)], [])
        by_session = by_payment = None
        for row in self.payments.values():  # this step's own new rows and moves win
            if session_id and row.provider == provider and row.provider_session_id == session_id:
                by_session = row
            if payment_id and row.provider == provider and row.provider_payment_id == payment_id:
                by_payment = row
        if session_id and by_session is None and (provider, session_id) in self.world.by_session:
            candidate = self._current(self.world.by_session[(provider, session_id)])
            by_session = candidate if candidate.provider_session_id == session_id else None
        if payment_id and by_payment is None and (provider, payment_id) in self.world.by_payment:
            candidate = self._current(self.world.by_payment[(provider, payment_id)])
            by_payment = candidate if candidate.provider_payment_id == payment_id else None
        return by_session, by_payment

    def new_payment(self, **columns) -> PaymentRow:
        if self.ids_used >= len(self.world._spare_ids):
            self.world.reserve(self.ids_used + 1)
        row = PaymentRow(id=self.world._spare_ids[self.ids_used], **columns)
        self.ids_used += 1
        return self.put(row)

    def put(self, row: PaymentRow) -> PaymentRow:
        self.payments[row.id] = row
        if row.id not in self.payment_ids:
            self.payment_ids.append(row.id)
        return row

    def settle(self, row: PaymentRow, cause: str, rules) -> PaymentRow:
        """Status, history, credits and holds follow the row's facts (models/settlement.py)."""
        unheld = None
        if rules.fraud_policy != FraudPolicy.OFF and (row.paid_at is not None or row.credits_frozen):
            balance, held = self.account(row.user_id)
            unheld = balance - (held - row.credits_frozen)
        settled = settle(row, cause, fraud_policy=rules.fraud_policy, unheld=unheld)
        if settled.status_change:
            self.effects.status_changes.append(settled.status_change)
        self.effects.postings += settled.postings
        if settled.held:
            self.effects.holds[row.user_id] = self.effects.holds.get(row.user_id, 0) + settled.held
        return self.put(settled.row)

    def account(self, user_id: str) -> tuple[int, int]:
        """(balance, held) of a user as this step sees it: what is stored, plus what the batch and the step moved."""
        if user_id not in self.world.accounts:
            self.world.accounts[user_id] = self.world._load_accounts({user_id}).get(user_id, (0, 0))
        balance, held = self.world.accounts[user_id]
        return (
            balance + sum(p.amount for p in self.effects.postings if p.user_id == user_id),
            held + self.effects.holds.get(user_id, 0),
        )

    def attempt(self, row: PaymentRow, code: str | None, message: str | None, cause: str) -> None:
        self.effects.attempts.append(Attempt(row.id, code, message, cause))

    # -- subscriptions ------------------------------------------------------------

    def subscription(self, provider: str, subscription_id: str) -> SubscriptionRow | None:
        key = (provider, subscription_id)
        if key in self.subscriptions:
            return self.subscriptions[key]
        self.world.preload([], [key])
        return self.world.subscriptions.get(key)

    def put_subscription(self, row: SubscriptionRow) -> SubscriptionRow:
        self.subscriptions[(row.provider, row.provider_subscription_id)] = row
        return row


def moved(row: PaymentRow, **changes) -> PaymentRow:
    return replace(row, **changes)
