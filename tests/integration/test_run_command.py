"""`payhooks run` with no DATABASE_URL / REDIS_URL: the README's first experience, for real."""

from __future__ import annotations

import shutil
import uuid

import psutil
import pytest
import requests

from infra.embedded import free_port
from tests.support.processes import BIN, ROOT, Process, service_env, wait_until
from tests.support.stripe_events import completed_event, encode, signed_headers
from workers.cli import DEV_API_TOKEN, DEV_WEBHOOK_SECRET


@pytest.fixture
def var_dir():
    path = ROOT / "var" / f"test-run-{uuid.uuid4().hex[:8]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_run_starts_embedded_services_and_credits_a_signed_event(var_dir):
    port = free_port()
    env = service_env({"PORT": str(port), "BEAT_SCHEDULE_FILE": str(var_dir / "beat-schedule")})
    stack = Process("run", [str(BIN / "payhooks"), "run", "--var", str(var_dir)], env).start()
    base = f"http://127.0.0.1:{port}"
    try:
        def ready():
            if stack.proc.poll() is not None:
                raise AssertionError(f"payhooks run exited:\n{stack.log()}")
            try:
                return requests.get(f"{base}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, 90, interval=0.3, what="the stack to be ready")
        assert stack.saw("starting PostgreSQL") and stack.saw("started Redis")
        wait_until(lambda: stack.saw(" ready."), 60, what="the worker to be ready")

        evt = completed_event(user_id="user_42", credits="100")
        body = encode(evt)
        answer = requests.post(f"{base}/webhooks/stripe", data=body, headers=signed_headers(body, DEV_WEBHOOK_SECRET), timeout=5)
        assert answer.json() == {"received": True, "id": evt["id"]}

        def balance():
            reply = requests.get(f"{base}/api/users/user_42/credits", headers={"Authorization": f"Bearer {DEV_API_TOKEN}"}, timeout=5)
            return reply.json()["balance"]

        wait_until(lambda: balance() == 100, 30, what="the balance to show the credits")
        # It filled in the published development secrets, so it must not listen beyond this machine.
        listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"127.0.0.1"}, listening
        assert stack.saw("listens on 127.0.0.1 only")
        descendants = psutil.Process(stack.proc.pid).children(recursive=True)
    finally:
        stack.proc.send_signal(2)  # Ctrl-C
        try:
            stack.proc.wait(30)
        finally:
            stack.kill()
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left running after Ctrl-C: {[p.name() for p in alive]}"
    # pg_ctl daemonizes PostgreSQL, so look for it by its data directory too.
    wait_until(lambda: not _processes_using(var_dir), 15, what="embedded servers to stop")


def _processes_using(path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        try:
            if str(path) in cmdline and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(cmdline)
        except psutil.NoSuchProcess:
            continue
    return found
