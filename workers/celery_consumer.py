"""Celery's worker consumer, without the message body in its complaints about a message.

When a message names a task this worker does not know (say, a task renamed while
messages for the old name still wait in the queue), breaks the task protocol,
has a content type the worker refuses, or cannot be decoded, Celery logs "the
full contents of the message body": up to a kilobyte of a raw webhook body,
customer data included. This consumer does everything Celery's does and logs the
same lines with the body's size in its place; the headers it still logs (task
name, id, and an argsrepr that is id-only, tasks/base.py) say which message it was.

Configured as ``worker_consumer`` in workers/celery_app.py. (Provider events do not come through it: workers/consumer.py takes them from the events queue.)
"""

from __future__ import annotations

from celery.utils.saferepr import saferepr
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer import consumer as celery_consumer


def _withheld(message) -> str:
    return f"<withheld: {len(message.body or b'')} bytes>"


class Consumer(CeleryConsumer):
    def on_unknown_message(self, body, message):
        return super().on_unknown_message(_withheld(message), message)

    def on_unknown_task(self, body, message, exc):
        return super().on_unknown_task(_withheld(message), message, exc)

    def on_invalid_task(self, body, message, exc):
        return super().on_invalid_task(_withheld(message), message, exc)

    def on_decode_error(self, message, exc):
        # Celery's own reads message.body itself: the same line, the same acknowledgement, no body.
        celery_consumer.crit(
            celery_consumer.MESSAGE_DECODE_ERROR,
            exc,
            message.content_type,
            message.content_encoding,
            saferepr(message.headers),
            _withheld(message),
            exc_info=1,
        )
        message.ack()
