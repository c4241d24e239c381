"""What kind of failure is this? The task decides what to do with each kind.

* permanent: the event can never be applied as it is (bad metadata, a session we
  cannot attribute). Recorded on the inbox row with the reason; never retried.
* transient: the database or broker went away, a deadlock or serialization
  failure. Retried with backoff.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from models.payments import UnknownPaymentError
from providers.changes import InvalidEventError

PERMANENT = (InvalidEventError, UnknownPaymentError)

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
