"""What a worker process holds on to: its settings and its database handle."""

from __future__ import annotations

from models.db import Database
from models.rules import Rules
from workers.settings import Settings


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules: Rules = settings.rules()
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            url = self.settings.require("database_url", "the workers need PostgreSQL")
            self._db = Database(url, pre_ping=False)
        return self._db

    def forget_connections(self) -> None:
        """After fork: never share a parent's pooled connections with a child."""
        if self._db is not None:
            self._db.engine.dispose(close=False)
            self._db = None
