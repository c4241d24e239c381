"""Is this failure worth another try, and is it an outage or a conflict?

Transient: the database or broker went away, a deadlock or serialization
failure, a lock not granted in time, a provider timeout. Two kinds:

* an outage (the database unreachable, restarting, refusing connections):
  retried with capped backoff for as long as it lasts — an event is never
  dead-lettered because the database was away;
* a conflict (lock timeout, deadlock, serialization failure): retried too, but
  counted; one that keeps failing past RETRY_MAX_ATTEMPTS is a problem with
  that event (a row someone holds locked), and is dead-lettered rather than
  stall everything queued behind it.

Permanent failures (an event that can never be applied) are settled on the
inbox row by the batch (application/batch.py) and never reach this decision.
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


# Lock not available, deadlock, serialization failure: about these rows, not the database.
_CONFLICT_SQLSTATES = frozenset({"55P03", "40P01", "40001"})


def is_conflict(exc: BaseException) -> bool:
    """A transient failure about the rows involved (counted against the retry limit), not an outage."""
    return isinstance(exc, DBAPIError) and (getattr(exc.orig, "sqlstate", None) or "") in _CONFLICT_SQLSTATES
