"""The engine and the one way to open a transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgres:// and postgresql:// URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _binary_arrays(dbapi_connection, _record) -> None:
    """Send list parameters as binary arrays.

    A batch passes each column as one array (``unnest``); in psycopg's default
    text format every element is escaped character by character, which for a
    batch of raw event bodies cost 30 times what the binary format costs.
    """
    # Imported here, never at module level: psycopg picks its wait function when it is
    # first imported, and the web process imports this module in gunicorn's master,
    # before gevent patches sockets; imported there, psycopg would block a gevent worker.
    from psycopg.types.array import ListBinaryDumper

    dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)


class Database:
    """An engine plus a session factory; create one per process."""

    def __init__(self, url: str, *, pool_size: int = 5, pre_ping: bool = True, echo: bool = False,
                 lock_timeout_seconds: float | None = None) -> None:
        # Workers turn pre_ping off: a dead pooled connection fails the task with a
        # transient error, which is retried, instead of costing a round trip per task.
        self.engine: Engine = create_engine(
            normalize_url(url),
            pool_size=pool_size,
            pool_pre_ping=pre_ping,
            echo=echo,
            connect_args={"connect_timeout": 5, **_session_options(lock_timeout_seconds)},
            # A failed statement's message would otherwise carry its parameters:
            # raw bodies, for the inbox and dead-letter inserts.
            hide_parameters=True,
        )
        event.listen(self.engine, "connect", _binary_arrays)
        event.listen(self.engine, "handle_error", _primary_message_only)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _session_options(lock_timeout_seconds: float | None) -> dict[str, str]:
    if lock_timeout_seconds is None:
        return {}
    return {"options": f"-c lock_timeout={round(lock_timeout_seconds * 1000)}"}


def _primary_message_only(context: ExceptionContext) -> None:
    """Keep only PostgreSQL's primary message in a failed statement's exception: no DETAIL.

    The DETAIL of a constraint violation quotes the row ("Failing row contains
    (…)", raw body and all) and would follow the exception into every log line,
    traceback and error report. The fields stay on ``exc.orig.diag`` for code
    that needs them; only the text changes.
    """
    original = context.original_exception
    primary = getattr(getattr(original, "diag", None), "message_primary", None)
    if not primary or str(original) == primary:
        return
    original.args = (primary,)
    wrapped = context.sqlalchemy_exception
    if wrapped is not None:
        wrapped.args = (f"({type(original).__module__}.{type(original).__name__}) {primary}",)
