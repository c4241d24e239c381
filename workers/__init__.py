"""The Celery app, its configuration and the ``payhooks`` CLI.

``celery -A workers`` reads ``workers.app``, which is built from the
environment on first access; importing this package has no side effects.
"""

from __future__ import annotations

from typing import Any

_app = None


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            from infra.sentry import init_sentry
            from infra.settings import Settings
            from workers.celery_app import make_celery

            settings = Settings.from_env()
            init_sentry(settings, "worker")
            _app = make_celery(settings)
        return _app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
