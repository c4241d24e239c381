"""Credits: a ledger of signed entries and a balance kept equal to their sum.

Every entry carries an idempotency key under a unique constraint and is written
with ``ON CONFLICT DO NOTHING``; only entries really inserted move the balance,
in the same statement, so a grant or clawback asked for twice happens once and
balance = Σ ledger holds always. A batch's postings go in one statement:
entries in order, accounts in user order (so two batches lock accounts in the
same order and never deadlock on them).

Keys: payhooks writes ``<provider>:payment:<id>:…`` (models/settlement.py);
a caller's spend key is stored as ``spend:<key>``, a namespace no key payhooks
writes can enter, so no value a caller sends can block a grant.

A clawback larger than the balance follows the configured policy: take it all
(the balance goes negative), or stop at zero and record the rest as the
entry's ``shortfall``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.enums import ClawbackPolicy, LedgerKind
from models.settlement import Posting
from models.tables import CreditAccount, CreditLedger

SPEND_PREFIX = "spend:"


class InsufficientCreditsError(ValueError):
    """A spend larger than the balance."""


_POST = text(
    """
    WITH input AS (
        SELECT * FROM unnest(CAST(:user_ids AS text[]), CAST(:payment_ids AS bigint[]), CAST(:kinds AS text[]),
                             CAST(:amounts AS bigint[]), CAST(:shortfalls AS bigint[]), CAST(:keys AS text[]),
                             CAST(:causes AS text[]))
                 WITH ORDINALITY AS i(user_id, payment_id, kind, amount, shortfall, key, cause, n)
    ), entry AS (
        INSERT INTO credit_ledger (user_id, payment_id, kind, amount, shortfall, idempotency_key, cause)
        SELECT user_id, payment_id, kind, amount, shortfall, key, cause FROM input ORDER BY n
        ON CONFLICT ON CONSTRAINT uq_credit_ledger_idempotency_key DO NOTHING
        RETURNING user_id, payment_id, kind, amount, shortfall, idempotency_key, cause
    ), account AS (
        INSERT INTO credit_accounts AS a (user_id, balance, total_purchased, total_refunded)
        SELECT user_id,
               sum(amount),
               coalesce(sum(amount) FILTER (WHERE kind = 'grant'), 0),
               coalesce(sum(-amount) FILTER (WHERE kind IN ('clawback', 'reversal')), 0)
        FROM entry GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE SET
            balance = a.balance + EXCLUDED.balance,
            total_purchased = a.total_purchased + EXCLUDED.total_purchased,
            total_refunded = a.total_refunded + EXCLUDED.total_refunded,
            updated_at = now()
        RETURNING user_id
    )
    -- a data-modifying WITH runs to completion whether or not this reads it
    SELECT user_id, payment_id, kind, amount, shortfall, idempotency_key, cause FROM entry
    """
)


@dataclass(frozen=True)
class Entry:
    """A ledger entry really written (not one whose key was already used)."""

    user_id: str
    payment_id: int | None
    kind: str
    amount: int
    shortfall: int
    key: str
    cause: str


def post(session: Session, postings: Sequence[Posting], policy: ClawbackPolicy = ClawbackPolicy.ALLOW_NEGATIVE) -> list[Entry]:
    """Write entries and move balances; return those really inserted.

    Under ``floor_at_zero`` a clawback takes no more than the balance (the user's
    account is locked and read first) and records the rest as its shortfall.
    """
    postings = [p for p in postings if p.amount != 0]
    if not postings:
        return []
    shortfalls = [0] * len(postings)
    if policy == ClawbackPolicy.FLOOR_AT_ZERO and any(p.kind == LedgerKind.CLAWBACK for p in postings):
        postings, shortfalls = _floor_at_zero(session, postings)
    rows = session.execute(
        _POST,
        {
            "user_ids": [p.user_id for p in postings],
            "payment_ids": [p.payment_id for p in postings],
            "kinds": [p.kind.value for p in postings],
            "amounts": [p.amount for p in postings],
            "shortfalls": shortfalls,
            "keys": [p.key for p in postings],
            "causes": [p.cause for p in postings],
        },
    ).all()
    return [Entry(*row) for row in rows]


_HOLD = text(
    """
    INSERT INTO credit_accounts AS a (user_id, balance, total_purchased, total_refunded, frozen)
    SELECT user_id, 0, 0, 0, delta
    FROM unnest(CAST(:user_ids AS text[]), CAST(:deltas AS bigint[])) AS h(user_id, delta)
    ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET frozen = a.frozen + EXCLUDED.frozen, updated_at = now()
    """
)


def hold(session: Session, deltas: dict[str, int]) -> None:
    """Move the credits held on accounts (frozen: in the balance, not spendable) by these amounts."""
    deltas = {user: delta for user, delta in deltas.items() if delta}
    if deltas:
        users = sorted(deltas)
        session.execute(_HOLD, {"user_ids": users, "deltas": [deltas[u] for u in users]})


def _floor_at_zero(session: Session, postings: list[Posting]) -> tuple[list[Posting], list[int]]:
    """Cut clawbacks to what each balance covers, walking the postings in order."""
    balances = lock_balances(session, {p.user_id for p in postings})
    adjusted, shortfalls = [], []
    for p in postings:
        shortfall = 0
        if p.kind == LedgerKind.CLAWBACK and p.amount < 0:
            covered = min(-p.amount, max(balances.get(p.user_id, 0), 0))
            shortfall = -p.amount - covered
            p = replace(p, amount=-covered)
        balances[p.user_id] = balances.get(p.user_id, 0) + p.amount
        if p.amount != 0 or shortfall:
            adjusted.append(p)
            shortfalls.append(shortfall)
    return adjusted, shortfalls


def lock_balances(session: Session, user_ids: set[str]) -> dict[str, int]:
    """The balances of these users, their accounts locked in user order."""
    return {user: balance for user, (balance, _) in lock_accounts(session, user_ids).items()}


def lock_accounts(session: Session, user_ids: set[str]) -> dict[str, tuple[int, int]]:
    """(balance, frozen) of these users, their accounts locked in user order."""
    if not user_ids:
        return {}
    rows = session.execute(
        select(CreditAccount.user_id, CreditAccount.balance, CreditAccount.frozen)
        .where(CreditAccount.user_id.in_(sorted(user_ids)))
        .order_by(CreditAccount.user_id)
        .with_for_update()
    )
    return {user: (balance, frozen) for user, balance, frozen in rows}


def spend(session: Session, *, user_id: str, credits: int, idempotency_key: str, reason: str) -> CreditLedger:
    """Use credits; the same key twice spends once (the first entry is returned)."""
    key = SPEND_PREFIX + idempotency_key
    existing = _entry_by_key(session, key)
    if existing is not None:
        return existing
    account = lock_account(session, user_id)
    available = account.balance - account.frozen  # held credits are in the balance but not spendable
    if available < credits:
        held = f" ({account.frozen} of {account.balance} held)" if account.frozen else ""
        raise InsufficientCreditsError(f"available balance {available}{held} is less than {credits}")
    post(session, [Posting(user_id, -credits, LedgerKind.SPEND, key, reason)])
    # Ours, or that of a concurrent spend with the same key that won the race.
    return _entry_by_key(session, key)


def caller_key(entry: CreditLedger) -> str:
    """The idempotency key as the caller chose it (spends) or as payhooks wrote it."""
    return entry.idempotency_key.removeprefix(SPEND_PREFIX) if entry.kind == LedgerKind.SPEND else entry.idempotency_key


def _entry_by_key(session: Session, idempotency_key: str) -> CreditLedger | None:
    return session.scalars(select(CreditLedger).where(CreditLedger.idempotency_key == idempotency_key)).first()


def lock_account(session: Session, user_id: str) -> CreditAccount:
    session.execute(
        insert(CreditAccount)
        .values(user_id=user_id, balance=0, total_purchased=0, total_refunded=0, frozen=0)
        .on_conflict_do_nothing(index_elements=[CreditAccount.user_id])
    )
    return session.get(CreditAccount, user_id, with_for_update=True, populate_existing=True)


def account_summary(session: Session, user_id: str) -> dict[str, int | str]:
    """Balance and totals for a user; zeros for one we have never seen."""
    account = session.get(CreditAccount, user_id, populate_existing=True)
    if account is None:
        return {"user_id": user_id, "balance": 0, "total_purchased": 0, "total_refunded": 0, "frozen": 0}
    return {
        "user_id": user_id,
        "balance": account.balance,
        "total_purchased": account.total_purchased,
        "total_refunded": account.total_refunded,
        "frozen": account.frozen,
    }
