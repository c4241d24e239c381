"""Payment rows in bulk: lock the rows a batch touches, reserve ids, write them back.

A batch of events works on ``PaymentRow`` values (frozen: each change makes a
new one, so an event that fails leaves nothing half-applied in memory) and
writes every row it changed in one upsert by primary key. Rows are locked
with ``SELECT … FOR UPDATE`` in id order, after the batch's advisory locks
(application/unit.py), so two batches never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime

import orjson
from sqlalchemy import select, text, true, update
from sqlalchemy.orm import Session

from models.enums import PaymentStatus
from models.tables import Payment


@dataclass(frozen=True)
class PaymentRow:
    id: int
    provider: str
    user_id: str
    credits: int
    provider_session_id: str | None = None
    provider_payment_id: str | None = None
    amount_cents: int | None = None
    currency: str | None = None
    status: str = PaymentStatus.PENDING
    package_id: str | None = None
    package_name: str | None = None
    details: dict = field(default_factory=dict)
    expires_at: datetime | None = None
    paid_at: datetime | None = None
    paid_amount_cents: int | None = None
    paid_currency: str | None = None
    amount_mismatch: bool = False
    refunded_cents: int = 0
    refunds: dict = field(default_factory=dict)
    disputes: dict = field(default_factory=dict)
    fraud_warnings: dict = field(default_factory=dict)
    unpaid_status: str | None = None
    unpaid_status_at: datetime | None = None
    unpaid_status_event: str | None = None
    credits_granted: int = 0
    credits_taken_back: int = 0
    credits_frozen: int = 0
    last_event_created_at: datetime | None = None
    customer_email: str | None = field(default=None, repr=False)  # for e-mail receipts only

    def changed(self, **fields) -> PaymentRow:
        """A copy with these fields changed: ``dataclasses.replace`` without re-running ``__init__``.

        Rows are copied several times per event on the hot path, where replace()
        cost six times as much. Field names are checked all the same.
        """
        unknown = fields.keys() - _FIELDS
        if unknown:
            raise TypeError(f"PaymentRow has no field {sorted(unknown)[0]!r}")
        copy = object.__new__(PaymentRow)
        copy.__dict__.update(self.__dict__, **fields)
        return copy


COLUMNS = tuple(f.name for f in fields(PaymentRow))
_FIELDS = frozenset(COLUMNS)
_JSON = frozenset({"details", "refunds", "disputes", "fraud_warnings"})
_SQL_TYPES = {
    "id": "bigint", "credits": "bigint", "amount_cents": "bigint", "paid_amount_cents": "bigint",
    "refunded_cents": "bigint", "credits_granted": "bigint", "credits_taken_back": "bigint",
    "credits_frozen": "bigint", "amount_mismatch": "boolean",
    "expires_at": "timestamptz", "paid_at": "timestamptz", "unpaid_status_at": "timestamptz",
    "last_event_created_at": "timestamptz",
}


def _sql_type(column: str) -> str:
    return "jsonb" if column in _JSON else _SQL_TYPES.get(column, "text")


# Every changed row in one statement: new rows are inserted (their ids were
# reserved from the sequence), known ones updated. The recovery sweep's lease
# (next_check_at) and created_at are not ours to write.
_SAVE = text(
    f"""
    INSERT INTO payments ({", ".join(COLUMNS)})
    SELECT {", ".join(f"CAST(r.{c} AS jsonb)" if c in _JSON else f"r.{c}" for c in COLUMNS)}
    FROM unnest({", ".join(f"CAST(:{c} AS {'text' if c in _JSON else _sql_type(c)}[])" for c in COLUMNS)})
         AS r({", ".join(COLUMNS)})
    ORDER BY r.id
    ON CONFLICT (id) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in ("id", "provider"))},
        updated_at = now()
    """
)

_RESERVE = text("SELECT nextval(pg_get_serial_sequence('payments', 'id')) FROM generate_series(1, :n)")


def row_of(payment: Payment) -> PaymentRow:
    return PaymentRow(**{c: getattr(payment, c) for c in COLUMNS})


# A join against the ids, which the planner answers with index lookups once the
# table is large (a scan while it is small): an OR of the two columns, or
# `= ANY(array)`, was planned as a scan checking every row against the whole array.
_LOCK = text(
    f"""
    SELECT {", ".join(COLUMNS)} FROM payments
    WHERE id IN (
        SELECT p.id FROM unnest(CAST(:session_ids AS text[])) AS k(v)
        JOIN payments p ON p.provider = :provider AND p.provider_session_id = k.v
        UNION
        SELECT p.id FROM unnest(CAST(:payment_ids AS text[])) AS k(v)
        JOIN payments p ON p.provider = :provider AND p.provider_payment_id = k.v
    )
    ORDER BY id
    FOR UPDATE
    """
)


def lock(
    session: Session, provider: str, *, session_ids: Iterable[str] = (), payment_ids: Iterable[str] = ()
) -> list[PaymentRow]:
    """The payments with any of these session or payment ids, locked, in id order."""
    session_ids, payment_ids = sorted(set(session_ids)), sorted(set(payment_ids))
    if not session_ids and not payment_ids:
        return []
    rows = session.execute(_LOCK, {"provider": provider, "session_ids": session_ids, "payment_ids": payment_ids})
    return [PaymentRow(*row) for row in rows]


def lock_keys(session: Session, refs: Iterable[tuple[str, str | None, str | None]]) -> list[PaymentRow]:
    """Lock the payments for (provider, session id, payment id) references, across providers."""
    by_provider: dict[str, tuple[set[str], set[str]]] = {}
    for provider, session_id, payment_id in refs:
        sessions, payments = by_provider.setdefault(provider, (set(), set()))
        if session_id:
            sessions.add(session_id)
        if payment_id:
            payments.add(payment_id)
    found: list[PaymentRow] = []
    for provider in sorted(by_provider):
        sessions, payments = by_provider[provider]
        found += lock(session, provider, session_ids=sessions, payment_ids=payments)
    return found


def reserve_ids(session: Session, count: int) -> list[int]:
    """Ids for payments a batch may create, so its ledger keys and history can name them."""
    if count <= 0:
        return []
    return list(session.scalars(_RESERVE, {"n": count}))


def save(session: Session, rows: Iterable[PaymentRow]) -> None:
    rows = sorted(rows, key=lambda row: row.id)
    if not rows:
        return
    params = {}
    for column in COLUMNS:
        values = [getattr(row, column) for row in rows]
        params[column] = [orjson.dumps(v).decode() for v in values] if column in _JSON else values
    session.execute(_SAVE, params)


def get(session: Session, payment_id: int, *, for_update: bool = False) -> PaymentRow | None:
    query = select(*(getattr(Payment, c) for c in COLUMNS)).where(Payment.id == payment_id)
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).one_or_none()
    return PaymentRow(*row) if row is not None else None


def by_session(session: Session, provider: str, provider_session_id: str, *, for_update: bool = False) -> PaymentRow | None:
    query = select(*(getattr(Payment, c) for c in COLUMNS)).where(
        Payment.provider == provider, Payment.provider_session_id == provider_session_id
    )
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).one_or_none()
    return PaymentRow(*row) if row is not None else None


def claim_for_check(
    session: Session, *, now: datetime, older_than: datetime, lease_until: datetime, limit: int, dry_run: bool = False,
    providers: Iterable[str] | None = None,
) -> list[tuple[int, str, str, datetime | None]]:
    """Claim up to ``limit`` pending or processing payments for a provider lookup.

    ``FOR UPDATE SKIP LOCKED`` keeps concurrent sweeps off each other's rows, and
    the lease (``next_check_at``) keeps them off for a while after this
    transaction commits, so nobody holds a transaction across the provider call.
    Only ``providers``' payments when given: those with no API to ask (manual) must
    not fill the batch. Returns (payment id, status, session id, expires_at).
    """
    due = (
        select(Payment.id)
        .where(
            Payment.status.in_([PaymentStatus.PENDING, PaymentStatus.PROCESSING]),
            Payment.provider.in_(list(providers)) if providers is not None else true(),
            Payment.provider_session_id.is_not(None),
            Payment.created_at < older_than,
            (Payment.next_check_at.is_(None)) | (Payment.next_check_at < now),
        )
        .order_by(Payment.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    columns = (Payment.id, Payment.status, Payment.provider_session_id, Payment.expires_at)
    if dry_run:
        return [tuple(row) for row in session.execute(select(*columns).where(Payment.id.in_(due.scalar_subquery())))]
    claimed = session.execute(
        update(Payment)
        .where(Payment.id.in_(due.scalar_subquery()))
        .values(next_check_at=lease_until)
        .returning(*columns)
        .execution_options(synchronize_session=False)
    )
    return sorted((tuple(row) for row in claimed), key=lambda row: row[0])


def release_claims(session: Session, payment_ids: list[int]) -> None:
    """Give back claims a sweep could not check (the provider was down), for the next sweep."""
    if payment_ids:
        session.execute(
            update(Payment)
            .where(Payment.id.in_(payment_ids))
            .values(next_check_at=None)
            .execution_options(synchronize_session=False)
        )
