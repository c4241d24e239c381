"""Every key payhooks builds, in one place.

Subject keys name what an event is about. Processing takes a
transaction-scoped advisory lock on each, in sorted order, before touching
rows, so events about one payment apply one after another; a held event waits
under the key of what it needs, and is released by the event that touches it.

Ledger keys make each entry happen at most once: the grant once per payment,
every other entry once per payment, kind and cause (the event that caused it).
Callers' spend keys live in their own namespace (models/ledger.py).
"""

from __future__ import annotations

import hashlib

MAX_KEY_LENGTH = 255


def session_key(provider: str, session_id: str) -> str:
    """A checkout session, invoice, order or manual payment: what a payment is recorded under."""
    return f"{provider}:session:{session_id}"


def payment_key(provider: str, payment_id: str) -> str:
    """A PaymentIntent or capture: what refunds and disputes name."""
    return f"{provider}:payment:{payment_id}"


def subscription_key(provider: str, subscription_id: str) -> str:
    return f"{provider}:subscription:{subscription_id}"


def lookup_key(provider: str, session_id: str) -> str:
    """An event waiting for facts from the provider's API (a session's line items)."""
    return f"{provider}:lookup:{session_id}"


def grant_key(provider: str, payment_row_id: int) -> str:
    return f"{provider}:payment:{payment_row_id}:grant"


def entry_key(provider: str, payment_row_id: int, kind: str, cause: str) -> str:
    key = f"{provider}:payment:{payment_row_id}:{kind}:{cause}"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return f"{provider}:payment:{payment_row_id}:{kind}:{hashlib.sha256(cause.encode()).hexdigest()}"
