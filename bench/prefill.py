"""Fill a payhooks database with N settled purchases by set-based SQL, before measuring.

N users with a balance, N completed payments, N grants in the ledger and N
processed inbox rows, as N checkout.session.completed events would leave them
(minus the inbox payloads: NULL here, as after retention prunes them, so 10⁶
rows do not need 3 GB of bodies). One INSERT … SELECT generate_series per
table, then VACUUM ANALYZE, so the planner sees the sizes production would.
"""

from __future__ import annotations

import time

STATEMENTS = (
    """INSERT INTO credit_accounts (user_id, balance, total_purchased, total_refunded, frozen)
       SELECT 'prefill_' || g, 100, 100, 0, 0 FROM generate_series(1, %(n)s) g""",
    """INSERT INTO payments (provider, provider_session_id, provider_payment_id, user_id, credits,
                             amount_cents, currency, status, paid_at, paid_amount_cents, paid_currency,
                             credits_granted, last_event_created_at, created_at, updated_at)
       SELECT 'stripe', 'cs_prefill_' || g, 'pi_prefill_' || g, 'prefill_' || g, 100, 1999, 'usd',
              'completed', t, 1999, 'usd', 100, t, t, t
       FROM generate_series(1, %(n)s) g, LATERAL (SELECT now() - (%(n)s - g) * interval '1 second' AS t) at""",
    """INSERT INTO credit_ledger (user_id, payment_id, kind, amount, idempotency_key, cause, created_at)
       SELECT user_id, id, 'grant', 100, 'prefill:grant:' || id, 'checkout.session.completed', created_at
       FROM payments WHERE provider_session_id LIKE 'cs_prefill_%%' ORDER BY id""",
    """INSERT INTO webhook_events (provider, provider_event_id, event_type, payload, status, source, attempts,
                                   provider_created_at, received_at, processed_at)
       SELECT 'stripe', 'evt_prefill_' || g, 'checkout.session.completed', NULL, 'processed', 'webhook', 1,
              t, t, t
       FROM generate_series(1, %(n)s) g, LATERAL (SELECT now() - (%(n)s - g) * interval '1 second' AS t) at""",
)
TABLES = ("credit_accounts", "payments", "credit_ledger", "webhook_events")


def fill(db, n: int) -> float:
    """Insert n rows into each table (autocommit connection); the seconds it took."""
    started = time.perf_counter()
    for statement in STATEMENTS:
        db.execute(statement, {"n": n})
    for table in TABLES:
        db.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


def short(n: int) -> str:
    """10⁶ as '1M', 20000 as '20k'."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return f"{n:,}"
