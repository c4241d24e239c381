"""Subscription rows in bulk. A subscription follows the provider's object: the newest event wins.

A paid invoice is not stored here: it becomes a payment of its own
(application/apply.py), granted once per invoice, refunded like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import select, text, tuple_
from sqlalchemy.orm import Session

from models.tables import Subscription


@dataclass(frozen=True)
class SubscriptionRow:
    provider: str
    provider_subscription_id: str
    status: str
    provider_customer_id: str | None = None
    user_id: str | None = None
    price_id: str | None = None
    credits_per_period: int | None = None
    current_period_end: datetime | None = None
    last_event_created_at: datetime | None = None
    last_event_id: str | None = None


COLUMNS = tuple(f.name for f in fields(SubscriptionRow))
_TYPES = {"credits_per_period": "bigint", "current_period_end": "timestamptz", "last_event_created_at": "timestamptz"}

_SAVE = text(
    f"""
    INSERT INTO subscriptions ({", ".join(COLUMNS)})
    SELECT * FROM unnest({", ".join(f"CAST(:{c} AS {_TYPES.get(c, 'text')}[])" for c in COLUMNS)})
    ORDER BY 1, 2
    ON CONFLICT ON CONSTRAINT uq_subscriptions_provider_provider_subscription_id DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[2:])}, updated_at = now()
    """
)


def lock(session: Session, keys: Iterable[tuple[str, str]]) -> list[SubscriptionRow]:
    """The subscriptions for these (provider, subscription id) pairs, locked."""
    keys = sorted(set(keys))
    if not keys:
        return []
    rows = session.execute(
        select(*(getattr(Subscription, c) for c in COLUMNS))
        .where(tuple_(Subscription.provider, Subscription.provider_subscription_id).in_(keys))
        .order_by(Subscription.provider, Subscription.provider_subscription_id)
        .with_for_update()
    )
    return [SubscriptionRow(*row) for row in rows]


def save(session: Session, rows: Iterable[SubscriptionRow]) -> None:
    rows = list(rows)
    if rows:
        session.execute(_SAVE, {c: [getattr(r, c) for r in rows] for c in COLUMNS})
