"""Apply Alembic migrations: the only way the schema is created or changed."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from models.db import normalize_url


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "models:migrations")
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
