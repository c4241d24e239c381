"""Is this failure worth another try?

Transient: the database or broker went away, a deadlock or serialization
failure, a provider timeout. Retried with backoff. Permanent failures (an event
that can never be applied) are settled on the inbox row by workers/handling.py
and never reach the retry decision.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# SQLSTATE classes worth another try: connection exceptions, serialization
# failure and deadlock, insufficient resources, operator intervention (restart).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53", "57")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, PoolTimeoutError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    return False
