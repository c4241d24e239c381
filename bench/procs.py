"""Child processes for the benchmarks: registered for cleanup before anything can fail.

Each runs in its own process group (tests.support.processes.Process), so stopping
one stops gunicorn's or Celery's children with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator

from tests.support.processes import BIN, Process, service_env, wait_until

SECRET = "whsec_payhooks_bench"
API_TOKEN = "bench-token-0123456789abcdef01234567"

__all__ = ["BIN", "SECRET", "API_TOKEN", "Group", "cpu_seconds", "group", "service_env"]


class Group:
    """The processes a benchmark started; `stop()` ends them all, newest first."""

    def __init__(self) -> None:
        self.processes: list[Process] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        process = Process(name, argv, env)
        self.processes.append(process)
        return process.start()

    def http_server(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Process:
        """Start a server and wait until GET /healthz on 127.0.0.1:port answers 200."""
        process = self.start(name, argv, env)
        wait_until(lambda: _healthy(process, port), 30, 0.1, f"{name} healthy on port {port}")
        return process

    def celery_worker(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        return self.wait_ready(self.start(name, argv, env))

    @staticmethod
    def wait_ready(process: Process, timeout: float = 120.0) -> Process:
        """Wait until a Celery worker logs that it is ready."""
        try:
            wait_until(lambda: process.saw(" ready.") or _exited(process), timeout, 0.1, f"{process.name} ready")
        except AssertionError as exc:
            raise RuntimeError(f"{exc}; its last lines:\n{process.log(30)}") from None
        return process

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to all at once (newest first), then wait; SIGKILL whatever is left at the deadline."""
        processes, self.processes = self.processes[::-1], []
        for process in processes:
            process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            if process.proc is None:
                continue
            try:
                process.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def group() -> Iterator[Group]:
    started = Group()
    try:
        yield started
    finally:
        started.stop()


def _exited(process: Process) -> bool:
    if process.proc.poll() is not None:
        raise RuntimeError(f"{process.name} exited at start:\n{process.log()}")
    return False


def _healthy(process: Process, port: int) -> bool:
    _exited(process)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as answer:
            return answer.status == 200
    except OSError:
        return False


def cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in a process group (Linux /proc)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
