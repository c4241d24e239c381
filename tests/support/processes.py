"""Real payhooks processes for tests: a Celery worker, a gunicorn receiver, ``payhooks`` commands.

Every process started here has its output kept for the canary search
(tests/support/leaks.py): start processes through ``Process`` or ``cli``.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.leaks import CAPTURE

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() is truthy; return its value or fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_worker_idle(redis_client, timeout: float = 30.0) -> None:
    """Until the workers hold nothing (no event claimed, no task queued or running), so a test's
    TRUNCATE does not meet a worker's transaction left over from the test before."""
    def idle():
        claims = sum(redis_client.llen(key) for key in redis_client.scan_iter("payhooks:claims:*"))
        return not (redis_client.llen("payhooks:events") or claims or redis_client.llen("maintenance")
                    or redis_client.hlen("unacked"))

    wait_until(idle, timeout, what="the workers idle")


class Process:
    """A child process in its own process group, its output kept for failure reports."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> Process:
        self.output = []
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        CAPTURE.add("process", f"process {self.name!r} (pid {self.proc.pid}: {' '.join(Path(a).name for a in self.argv[:4])})", self.output)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.output.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.output))

    def log(self, last: int = 60) -> str:
        return "".join(self.output[-last:])

    def signal_group(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no acknowledgements."""
        self.signal_group(signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def keep_output(args, stdout: str | None, stderr: str | None, *, shows_payload: bool = False) -> None:
    """Hand a finished command's output to the canary search.

    ``shows_payload``: the command ends its output with the raw body an operator
    asked for (``dlq show``: "raw body:" and the body); that part is its answer,
    not a log line. Everything before it, and stderr, is searched.
    """
    label = f"payhooks {' '.join(args)}"
    if shows_payload and stdout:
        head, marker, _ = stdout.partition("\nraw body:\n")
        assert marker, f"{label} printed no raw body section"
        stdout = head
    CAPTURE.add_text("command", f"{label} (stdout)", stdout)
    CAPTURE.add_text("command", f"{label} (stderr)", stderr)


def cli(env: dict[str, str], *args: str, timeout: float = 60, shows_payload: bool = False) -> subprocess.CompletedProcess:
    """Run a ``payhooks`` command to completion; its output is kept for the canary search."""
    result = subprocess.run(
        [str(BIN / "payhooks"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    keep_output(args, result.stdout, result.stderr, shows_payload=shows_payload)
    return result


def service_env(settings_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "API_TOKEN", "DATABASE_URL", "REDIS_URL"))}
    env.update(settings_env)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def celery_worker(env: dict[str, str], *, concurrency: int = 2, name: str = "worker") -> Process:
    worker = Process(
        name,
        [
            str(BIN / "celery"), "-A", "workers", "worker",
            "--queues", "webhooks,maintenance,outbound",
            "--concurrency", str(concurrency),
            "--pool", "prefork",
            "--loglevel", "INFO",
            "--without-mingle", "--without-gossip",
            "--hostname", f"{name}-{os.getpid()}@%h",
        ],
        env,
    ).start()
    try:
        wait_until(lambda: worker.saw(" ready.") or worker.proc.poll() is not None, 60, what="celery worker ready")
    except AssertionError:
        worker.kill()
        raise AssertionError(f"celery worker did not start:\n{worker.log()}") from None
    if worker.proc.poll() is not None:
        raise AssertionError(f"celery worker exited at start:\n{worker.log()}")
    return worker


def procfile_command(process: str) -> tuple[dict[str, str], list[str]]:
    """The Procfile's command for a process: its leading VAR=value assignments, and its argv."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == process:
            words = shlex.split(command)
            assignments = {}
            while words and "=" in words[0] and not words[0].startswith("-"):
                key, _, value = words.pop(0).partition("=")
                assignments[key] = value
            return assignments, words
    raise AssertionError(f"the Procfile has no {process!r} process")


def gunicorn(env: dict[str, str], port: int, workers: int = 2, process: str = "web") -> Process:
    """The receiver started exactly as the Procfile starts `process` (web or api)."""
    assignments, argv = procfile_command(process)
    if argv[0] != "gunicorn":
        raise AssertionError(f"the Procfile's {process} does not run gunicorn: {argv}")
    env = {**env, **assignments, "PORT": str(port), "WEB_CONCURRENCY": str(workers)}
    server = Process(process, [str(BIN / "gunicorn"), *argv[1:]], env).start()

    def healthy() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited at start:\n{server.log()}")
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).ok
        except requests.RequestException:
            return False

    wait_until(healthy, 30, what="gunicorn healthy")
    return server
