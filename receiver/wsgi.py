"""WSGI entry point for gunicorn: the receiver built from the environment."""

from receiver import create_app
from workers.logs import configure_logging
from workers.sentry import init_sentry
from workers.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, settings.log_format)
init_sentry(settings, "web")
app = create_app(settings)
