"""gunicorn settings for the ``web`` process (``gunicorn -c python:receiver.gunicorn_conf``).

Sync workers: the receiver's work is short and CPU-bound (HMAC, JSON, one
LPUSH), and on these machines sync workers gave steady throughput where gthread
gave bimodal results. Scale with WEB_CONCURRENCY (processes per machine).
"""

from infra import metrics
from infra.settings import Settings

_settings = Settings.from_env()

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "sync"
timeout = 30
graceful_timeout = 20
# Headers and request line sizes stay at gunicorn's defaults; bodies are capped by the app.


def child_exit(server, worker):
    """Let /metrics forget a dead worker's live gauges (multiprocess mode)."""
    metrics.mark_process_dead(worker.pid, _settings.metrics_dir)
