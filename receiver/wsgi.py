"""WSGI entry point for gunicorn: the receiver built from the environment."""

from receiver import create_app
from workers.logs import configure_logging
from workers.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, settings.log_format)
app = create_app(settings)
