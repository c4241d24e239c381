"""Facts only the provider's API has, or acts the provider must be asked for, never inside a transaction.

Stripe: Payment Links, Pricing Tables and sessions made in the Dashboard carry
no metadata of ours; what was bought is in the session's line items, which
webhooks never include. PayPal: an approved order must be captured by us.
Either event is held under a lookup key (application/apply.py); after the
transaction, this asks the provider (``<provider>.look_up``, told which events
wait) and applies the held events again with its answer attached
(``<provider>.with_lookup``).
"""

from __future__ import annotations

from application.batch import BatchReport, Incoming
from application.unit import UnitOfWork
from models import inbox, keys
from providers import registry


def look_up_session(unit: UnitOfWork, api, provider: str, session_id: str) -> BatchReport:
    """Ask the provider what the held events wait for and apply them with it; an empty report if none waits."""
    with unit.database.transaction() as session:
        waiting = inbox.held_for(session, [keys.lookup_key(provider, session_id)])
    if not waiting:
        return BatchReport()
    adapter = registry.get(provider)
    events = [adapter.parse_event(row.payload) for row in waiting]
    facts = adapter.look_up(api, session_id, events)  # ProviderUnavailableError propagates: the caller retries
    return unit.apply([Incoming(adapter.with_lookup(event, facts), "lookup") for event in events])
