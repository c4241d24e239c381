"""WSGI entry point for gunicorn: the receiver built from the environment."""

from infra.logs import configure_logging
from infra.sentry import init_sentry
from infra.settings import Settings
from receiver import create_app

settings = Settings.from_env()
configure_logging(settings.log_level, settings.log_format)
init_sentry(settings, "web")
app = create_app(settings)
