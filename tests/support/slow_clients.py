"""Hostile HTTP clients and a prober that measures how valid deliveries fare beside them.

``SlowClients`` keeps a number of connections open against a server, each in
one of three modes, and opens a new one whenever the server cuts one off:

* ``trickle_body``: a complete request line and headers announcing a 2 KB body,
  then one body byte per second;
* ``idle``: connects and sends nothing;
* ``trickle_headers``: the request line and headers one byte per second.

It records how long the server let each one live, and what it answered, so a
test can show a deadline cut them. ``probe`` sends valid signed deliveries
meanwhile and reports their latencies. Both run real sockets on 127.0.0.1; the
attackers run on an asyncio loop in a thread of their own.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

MODES = ("trickle_body", "idle", "trickle_headers")
BODY_BYTES = 2000


@dataclass
class Cut:
    """One hostile connection the server ended."""

    mode: str
    lived: float  # seconds from connect to the server closing it
    status: int | None  # the status it answered with, if any (408 expected for a slow body)


@dataclass
class SlowClients:
    host: str
    port: int
    connections: int = 64
    modes: tuple[str, ...] = MODES
    path: str = "/webhooks/stripe"
    interval: float = 1.0  # seconds between trickled bytes
    cuts: list[Cut] = field(default_factory=list)
    open_now: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None

    def __enter__(self) -> SlowClients:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._stop = asyncio.Event()
            ready.set()
            self._loop.run_until_complete(self._main())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="slow-clients", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(10)

    def wait_until_open(self, timeout: float = 10.0) -> None:
        """Block until every hostile connection is established (or fail)."""
        deadline = time.monotonic() + timeout
        while self.open_now < self.connections:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.open_now} of {self.connections} hostile connections opened")
            time.sleep(0.05)

    def cuts_of(self, mode: str) -> list[Cut]:
        return [cut for cut in list(self.cuts) if cut.mode == mode]

    # -- the attackers ------------------------------------------------------------

    async def _main(self) -> None:
        tasks = [asyncio.ensure_future(self._attacker(self.modes[i % len(self.modes)])) for i in range(self.connections)]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _request_head(self) -> bytes:
        return (
            f"POST {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\n"
            "Stripe-Signature: t=1,v1=00\r\n"
            f"Content-Length: {BODY_BYTES}\r\n\r\n"
        ).encode()

    async def _attacker(self, mode: str) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            started = time.monotonic()
            self.open_now += 1
            status = None
            try:
                status = await self._hold(mode, reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                self.open_now -= 1
                writer.close()
            if not self._stop.is_set():
                self.cuts.append(Cut(mode, time.monotonic() - started, status))

    async def _hold(self, mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | None:
        """Hold the connection open in this mode until the server answers or closes it."""
        if mode == "trickle_body":
            writer.write(self._request_head())
            pending = b"{" + b" " * (BODY_BYTES - 1)
        elif mode == "trickle_headers":
            pending = self._request_head()
        else:
            pending = b""
        answer = asyncio.ensure_future(reader.read(4096))
        while not self._stop.is_set():
            if pending:
                writer.write(pending[:1])
                pending = pending[1:]
                await writer.drain()
            done, _ = await asyncio.wait({answer}, timeout=self.interval)
            if done:
                data = answer.result()
                if not data:
                    return None  # closed without a word
                try:
                    return int(data.split(b" ", 2)[1])
                except (IndexError, ValueError):
                    return None
        answer.cancel()
        return None


# -- the valid deliveries -----------------------------------------------------------


@dataclass
class ProbeResult:
    latencies: list[float]  # seconds, of answered requests, sorted
    statuses: dict[int, int]  # status -> count
    failures: list[str]  # timeouts and connection errors

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return math.inf
        return self.latencies[max(0, math.ceil(p / 100 * len(self.latencies)) - 1)]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    def summary(self) -> str:
        return (f"{len(self.latencies)} answered {dict(sorted(self.statuses.items()))}, "
                f"p50 {self.p50 * 1000:.0f} ms, p99 {self.p99 * 1000:.0f} ms, "
                f"max {max(self.latencies, default=math.inf) * 1000:.0f} ms, {len(self.failures)} failed")


def probe(url: str, make_request: Callable[[], tuple[bytes, dict[str, str]]], *, count: int,
          concurrency: int = 4, timeout: float = 10.0, pause: float = 0.02,
          budget: float | None = None) -> ProbeResult:
    """POST `count` valid requests, `concurrency` at a time, each on a new connection; time each.

    With a `budget` (seconds), requests not started by then are counted as failures
    ("not sent"), so a server that cannot answer fails a test quickly.
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures: list[str] = []
    lock = threading.Lock()
    give_up = time.monotonic() + budget if budget is not None else math.inf

    def one(_: int) -> None:
        if time.monotonic() > give_up:
            with lock:
                failures.append("not sent")
            return
        body, headers = make_request()
        started = time.perf_counter()
        try:
            with requests.Session() as session:
                response = session.post(url, data=body, headers={**headers, "Connection": "close"}, timeout=timeout)
        except requests.RequestException as exc:
            with lock:
                failures.append(exc.__class__.__name__)
            return
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        time.sleep(pause)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    return ProbeResult(sorted(latencies), statuses, failures)
