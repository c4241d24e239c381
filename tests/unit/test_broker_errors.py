"""The Celery worker's consumer must reconnect when Redis goes away, never stop consuming.

Celery's consumer loop recovers from what the transport calls a *connection*
error (it reconnects and its unacknowledged messages are redelivered); anything
else escaping the loop is unrecoverable and the worker dies or stops consuming.
After a redis-server restart the errors seen are redis-py's ConnectionError
(refused, reset, closed), its TimeoutError, BusyLoadingError while the AOF
loads, and — kombu #2582, fixed in kombu 5.7.0 (#2561, #2592) — a KeyError for a
socket whose channel was already dropped. pyproject.toml requires kombu ≥ 5.7
for that reason; this fails if an older kombu is installed.
"""

from __future__ import annotations

import pytest
import redis
from kombu import Connection


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("Connection closed by server."),
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis.TimeoutError("Timeout reading from socket"),
        redis.BusyLoadingError("Redis is loading the dataset in memory"),
        ConnectionResetError(104, "Connection reset by peer"),
        KeyError(39),  # the stale file descriptor of a channel dropped by the restart (kombu #2582)
    ],
    ids=lambda error: type(error).__name__,
)
def test_the_redis_transport_treats_a_lost_broker_as_a_connection_error(error):
    transport = Connection("redis://127.0.0.1:1/0").transport
    assert isinstance(error, transport.connection_errors)
