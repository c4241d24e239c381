"""The queue between the receiver and the workers (Redis only: no database, no Celery).

``transport.queue`` holds the wire format and both ends: the receiver's
``Publisher`` and the consumers' ``Claims`` (reliable fetch with heartbeats).
"""
