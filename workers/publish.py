"""Publish a verified event onto the ``webhooks`` queue, fast, and fail fast.

The receiver writes the Celery message itself — protocol 2 over kombu's Redis
transport, one ``LPUSH`` — instead of calling ``send_task``. Building a message
through Celery and kombu costs about as much as the rest of the receiver; the
message below is exactly what they would build (``tests/unit`` compares the two
field by field), so a stock ``celery worker`` consumes it.

Each accepted event is also written to the journal (workers/journal.py) by
the same atomic script that pushes it, so an event a dying worker took from the queue can be
published again.

Publishing is bounded: a short connect/read timeout and a fixed number of
attempts, then ``PublishError``, which the receiver turns into a 503 so the
provider retries later. It never hangs.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid

import orjson
import redis

from workers import journal
from workers.queues import PROCESS_EVENT, WEBHOOKS_QUEUE

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class PublishError(RuntimeError):
    """The broker could not be reached in time; nothing was enqueued."""


def celery_message(
    task: str,
    args: list,
    *,
    queue: str,
    argsrepr: str,
    origin: str,
    task_id: str | None = None,
) -> bytes:
    """A Celery protocol-2 message as kombu's Redis transport stores it."""
    task_id = task_id or str(uuid.uuid4())
    body = orjson.dumps([args, {}, _EMBED])
    envelope = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": argsrepr,
            "kwargsrepr": "{}",
            "origin": origin,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            # the anonymous exchange: the routing key is the queue, as Celery does for direct queues
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return orjson.dumps(envelope)


def _event_id(argsrepr: str) -> str:
    """The event id back from the argsrepr this module writes: "('stripe', 'evt_…')"."""
    return argsrepr.rsplit("'", 2)[-2]


class EventPublisher:
    """Puts one raw provider event onto the ``webhooks`` queue."""

    def __init__(self, redis_url: str, *, timeout: float, attempts: int) -> None:
        self._client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=None,  # our own bounded loop below is the only retry
            retry_on_error=[],
            health_check_interval=0,
        )
        self._attempts = attempts
        self._origin = f"{os.getpid()}@{socket.gethostname()}"
        self._publish = self._client.register_script(journal.PUBLISH_SCRIPT)

    def publish(self, provider: str, event_id: str, body: str, received_at: float | None = None) -> str:
        """Enqueue ``process_event(provider, body, received_at)`` and journal it; return the task id."""
        received_at = time.time() if received_at is None else received_at
        task_id = str(uuid.uuid4())
        message = celery_message(
            PROCESS_EVENT,
            [provider, body, received_at],
            queue=WEBHOOKS_QUEUE,
            # what Celery logs instead of the arguments: never the raw body
            argsrepr=repr((provider, event_id)),
            origin=self._origin,
            task_id=task_id,
        )
        last_error: Exception | None = None
        for attempt in range(self._attempts):
            try:
                self._publish(
                    keys=journal.publish_keys(WEBHOOKS_QUEUE),
                    args=journal.publish_args(provider, event_id, message, received_at),
                )
                return task_id
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                last_error = exc
                if attempt + 1 < self._attempts:
                    time.sleep(0.05 * (attempt + 1))
        raise PublishError(f"broker unreachable after {self._attempts} attempts: {last_error}")

    def republish(self, message: bytes) -> str:
        """Publish a journaled event again: a new message (new task id) for the same event."""
        envelope = orjson.loads(message)
        (provider, body, received_at), _, _ = orjson.loads(base64.b64decode(envelope["body"]))
        event_id = envelope["headers"]["argsrepr"]
        return self.publish(provider, _event_id(event_id), body, received_at)

    def ping(self) -> None:
        self._client.ping()

    @property
    def client(self) -> redis.Redis:
        return self._client
