"""Celery tasks: thin glue from a message to the domain, and the retry decision."""

from tasks import events, jobs, maintenance, outbound  # noqa: F401  (registers the tasks)
