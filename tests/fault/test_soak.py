"""The chaos soak, short: a few hundred events through the Procfile's processes while each kind of fault strikes.

``make soak`` runs the same code (bench/soak.py) with 10,000 events and faults
for minutes; this is its CI-sized run: every fault kind at least once (a pool
child and a whole worker SIGKILLed, the receiver SIGKILLed and restarted,
redis-server SIGKILLed and restarted from its AOF, PostgreSQL connections cut),
then every accepted event applied exactly once, the books balanced, every flow
ending as the corpus specifies, nothing dead-lettered or left on a queue.
"""

from __future__ import annotations

from bench import soak


def test_a_short_chaos_soak_loses_and_doubles_nothing():
    options = soak.SoakOptions(
        events=600,
        seed=9,
        workers=1,
        concurrency=2,
        rate=200.0,
        fault_interval=(0.8, 1.6),
        max_faults=len(soak.FAULTS),  # one of each kind, overlapping: the CI budget allows no more
        down_for=(0.1, 0.3),
        settle_timeout=40.0,
        send_timeout=120.0,  # fail, not hang, on a machine too loaded to run it
        env={
            "CONSUMER_HEARTBEAT_SECONDS": "0.5",
            "CONSUMER_DEAD_AFTER_SECONDS": "3",
            "CONSUMER_RETRY_MAX_SECONDS": "1",
            "BROKER_VISIBILITY_TIMEOUT": "6",
            "RETRY_BACKOFF_BASE_SECONDS": "0.2",
            "RETRY_BACKOFF_MAX_SECONDS": "2",
            "HELD_RETRY_INTERVAL_SECONDS": "5",
        },
    )
    report = soak.run(options)
    soak.print_report(report)

    assert set(report.faults) == set(soak.FAULTS), f"not every kind of fault was injected: {dict(report.faults)}"
    failed = {name: value for name, value in report.checks.items() if value[0] != value[1]}
    assert not failed and not report.problems, f"{failed} {report.problems}"
