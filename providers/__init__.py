"""Payment providers: verify a delivery, translate its events, call its API.

A provider module turns a verified event into provider-neutral changes (the
frozen dataclasses in ``providers.changes``) with no I/O. Nothing here knows
about the database, Celery or Flask.
"""
