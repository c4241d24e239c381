"""Facts only the provider's API has: a Checkout Session's line items, for the credit catalog.

Payment Links, Pricing Tables and sessions made in the Dashboard carry no
metadata of ours; what was bought is in the session's line items, which
webhooks never include. A paid session with neither a recorded payment nor
credits in its metadata is held under a lookup key (application/apply.py);
after the transaction, this asks the provider — never inside a transaction —
and applies the held events again with the line items attached.
"""

from __future__ import annotations

from application.batch import BatchReport, Incoming
from application.unit import UnitOfWork
from models import inbox, keys
from providers import registry


def look_up_session(unit: UnitOfWork, api, provider: str, session_id: str) -> BatchReport:
    """Fetch the session's line items and apply the events held for them; an empty report if none waits."""
    with unit.database.transaction() as session:
        waiting = inbox.held_for(session, [keys.lookup_key(provider, session_id)])
    if not waiting:
        return BatchReport()
    items = api.list_line_items(session_id)  # ProviderUnavailableError propagates: the caller retries
    adapter = registry.get(provider)
    return unit.apply(
        [Incoming(adapter.with_line_items(adapter.parse_event(row.payload), items), "lookup") for row in waiting]
    )
