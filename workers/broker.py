"""kombu's Redis transport, minus one way a lost Redis stops the whole worker.

When the broker connection drops while a Celery message is delivered but not
yet acknowledged (an outbox dispatch, a lookup), Celery closes the connection,
and closing the channel tries to put that message back on its queue at once.
By then kombu has released the connection: building a Redis client for the
restore fails with ``AttributeError: 'NoneType' object has no attribute
'hostname'`` (kombu 5.7, transport/redis.py ``_connparams``). Celery counts an
AttributeError as unrecoverable and the worker exits — every consumer in it
with it (found by tests/fault/test_redis_outage.py).

Nothing needs restoring right then: the message is still in the transport's
unacknowledged index in Redis, and any worker restores it once it is older
than ``BROKER_VISIBILITY_TIMEOUT``. So a failed restore at close is logged and
left to that, and the worker reconnects like after any other lost connection.
"""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis

log = logging.getLogger("payhooks.broker")


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client=None):
        try:
            return super().restore_unacked(client)
        except (AttributeError, *kombu_redis.get_redis_error_classes().connection_errors) as exc:
            log.warning(
                "could not put %d unacknowledged message(s) back while the broker connection closed (%s); "
                "they come back after the visibility timeout",
                len(self._delivered), exc.__class__.__name__,
            )
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
