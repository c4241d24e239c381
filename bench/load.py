"""Load generators: ``wrk`` when it is on the PATH, else a small asyncio client.

Both POST to 127.0.0.1 over HTTP/1.1 and report completed requests, errors and
p50/p99 latency. gunicorn's sync workers close every connection after one
response, so with either generator every request opens a new connection.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import urlsplit

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class LoadResult:
    generator: str
    requests: int  # responses received, whatever their status
    errors: int  # socket errors, timeouts and 4xx/5xx answers
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def choose(name: str = "auto") -> str:
    """'wrk' or 'python': wrk if asked for or available, the Python client otherwise."""
    if name == "python":
        return "python"
    if shutil.which("wrk"):
        return "wrk"
    if name == "wrk":
        raise SystemExit("--generator wrk: wrk is not on the PATH (apt-get install -y wrk)")
    return "python"


def describe(generator: str) -> str:
    if generator == "wrk":
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        return (out.stdout + out.stderr).strip().splitlines()[0].split(" [")[0]
    return f"python asyncio client ({_processes()} processes)"


def timed_load(url: str, body: bytes, signature: str | dict[str, str], *, connections: int, seconds: float,
               generator: str) -> LoadResult:
    """POST the same signed body with `connections` connections for `seconds`.

    ``signature``: Stripe's header value, or the signature headers themselves (PayPal's five; Python client only).
    """
    if generator == "wrk":
        if isinstance(signature, dict):
            raise ValueError("the wrk script sends Stripe-Signature only: use --generator python")
        return _wrk(url, body, signature, connections, seconds)
    raw = _raw_request(url, body, signature)
    host, port = _address(url)
    procs = min(_processes(), connections)
    shares = [connections // procs + (i < connections % procs) for i in range(procs)]
    with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(_timed_process, [(host, port, raw, n, seconds) for n in shares]))
    latencies = sorted(lat for part in parts for lat in part[0])
    errors = sum(part[1] for part in parts)
    elapsed = max(part[2] for part in parts)
    return _result(latencies, errors, elapsed)


def post_all(url: str, bodies: list[bytes], sign: Callable[[bytes], str], *,
             connections: int) -> LoadResult:
    """POST each body once, signed as it is sent, `connections` at a time, as fast as answered."""
    latencies, errors, elapsed = asyncio.run(_post_list(url, bodies, sign, connections))
    return _result(sorted(latencies), errors, elapsed)


# -- wrk -----------------------------------------------------------------------

_WRK_LINE = re.compile(r"^BENCH (.*)$", re.MULTILINE)


def _wrk(url: str, body: bytes, signature: str, connections: int, seconds: float) -> LoadResult:
    threads = max(1, min(os.cpu_count() or 1, connections))
    with tempfile.NamedTemporaryFile(suffix=".json") as body_file:
        body_file.write(body)
        body_file.flush()
        out = subprocess.run(
            ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
             f"--timeout={REQUEST_TIMEOUT:g}s", "-s", str(WRK_SCRIPT), url,
             "--", body_file.name, signature],
            capture_output=True, text=True, timeout=seconds + 60,
        )
    match = _WRK_LINE.search(out.stdout)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    fields = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    return LoadResult(
        generator="wrk",
        requests=fields["requests"],
        errors=fields["socket_errors"] + fields["status_errors"],
        seconds=fields["duration_us"] / 1e6,
        p50_ms=fields["p50_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
    )


# -- the Python client -----------------------------------------------------------


def _processes() -> int:
    return max(1, min(os.cpu_count() or 1, 2))


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _raw_request(url: str, body: bytes, signature: str | dict[str, str]) -> bytes:
    parts = urlsplit(url)
    headers = signature if isinstance(signature, dict) else {"Stripe-Signature": signature}
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        "Content-Type: application/json\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items()) +
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(host: str, port: int, raw: bytes) -> int:
    """One request on a fresh connection; return the status code."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if length:
            await reader.readexactly(int(length.group(1)))
        else:
            await reader.read()
        return status
    finally:
        writer.close()


_FAILURES = (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
             ValueError, IndexError)


async def _send(host: str, port: int, raw: bytes, latencies: list[float]) -> bool:
    """One request; its latency is recorded if it was answered. True if the status was < 400."""
    start = time.perf_counter()
    try:
        status = await asyncio.wait_for(_exchange(host, port, raw), REQUEST_TIMEOUT)
    except _FAILURES:
        await asyncio.sleep(0.01)  # a refused connection must not spin
        return False
    latencies.append(time.perf_counter() - start)
    return status < 400


async def _timed(host: str, port: int, raw: bytes, connections: int, seconds: float):
    latencies: list[float] = []
    counts = {"errors": 0}
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        while time.perf_counter() < deadline:
            counts["errors"] += not await _send(host, port, raw, latencies)

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, counts["errors"], time.perf_counter() - start


def _timed_process(args) -> tuple[list[float], int, float]:
    return asyncio.run(_timed(*args))


async def _post_list(url: str, bodies: list[bytes], sign: Callable[[bytes], str], connections: int):
    host, port = _address(url)
    latencies: list[float] = []
    counts = {"errors": 0}
    pending = iter(bodies)

    async def connection() -> None:
        for body in pending:
            raw = _raw_request(url, body, sign(body))
            counts["errors"] += not await _send(host, port, raw, latencies)

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, counts["errors"], time.perf_counter() - start


def _result(latencies: list[float], errors: int, seconds: float) -> LoadResult:
    """Requests are the answered ones; `latencies` must be sorted."""
    return LoadResult("python", len(latencies), errors, seconds,
                      _percentile(latencies, 50) * 1000, _percentile(latencies, 99) * 1000)


def _percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
