"""The bench modes still run: each with tiny sizes, checked for the figures it must print (not their values)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import ROOT, keep_output, service_env

SMALL = ["--web-concurrency", "1", "--worker-concurrency", "1"]
# Each mode, its tiny arguments, and lines its report must contain.
MODES = {
    "receiver": (["--seconds", "0.5", "--warmup", "0", "--rounds", "1", "--connections", "4",
                  "--light-connections", "2", "--generator", "python"],
                 ["receiver / floor = ", "at 2 connections: p50 / p99 ms", "| receiver p99 at 2 connections |"]),
    "receiver --paypal": (["--paypal", "--seconds", "0.5", "--warmup", "0", "--rounds", "1", "--connections", "4",
                           "--generator", "python"],
                          ["paypal / stripe = ", "| receiver, PayPal / Stripe deliveries (req/s) |"]),
    "steps": (["--step-iterations", "20"],
              ["steps — one signed Stripe delivery taken apart", "verify the signature", "add up to",
               "| receiver CPU per request in-process, payhooks / floor |"]),
    "deliveries": (["--events", "100", "--profile"],
                   ["deliveries — ", "worker CPU per delivery", "profile (sent one at a time",
                    "| outbound: worker CPU per webhook delivered |"]),
    "e2e": (["--events", "20", "--rounds", "1", "--post-connections", "4", "--prefill", "100", "--hot-user"],
            ["payhooks / peer = ", "payhooks worker CPU per event = ", "prefilled / empty, queue drained (full batches)",
             "hot user / spread users: events/s", "books: all ok", "| payhooks / peer |"]),
    "latency": (["--events", "20", "--post-connections", "4", "--trickle-rate", "10", "--latency-seconds", "1"],
                ["latency — POST to grant", "trickle ", "50% of capacity ", "| POST → grant at trickle"]),
    "scale": (["--events", "20", "--rounds", "1", "--scale-workers", "1,2"],
              ["scale — 20 queued events drained", "| drain, 1 → 2 worker processes (events/s) |", "2, one user"]),
    "costs": (["--events", "20", "--post-connections", "4", "--costs-seconds", "0.2"],
              ["worker CPU (Python)", "PostgreSQL commits", "Redis round trips", "model of N hosts",
               "first to saturate:", "| model: one host / first ceiling |"]),
}


@pytest.mark.slow
def test_every_bench_mode_runs_and_prints_its_figures():
    # All at once: each starts its own databases, Redis and processes on free ports.
    running = {
        mode: subprocess.Popen([sys.executable, "-m", "bench", mode.split()[0], *SMALL, *arguments], cwd=ROOT, env=service_env({}),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for mode, (arguments, _) in MODES.items()
    }
    failures = []
    try:
        for mode, process in running.items():
            stdout, stderr = process.communicate(timeout=240)
            keep_output(["bench", mode], stdout, stderr)
            missing = [line for line in MODES[mode][1] if line not in stdout]
            if process.returncode != 0 or missing:
                failures.append(f"bench {mode}: exit {process.returncode}, missing {missing}\n{stdout[-3000:]}\n"
                                f"{stderr[-3000:]}")
    finally:
        for process in running.values():
            if process.poll() is None:
                process.terminate()  # the bench stops the processes it started on SIGTERM
                process.wait(60)
    assert not failures, "\n\n".join(failures)
