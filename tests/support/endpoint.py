"""A webhook receiver in the test process: records every delivery and answers as told.

``answers`` is consumed one status per request (then 200 forever); ``delay``
holds each request that long before answering, so a worker can be killed
mid-delivery.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> dict:
        """What a receiver does: standardwebhooks' own verification, which raises if the signature is wrong."""
        return Webhook(secret).verify(self.body, self.headers)


class Endpoint:
    def __init__(self, answers: list[int] | None = None, delay: float = 0.0) -> None:
        self.answers = list(answers or [])
        self.delay = delay
        self.received: list[Received] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: nothing was delivered
                    return
                with endpoint._lock:
                    endpoint.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                    status = endpoint.answers.pop(0) if endpoint.answers else 200
                time.sleep(endpoint.delay)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet: the test reads self.received
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 drops connections a worker opens side by side

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ids(self) -> list[str]:
        with self._lock:
            return [r.message_id for r in self.received]
