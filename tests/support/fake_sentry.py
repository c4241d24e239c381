"""A local Sentry ingest endpoint for tests: accepts envelopes and keeps them.

The SDK in every payhooks process (and in the test process) is pointed at it
through ``SENTRY_DSN``; it POSTs envelopes to ``/api/<project>/envelope/``,
gzip- or brotli-compressed. Each envelope is decompressed, kept as text for the
canary search, and parsed into its items (``events()``), so tests can also check
what an error report does contain.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # the SDK compresses with brotli when it is installed
    import brotli
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

_ENVELOPE_PATH = re.compile(r"^/api/(\d+)/envelope/?(?:\?.*)?$")


@dataclass
class Envelope:
    project: str
    text: str
    headers: dict
    items: list[tuple[dict, bytes]] = field(default_factory=list)

    def payloads(self, item_type: str) -> list[dict]:
        return [json.loads(body) for header, body in self.items if header.get("type") == item_type]


def parse_envelope(data: bytes) -> tuple[dict, list[tuple[dict, bytes]]]:
    """The envelope header and its (item header, payload) pairs, as Sentry's protocol has them."""
    first, _, rest = data.partition(b"\n")
    header = json.loads(first) if first.strip() else {}
    items = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_line)
        if "length" in item_header:
            length = item_header["length"]
            payload, rest = rest[:length], rest[length:]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((item_header, payload))
    return header, items


def _decode(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br" and brotli is not None:
        return brotli.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class FakeSentry:
    """Sentry's envelope endpoint on 127.0.0.1; ``dsn`` for the SDK, ``envelopes`` as received."""

    def __init__(self, on_envelope: Callable[[Envelope], None] | None = None) -> None:
        self.envelopes: list[Envelope] = []
        self.errors: list[str] = []
        self._on_envelope = on_envelope
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeSentry:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                match = _ENVELOPE_PATH.match(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if match is None:
                    self._answer(404, {"detail": "not an envelope endpoint"})
                    return
                try:
                    data = _decode(body, self.headers.get("Content-Encoding", ""))
                    header, items = parse_envelope(data)
                except Exception as exc:  # noqa: BLE001 - answer as Sentry would, and remember it
                    fake.errors.append(f"{type(exc).__name__}: {exc}")
                    self._answer(400, {"detail": "invalid envelope"})
                    return
                fake._keep(Envelope(match.group(1), data.decode("utf-8", "replace"), header, items))
                self._answer(200, {"id": header.get("event_id")})

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # the request lines are of no interest
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="fake-sentry",
            daemon=True,
        )
        self._thread.start()
        return self

    def _keep(self, envelope: Envelope) -> None:
        with self._lock:
            self.envelopes.append(envelope)
        if self._on_envelope is not None:
            self._on_envelope(envelope)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def dsn(self) -> str:
        assert self._server is not None, "FakeSentry is not started"
        return f"http://publickey@127.0.0.1:{self._server.server_port}/1"

    def events(self) -> list[dict]:
        """Every error event received so far (the ``event`` items of all envelopes)."""
        with self._lock:
            envelopes = list(self.envelopes)
        return [payload for envelope in envelopes for payload in envelope.payloads("event")]
