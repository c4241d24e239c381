"""The systems the end-to-end benches drive, started as the Procfile starts them.

``Payhooks``: a fresh migrated database and a private Redis (AOF on,
tests.support.services), the gunicorn receiver and one or more Celery workers.
``Peer``: bench/peer_app.py under gunicorn with the receiver's config, on a
database of its own on the same PostgreSQL.

Both answer the same questions the benches ask: how many grants exist past a
mark (the ledger's id, which only grows), and the CPU time of their processes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psutil
import psycopg
from sqlalchemy.engine import make_url

from bench.procs import API_TOKEN, BIN, SECRET, Group, service_env
from infra.embedded import free_port
from tests.support import services
from tests.support.processes import Process

CREDITS = 100


def plain_dsn(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def process_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and all their live descendants (psutil)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


@dataclass
class Payhooks:
    """payhooks on one box: receiver, workers, a database and a Redis of its own."""

    processes: Group
    web_concurrency: int = 2
    name: str = "payhooks"
    stack: services.TestServices | None = None
    db: psycopg.Connection | None = None
    url: str = ""
    web: Process | None = None
    workers: list[Process] = field(default_factory=list)

    def start(self, *, workers: int = 1, concurrency: int = 2, receiver: bool = True) -> Payhooks:
        return self.open().launch(workers=workers, concurrency=concurrency, receiver=receiver)

    def open(self) -> Payhooks:
        """The database (created and migrated) and the Redis."""
        self.stack = services.start()
        self.db = psycopg.connect(plain_dsn(self.stack.database_url), autocommit=True)
        return self

    def launch(self, *, workers: int = 1, concurrency: int = 2, receiver: bool = True) -> Payhooks:
        """The receiver and the workers, once each answers."""
        if receiver:
            port = free_port()
            self.web = self.processes.http_server(f"{self.name}-web", [
                str(BIN / "gunicorn"), "--config", "python:receiver.gunicorn_conf", "receiver.wsgi:app",
            ], {**self.env, "PORT": str(port)}, port)
            self.url = f"http://127.0.0.1:{port}/webhooks/stripe"
        self.start_workers(workers, concurrency)
        return self

    @property
    def env(self) -> dict[str, str]:
        return service_env({
            "DATABASE_URL": self.stack.database_url,
            "REDIS_URL": self.stack.redis_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "API_TOKEN": API_TOKEN,
            "WEB_CONCURRENCY": str(self.web_concurrency),
        })

    def start_workers(self, count: int, concurrency: int) -> None:
        """`count` Celery workers as the Procfile's `worker` runs them (each --concurrency N)."""
        for number in range(len(self.workers), len(self.workers) + count):
            argv = [str(BIN / "celery"), "-A", "workers", "worker", "--queues", "webhooks,maintenance,outbound",
                    "--concurrency", str(concurrency), "--loglevel", "INFO",
                    "--hostname", f"{self.name}{number}@%h"]
            self.workers.append(self.processes.start(f"{self.name}-worker{number}", argv, self.env))
        for worker in self.workers:
            self.processes.wait_ready(worker)

    def stop_workers(self) -> None:
        while self.workers:
            worker = self.workers.pop()
            worker.stop(timeout=15)
            self.processes.processes.remove(worker)

    def worker_cpu(self) -> float:
        return process_cpu([worker.proc.pid for worker in self.workers])

    def web_cpu(self) -> float:
        return process_cpu([self.web.proc.pid]) if self.web else 0.0

    def analyze(self) -> None:
        """Planner statistics as autovacuum keeps them in a database that has run a while.

        A fresh database grows from empty during a bench, faster than autovacuum's
        first ANALYZE (naptime 1 min): without this its plans are those of a
        database no one has looked at yet, and its statements cost more than
        a prefilled (analyzed) one's.
        """
        self.db.execute("ANALYZE")

    def mark(self) -> int:
        """The newest ledger id: grants after it are this round's."""
        return self.db.execute("SELECT coalesce(max(id), 0) FROM credit_ledger").fetchone()[0]

    def granted(self, mark: int) -> int:
        return self.db.execute("SELECT count(*) FROM credit_ledger WHERE id > %s", (mark,)).fetchone()[0]

    def books(self, mark: int, event_ids: list[str], users: list[str], n: int) -> dict[str, tuple[int, int]]:
        """This round's books: every event processed once, one grant each, balances add up."""
        one = lambda sql, *params: self.db.execute(sql, params).fetchone()[0]  # noqa: E731
        return {
            "events processed": (one("SELECT count(*) FROM webhook_events WHERE provider = 'stripe' "
                                     "AND provider_event_id = ANY(%s) AND status = 'processed'", event_ids), n),
            "ledger rows": (one("SELECT count(*) FROM credit_ledger WHERE id > %s", mark), n),
            "sum of ledger amounts": (one("SELECT coalesce(sum(amount), 0) FROM credit_ledger WHERE id > %s",
                                          mark), n * CREDITS),
            "balances of the round's users": (one("SELECT coalesce(sum(balance), 0) FROM credit_accounts "
                                                  "WHERE user_id = ANY(%s)", sorted(set(users))), n * CREDITS),
        }

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.stack is not None:
            self.stack.close()


@dataclass
class Peer:
    """bench/peer_app.py under gunicorn, on a database of its own next to payhooks'."""

    processes: Group
    admin_url: str
    web_concurrency: int = 2
    database: str = ""
    db: psycopg.Connection | None = None
    url: str = ""
    web: Process | None = None

    def start(self) -> Peer:
        from sqlalchemy import create_engine

        from bench import peer_app

        self.database = f"payhooks_peer_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(plain_dsn(self.admin_url), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        database_url = make_url(self.admin_url).set(database=self.database).render_as_string(hide_password=False)
        engine = create_engine(database_url)
        peer_app.Base.metadata.create_all(engine)
        engine.dispose()
        self.db = psycopg.connect(plain_dsn(database_url), autocommit=True)
        port = free_port()
        env = service_env({
            "PEER_DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "WEB_CONCURRENCY": str(self.web_concurrency),
            "PORT": str(port),
        })
        self.web = self.processes.http_server("peer", [
            str(BIN / "gunicorn"), "--config", "python:receiver.gunicorn_conf", "bench.peer_app:create_app()",
        ], env, port)
        self.url = f"http://127.0.0.1:{port}/webhooks/stripe"
        return self

    def web_cpu(self) -> float:
        return process_cpu([self.web.proc.pid]) if self.web else 0.0

    def mark(self) -> int:
        return self.db.execute("SELECT coalesce(max(id), 0) FROM credit_grants").fetchone()[0]

    def granted(self, mark: int) -> int:
        return self.db.execute("SELECT count(*) FROM credit_grants WHERE id > %s", (mark,)).fetchone()[0]

    def books(self, mark: int, event_ids: list[str], users: list[str], n: int) -> dict[str, tuple[int, int]]:
        one = lambda sql, *params: self.db.execute(sql, params).fetchone()[0]  # noqa: E731
        return {
            "peer events recorded": (one("SELECT count(*) FROM processed_events WHERE event_id = ANY(%s)",
                                         event_ids), n),
            "peer grants": (one("SELECT count(*) FROM credit_grants WHERE id > %s", mark), n),
            "peer balances of the round's users": (one("SELECT coalesce(sum(balance), 0) FROM credit_accounts "
                                                       "WHERE user_id = ANY(%s)", sorted(set(users))), n * CREDITS),
        }

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.database:
            with psycopg.connect(plain_dsn(self.admin_url), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
