"""Celery tasks: thin glue from a message to the domain, and the retry decision."""

from tasks import events, maintenance  # noqa: F401  (registers the tasks)
