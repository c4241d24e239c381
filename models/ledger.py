"""Credits: a ledger of signed entries and a balance kept equal to their sum.

Every entry carries an idempotency key under a unique constraint and is written
with ``ON CONFLICT DO NOTHING``; only an entry that was really inserted moves the
balance, in the same transaction, with the account row locked. So a grant or
clawback asked for twice happens once, and balance = Σ ledger holds always.

A clawback larger than the balance follows the configured policy: take it all
(the balance goes negative), or stop at zero and record the rest as the entry's
``shortfall``.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.enums import ClawbackPolicy, LedgerKind
from models.tables import CreditAccount, CreditLedger


class InsufficientCreditsError(ValueError):
    """A spend larger than the balance."""


def grant_key(provider: str, payment_id: int) -> str:
    return f"{provider}:payment:{payment_id}:grant"


# The entry and the balance move in one statement: the account row is upserted
# only from an entry that was really inserted. (The foreign key from the ledger
# to the account is checked at the end of the statement, after both inserts.)
_POST = text(
    """
    WITH entry AS (
        INSERT INTO credit_ledger (user_id, payment_id, kind, amount, shortfall, idempotency_key, cause)
        VALUES (:user_id, :payment_id, :kind, :amount, :shortfall, :key, :cause)
        ON CONFLICT ON CONSTRAINT uq_credit_ledger_idempotency_key DO NOTHING
        RETURNING id, amount
    ), account AS (
        INSERT INTO credit_accounts AS a (user_id, balance, total_purchased, total_refunded)
        SELECT :user_id, amount, :purchased, :refunded FROM entry
        ON CONFLICT (user_id) DO UPDATE SET
            balance = a.balance + EXCLUDED.balance,
            total_purchased = a.total_purchased + EXCLUDED.total_purchased,
            total_refunded = a.total_refunded + EXCLUDED.total_refunded,
            updated_at = now()
        RETURNING user_id
    )
    SELECT entry.id FROM entry, account
    """
)


def post_entry(
    session: Session,
    *,
    user_id: str,
    amount: int,
    kind: LedgerKind,
    idempotency_key: str,
    cause: str,
    payment_id: int | None = None,
    policy: ClawbackPolicy = ClawbackPolicy.ALLOW_NEGATIVE,
) -> int | None:
    """Write one ledger entry and move the balance; the entry's id, or None if the key was used."""
    if amount == 0:
        return None
    shortfall = 0
    if amount < 0 and kind == LedgerKind.CLAWBACK and policy == ClawbackPolicy.FLOOR_AT_ZERO:
        covered = min(-amount, max(lock_account(session, user_id).balance, 0))
        shortfall = -amount - covered
        amount = -covered
    session.flush()
    entry_id = session.execute(
        _POST,
        {
            "user_id": user_id,
            "payment_id": payment_id,
            "kind": kind.value,
            "amount": amount,
            "shortfall": shortfall,
            "key": idempotency_key,
            "cause": cause,
            "purchased": amount if kind == LedgerKind.GRANT else 0,
            "refunded": -amount if kind == LedgerKind.CLAWBACK else 0,
        },
    ).scalar_one_or_none()
    if entry_id is not None:
        # For whoever owns the transaction to report once it commits (metrics, logs).
        session.info.setdefault("ledger_posted", []).append((kind, amount))
    return entry_id


def spend(session: Session, *, user_id: str, credits: int, idempotency_key: str, reason: str) -> CreditLedger:
    """Use credits; the same key twice spends once (the first entry is returned)."""
    existing = _entry_by_key(session, idempotency_key)
    if existing is not None:
        return existing
    account = lock_account(session, user_id)
    if account.balance < credits:
        raise InsufficientCreditsError(f"balance {account.balance} is less than {credits}")
    post_entry(
        session, user_id=user_id, amount=-credits, kind=LedgerKind.SPEND, idempotency_key=idempotency_key, cause=reason
    )
    # Ours, or that of a concurrent spend with the same key that won the race.
    return _entry_by_key(session, idempotency_key)


def _entry_by_key(session: Session, idempotency_key: str) -> CreditLedger | None:
    return session.scalars(select(CreditLedger).where(CreditLedger.idempotency_key == idempotency_key)).first()


def lock_account(session: Session, user_id: str) -> CreditAccount:
    session.execute(
        insert(CreditAccount)
        .values(user_id=user_id, balance=0, total_purchased=0, total_refunded=0)
        .on_conflict_do_nothing(index_elements=[CreditAccount.user_id])
    )
    return session.get(CreditAccount, user_id, with_for_update=True, populate_existing=True)


def account_summary(session: Session, user_id: str) -> dict[str, int | str]:
    """Balance and totals for a user; zeros for one we have never seen."""
    account = session.get(CreditAccount, user_id, populate_existing=True)
    if account is None:
        return {"user_id": user_id, "balance": 0, "total_purchased": 0, "total_refunded": 0}
    return {
        "user_id": user_id,
        "balance": account.balance,
        "total_purchased": account.total_purchased,
        "total_refunded": account.total_refunded,
    }
