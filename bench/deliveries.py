"""What delivering one outbound webhook costs a worker: CPU per delivery, in one process.

A throwaway database (tests/support/services.py) with one enabled endpoint, a
local sink in a child process (tests/support/endpoint.py: answers 200 and
closes the connection, as HTTP/1.0 servers do) and ``--events`` outbox
messages, fanned out by ``Outbound.dispatch``. The deliveries are then sent
the way the ``outbound`` queue's task sends them, ``Outbound.deliver_many`` in
chunks of 20 with ten requests side by side, and the process's CPU time
(every thread) over the first half is divided by its deliveries. With
``--profile`` the second half is sent one at a time on the calling thread
under cProfile, and the functions with the most cumulative time are printed
(wall time, waits included: ``recv`` is mostly the sink's turn).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import subprocess
import time
from dataclasses import dataclass

from bench.procs import BIN, service_env

CHUNK = 20


@dataclass
class DeliveriesReport:
    deliveries: int
    cpu_ms: float
    rate: float
    profile: str = ""


def run(args) -> DeliveriesReport:
    from cryptography.fernet import Fernet
    from sqlalchemy import text

    from application.endpoints import Endpoints
    from application.outbound import Outbound
    from infra.settings import Settings
    from models.db import Database
    from tests.support import services

    print(f"deliveries: {args.events:,} webhooks to one local endpoint, chunks of {CHUNK}", flush=True)
    stack = services.start()
    sink = subprocess.Popen(
        [str(BIN / "python"), "-c", "import time; from tests.support.endpoint import Endpoint; e = Endpoint(); "
         "e.__enter__(); print(e.url, flush=True); time.sleep(3600)"],
        stdout=subprocess.PIPE, text=True, env=service_env({}),
    )
    try:
        url = sink.stdout.readline().strip()
        settings = Settings.from_env({"DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url,
                                      "OUTBOUND_SECRET_KEY": Fernet.generate_key().decode()})
        database = Database(settings.database_url)
        Endpoints(database, settings).add(url, ["*"])
        with database.transaction() as session:
            session.execute(text(
                "INSERT INTO outbox_messages (message_id, type, user_id, data) "
                "SELECT 'bench_' || g, 'credits.granted', 'u' || g, "
                "jsonb_build_object('payment_id', g, 'credits', 100, 'balance', 100) FROM generate_series(1, :n) g"
            ), {"n": args.events})
        outbound = Outbound(database, settings)
        ids: list[int] = []
        while created := outbound.dispatch():
            ids += created
        chunks = [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)]
        warm = max(1, len(chunks) // 20)
        middle = max(warm + 1, len(chunks) // 2)
        warm, timed, profiled = chunks[:warm], chunks[warm:middle], chunks[middle:]
        for chunk in warm:
            outbound.deliver_many(chunk)
        cpu, wall = time.process_time(), time.perf_counter()
        for chunk in timed:
            outbound.deliver_many(chunk)
        sent = sum(map(len, timed))
        report = DeliveriesReport(sent, (time.process_time() - cpu) / sent * 1000, sent / (time.perf_counter() - wall))
        if args.profile:
            report.profile = _profile(outbound, profiled)
        database.dispose()
        return report
    finally:
        sink.kill()
        stack.close()


def _profile(outbound, chunks: list[list[int]]) -> str:
    class OnThisThread:
        def map(self, fn, items):
            return map(fn, items)

    outbound._Outbound__pool = OnThisThread()  # cProfile sees the calling thread only
    profiler = cProfile.Profile()
    profiler.enable()
    for chunk in chunks:
        outbound.deliver_many(chunk)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
    return out.getvalue()


def print_report(report: DeliveriesReport) -> None:
    print(f"\ndeliveries — {report.deliveries:,} webhooks delivered, chunks of {CHUNK}, ten side by side")
    print(f"  worker CPU per delivery  {report.cpu_ms:.2f} ms   ({report.rate:,.0f} deliveries/s from one process)")
    if report.profile:
        print("\n  profile (sent one at a time on the calling thread; cumulative seconds):")
        print(report.profile)


def summary(report: DeliveriesReport) -> list[tuple[str, str, str]]:
    return [("outbound: worker CPU per webhook delivered", f"{report.cpu_ms:.2f} ms", "")]
