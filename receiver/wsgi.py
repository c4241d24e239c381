"""WSGI entry point for gunicorn: the receiver built from the environment."""

from receiver import create_app
from workers.settings import Settings

app = create_app(Settings.from_env())
