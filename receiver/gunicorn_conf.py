"""gunicorn settings for the ``web`` and ``api`` processes (``gunicorn -c python:receiver.gunicorn_conf``).

gevent workers. The receiver faces the internet directly wherever the platform
routes to the Procfile's ``web`` (Heroku and the like have no buffering proxy
we control), so a client that opens a connection and then sends nothing, or
trickles its headers or body, must cost a greenlet and a file descriptor, not
a worker. Sync workers let 48 such clients stop every delivery; gthread holds a
thread per slow client with no deadline on headers (bench/attack.py measures
each model, BENCHMARKS.md has the figures).

Deadlines: gunicorn's gevent worker reads each request line and headers, and
waits on an idle kept-alive connection, under ``gevent.Timeout(keepalive)``
(gunicorn/workers/base_async.py), so ``keepalive`` is the header deadline;
the body deadline is the app's (receiver/bodies.py, 408). Monkey-patching
happens in each worker before the app is imported, so psycopg picks its
cooperative wait function and redis-py, the Stripe client, Sentry and
prometheus-client all yield while they wait: a slow /api call does not hold
deliveries in the same process.

Scale with WEB_CONCURRENCY (processes per machine, about one per core).
"""

from infra import metrics
from infra.settings import Settings

_settings = Settings.from_env()

_host = _settings.web_host
bind = f"[{_host}]:{_settings.port}" if ":" in _host else f"{_host}:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "gevent"
worker_connections = _settings.web_worker_connections
keepalive = _settings.request_header_timeout_seconds
timeout = 30
graceful_timeout = 20
# Request line and header sizes stay at gunicorn's defaults (4094 B, 100 fields of 8190 B);
# bodies are capped by the app.


def post_worker_init(worker):
    """Say so if the worker class was overridden to one that cannot cut off a slow body."""
    from receiver.bodies import cooperative

    if not cooperative():
        worker.log.warning(
            "worker class %s: request bodies are read without a deadline; slow clients can hold "
            "this process (use the gevent worker, as receiver/gunicorn_conf.py does)",
            worker.__class__.__name__,
        )


def child_exit(server, worker):
    """Let /metrics forget a dead worker's live gauges (multiprocess mode)."""
    metrics.mark_process_dead(worker.pid, _settings.metrics_dir)
