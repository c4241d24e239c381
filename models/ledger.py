"""Credits: a ledger of signed entries and a balance kept equal to their sum.

Every entry carries an idempotency key under a unique constraint and is written
with ``ON CONFLICT DO NOTHING``; only an entry that was really inserted moves the
balance, in the same statement sequence and transaction. So a grant or clawback
asked for twice happens once, and balance = Σ ledger holds by construction.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.enums import LedgerKind
from models.tables import CreditAccount, CreditLedger


def grant_key(provider: str, payment_id: int) -> str:
    return f"{provider}:payment:{payment_id}:grant"


def post_entry(
    session: Session,
    *,
    user_id: str,
    amount: int,
    kind: LedgerKind,
    idempotency_key: str,
    cause: str,
    payment_id: int | None = None,
) -> bool:
    """Write one ledger entry and move the balance; False if the key was already used."""
    if amount == 0:
        return False
    _ensure_account(session, user_id)
    inserted = session.execute(
        insert(CreditLedger)
        .values(
            user_id=user_id,
            payment_id=payment_id,
            kind=kind,
            amount=amount,
            idempotency_key=idempotency_key,
            cause=cause,
        )
        .on_conflict_do_nothing(constraint="uq_credit_ledger_idempotency_key")
        .returning(CreditLedger.id)
    ).scalar_one_or_none()
    if inserted is None:
        return False
    account = session.get(CreditAccount, user_id, with_for_update=True, populate_existing=True)
    account.balance += amount
    if amount > 0:
        account.total_purchased += amount
    else:
        account.total_refunded += -amount
    session.flush()
    return True


def _ensure_account(session: Session, user_id: str) -> None:
    session.execute(
        insert(CreditAccount)
        .values(user_id=user_id, balance=0, total_purchased=0, total_refunded=0)
        .on_conflict_do_nothing(index_elements=[CreditAccount.user_id])
    )


def account_summary(session: Session, user_id: str) -> dict[str, int | str]:
    """Balance and totals for a user; zeros for one we have never seen."""
    account = session.get(CreditAccount, user_id)
    if account is None:
        return {"user_id": user_id, "balance": 0, "total_purchased": 0, "total_refunded": 0}
    return {
        "user_id": user_id,
        "balance": account.balance,
        "total_purchased": account.total_purchased,
        "total_refunded": account.total_refunded,
    }


def ledger_sum(session: Session, user_id: str) -> int:
    return session.scalar(
        select(func.coalesce(func.sum(CreditLedger.amount), 0)).where(CreditLedger.user_id == user_id)
    )
