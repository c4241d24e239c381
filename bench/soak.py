"""The chaos soak: thousands of Stripe events through the real processes while a driver breaks them.

What runs is what the Procfile runs — the gunicorn receiver (``web``), Celery
workers (``worker``) and ``beat`` — on a fresh PostgreSQL database, a private
redis-server (AOF on) and a local fake of the Stripe API (for the line items of
Payment Link purchases).

The events come from the flow corpus (tests/support/stripe_flows.py): one-off
Checkout purchases, PaymentIntent-only payments, refunds (partial, full,
failed), disputes, Payment Links, subscriptions, in both event shapes and with
canary customer data. Each event is delivered 1–3 times, all deliveries in one
shuffled order, by senders that behave like Stripe: a 200 means accepted;
anything else (a 503, a refused connection, a timeout) is delivered again later.

Meanwhile a fault driver, at random intervals, does one of:

* ``child``    SIGKILL one Celery pool child (Celery forks a new one);
* ``worker``   SIGKILL a whole Celery worker (main process and children), start it again;
* ``web``      SIGKILL the receiver (gunicorn master and workers), start it again on its port;
* ``redis``    SIGKILL redis-server, start it again on the same port from the same AOF;
* ``postgres`` cut every PostgreSQL connection to the database (``pg_terminate_backend``).

When every delivery has been accepted the faults stop and the soak waits for the
work to settle, then checks: every accepted event applied exactly once (one
inbox row, settled), every flow's payments and users as the corpus specifies,
Σ ledger = Σ balances, at most one grant per payment, nothing dead-lettered,
parked or left on a queue. It prints the faults injected, events/s, and the time
from the last fault to the last grant.
"""

from __future__ import annotations

import collections
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil
import psycopg
import redis
import requests
from sqlalchemy.engine import make_url

from application.tracker import PaymentTracker
from application.unit import UnitOfWork
from infra.embedded import free_port
from infra.settings import Settings
from models.db import Database
from models.rules import Rules
from providers.stripe import sign
from tests.support import processes, services
from tests.support.canaries import API_TOKEN, STRIPE_API_KEY, WEBHOOK_SECRET
from tests.support.fake_stripe import FakeStripe
from tests.support.processes import BIN, Process, wait_until
from tests.support.stripe_events import SHAPES, encode
from tests.support.stripe_flows import Flow, build, config_file, serve
from transport import queue

FAULTS = ("child", "worker", "web", "redis", "postgres")

# How often each flow is drawn: mostly plain purchases, then PaymentIntents and refunds.
# Flows needing FRAUD_POLICY=freeze are left out (one policy per run).
MIX = {
    "checkout_paid": 12,
    "payment_intent_only": 4,
    "partial_refunds_then_full": 4,
    "session_intent_first": 2,
    "payment_link": 2,
    "refund_fails": 2,
    "async_paid": 1,
    "async_failed": 1,
    "expired": 1,
    "failed_then_paid": 1,
    "dispute_won": 1,
    "dispute_lost": 1,
    "dispute_open": 1,
    "subscription_renewals": 1,
    "subscription_refunded": 1,
    "subscription_checkout_sepa": 1,
    "tax_discount_full_refund": 1,
    "tax_discount_half_refund": 1,
    "trial_then_paid": 1,
    "trial_granted_by_plan": 1,
    "payment_intent_requires_action": 1,
    "refund_fails_partial": 1,
    "refund_canceled": 1,
    "fraud_warning": 1,
    "expired_and_canceled_same_second": 1,
}


@dataclass
class SoakOptions:
    events: int = 10_000
    seed: int = 1
    senders: int = 8
    workers: int = 2  # Celery worker instances (Procfile `worker`, scaled)
    concurrency: int = 1  # each one's prefork children
    web_concurrency: int = 2
    fault_interval: tuple[float, float] = (2.0, 6.0)  # seconds between faults, uniformly drawn
    max_faults: int = 0  # stop after this many (0: fault until every delivery is accepted)
    down_for: tuple[float, float] = (0.2, 2.0)  # how long a killed process stays down
    # Deliveries/s for all senders together (0: as fast as the receiver answers). Paced so that
    # sending, and so the faults, span the processing rather than finish before it.
    rate: float = 200.0
    settle_timeout: float = 600.0  # give up when nothing settled for this long after the faults stop
    send_timeout: float = 3600.0  # give up sending (and fail) if not every delivery is accepted by then
    env: dict[str, str] = field(default_factory=dict)  # extra settings for every process
    log: bool = True


@dataclass
class SoakReport:
    options: SoakOptions
    flows: int
    events: int
    deliveries: int
    posts: int  # POSTs made, retries included
    answers: collections.Counter  # status code (or "error") -> count
    faults: collections.Counter
    seconds_sending: float
    seconds_total: float  # first POST to the last event settled
    last_fault_to_last_grant: float | None
    last_fault_to_settled: float  # to the last event's processed_at
    last_fault_to_drained: float  # to when the soak saw every event settled and every queue empty (polled)
    checks: dict[str, tuple[object, object]]  # name -> (found, expected)
    problems: list[str]
    exits: collections.Counter = field(default_factory=collections.Counter)  # processes that exited on their own
    exit_reasons: list[str] = field(default_factory=list)
    # Per flow: from the first 200 of its last event to its last event applied (seconds), sorted
    flow_latencies: list[float] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)  # (wait, flow name and tag) of the slowest

    @property
    def ok(self) -> bool:
        return not self.problems and all(found == expected for found, expected in self.checks.values())

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds_total if self.seconds_total else 0.0


# -- the workload ----------------------------------------------------------------------


def make_flows(count: int, rng: random.Random) -> list[Flow]:
    """Flows drawn from MIX until they hold at least `count` events."""
    names, weights = zip(*MIX.items(), strict=True)
    flows, total = [], 0
    while total < count:
        flow = build(rng.choices(names, weights)[0], rng.choice(SHAPES))
        flows.append(flow)
        total += len(flow.events)
    return flows




# -- the processes ---------------------------------------------------------------------


class Stack:
    """The Procfile's processes on one machine, the means to break each, and a supervisor.

    The supervisor restarts a worker or receiver that exited on its own, as a
    process manager does (Heroku, systemd, compose's ``restart: unless-stopped``),
    and counts it: such an exit is a finding of the soak, not a fault it injected.
    """

    def __init__(self, options: SoakOptions, services_, env: dict[str, str], workdir: Path) -> None:
        self.options = options
        self.services = services_
        self.env = env
        self.workdir = workdir
        self.port = free_port()
        self.web: Process | None = None
        self.workers: list[Process | None] = [None] * options.workers
        self.beat: Process | None = None
        self.lock = threading.Lock()
        self.restarting: set[str] = set()  # components a fault or the supervisor is restarting
        self.exits: collections.Counter = collections.Counter()  # component -> exits on its own
        self.exit_reasons: list[str] = []
        self.stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/stripe"

    def start(self) -> None:
        starting = [threading.Thread(target=self.start_worker, args=(index,)) for index in range(self.options.workers)]
        for thread in starting:  # side by side: each waits seconds for its imports on a busy machine
            thread.start()
        self.start_web()
        for thread in starting:
            thread.join()
        if any(worker is None or worker.proc.poll() is not None for worker in self.workers):
            raise RuntimeError("a Celery worker did not start")
        self.beat = Process("beat", [str(BIN / "celery"), "-A", "workers", "beat", "--loglevel", "INFO",
                                     "--schedule", str(self.workdir / "celerybeat-schedule")], self.env).start()
        self._supervisor.start()

    def start_worker(self, index: int) -> None:
        """The Procfile's worker command as it is (mingle and gossip on), named apart from its peers on this host."""
        assignments, argv = processes.procfile_command("worker")
        env = {**self.env, **assignments, "WORKER_CONCURRENCY": str(self.options.concurrency)}
        argv = [_expand(word, env) for word in argv]
        argv = [str(BIN / argv[0]), *argv[1:], "--hostname", f"soak-worker-{index}@%h"]
        worker = Process(f"soak-worker-{index}", argv, env).start()
        self.workers[index] = worker
        wait_until(lambda: worker.saw(" ready.") or worker.proc.poll() is not None, 60, what="celery worker ready")

    def start_web(self) -> None:
        self.web = processes.gunicorn(self.env, self.port, workers=self.options.web_concurrency)

    def _components(self):
        yield "web", self.web, self.start_web
        for index, worker in enumerate(self.workers):
            yield f"worker-{index}", worker, lambda index=index: self.start_worker(index)

    def _supervise(self) -> None:
        while not self.stopping.wait(0.5):
            for name, process, restart in list(self._components()):
                with self.lock:
                    if name in self.restarting or process is None or process.proc.poll() is None:
                        continue
                    self.restarting.add(name)
                try:
                    self.exits[name] += 1
                    self.exit_reasons.append(f"{name} exited ({process.proc.returncode}): {_last_error(process)}")
                    restart()
                except Exception as exc:
                    self.exit_reasons.append(f"{name} could not be restarted: {exc.__class__.__name__}")
                finally:
                    with self.lock:
                        self.restarting.discard(name)

    def _claim(self, name: str) -> bool:
        with self.lock:
            if name in self.restarting:
                return False
            self.restarting.add(name)
            return True

    def _release(self, name: str) -> None:
        with self.lock:
            self.restarting.discard(name)

    def stop(self) -> None:
        self.stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(30)
        if self.web is not None and self.web.proc.poll() is None:
            self.web.signal_group(signal.SIGINT)  # gunicorn's quick shutdown: no wait on idle keep-alive connections
            try:
                self.web.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.web.kill()
        for process in [self.beat, *self.workers]:
            if process is not None:
                process.stop(timeout=15)

    def outputs(self) -> list[Process]:
        return [p for p in [self.web, self.beat, *self.workers] if p is not None]

    # the faults

    def inject(self, kind: str, rng: random.Random) -> bool:
        """Inject one fault (and restart what it killed); False if there was nothing to break just now."""
        down = rng.uniform(*self.options.down_for)
        if kind == "child":
            running = [w for w in self.workers if w is not None and w.proc.poll() is None]
            children = [child for w in running for child in psutil.Process(w.proc.pid).children()]
            if not children:
                return False
            rng.choice(children).send_signal(signal.SIGKILL)
        elif kind == "worker":
            free = [i for i in range(len(self.workers)) if self._claim(f"worker-{i}")]
            if not free:
                return False
            index = rng.choice(free)
            for other in free:
                if other != index:
                    self._release(f"worker-{other}")
            try:
                self.workers[index].kill()
                time.sleep(down)
                self.start_worker(index)
            finally:
                self._release(f"worker-{index}")
        elif kind == "web":
            if not self._claim("web"):
                return False
            try:
                self.web.kill()
                time.sleep(down)
                self.start_web()
            finally:
                self._release("web")
        elif kind == "redis":
            server = self.services.redis
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
            time.sleep(down)
            server.start()  # same port, same directory, same append-only file
        elif kind == "postgres":
            with psycopg.connect(dsn(self.services.database_url), autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        else:
            raise ValueError(kind)
        return True


def _last_error(process: Process) -> str:
    """The message of the last CRITICAL or ERROR line a process logged (its first line only: no traceback)."""
    for line in reversed(list(process.output)):
        if '"level":"CRITICAL"' in line or '"level":"ERROR"' in line:
            start = line.find('"message":"')
            return line[start + 11:].split('"', 1)[0][:200] if start >= 0 else line[:200]
    return "no error logged"


def _expand(word: str, env: dict[str, str]) -> str:
    """A Procfile word with its ``${NAME:-default}`` filled in, as the shell would."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), word)


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# -- the senders and the driver ----------------------------------------------------------


class Senders:
    """Deliver every body until it is answered 200, as Stripe does (retrying later otherwise)."""

    def __init__(self, stack: Stack, deliveries: list[bytes], options: SoakOptions, rng: random.Random,
                 event_of: dict[bytes, str]) -> None:
        self.stack = stack
        self.event_of = event_of
        self.accepted_at: dict[str, float] = {}  # event id -> wall clock of its first 200
        self.pending: collections.deque[bytes] = collections.deque(deliveries)
        self.retry_at: list[tuple[float, bytes]] = []
        self.options = options
        self.rng = random.Random(rng.random())
        self.lock = threading.Lock()
        self.answers: collections.Counter = collections.Counter()
        self.posts = 0
        self.accepted = 0
        self.rejected = 0  # answered 4xx: never expected of a correctly signed event
        self.total = len(deliveries)
        self.done = threading.Event()
        self.finished_at = 0.0  # wall clock, when the last delivery was accepted
        self.started = time.monotonic()
        self.timed_out = False
        self._next_slot = time.monotonic()

    def _take(self) -> bytes | None:
        with self.lock:
            now = time.monotonic()
            due = [item for item in self.retry_at if item[0] <= now]
            if due:
                item = min(due, key=lambda pair: pair[0])
                self.retry_at.remove(item)
                body = item[1]
            elif self.pending:
                body = self.pending.popleft()
            else:
                return None
            if self.options.rate:
                self._next_slot = max(self._next_slot + 1 / self.options.rate, now)
                wait = self._next_slot - now
            else:
                wait = 0.0
        if wait > 0:
            time.sleep(wait)
        return body

    def _later(self, body: bytes) -> None:
        with self.lock:
            self.retry_at.append((time.monotonic() + self.rng.uniform(0.2, 1.5), body))

    def run_one(self) -> None:
        session = requests.Session()
        give_up_at = self.started + self.options.send_timeout
        while not self.done.is_set():
            if time.monotonic() > give_up_at:
                self.timed_out = True
                self.done.set()
                break
            body = self._take()
            if body is None:
                with self.lock:
                    if self.accepted + self.rejected == self.total:
                        self.finished_at = self.finished_at or time.time()
                        self.done.set()
                        return
                time.sleep(0.05)
                continue
            headers = {"Stripe-Signature": sign(body, WEBHOOK_SECRET, int(time.time())),
                       "Content-Type": "application/json"}
            try:
                status = session.post(self.stack.url, data=body, headers=headers, timeout=10).status_code
            except requests.RequestException:
                status = "error"
                session = requests.Session()
            with self.lock:
                self.posts += 1
                self.answers[status] += 1
                if status == 200:
                    self.accepted += 1
                    self.accepted_at.setdefault(self.event_of[body], time.time())
            if status != 200:
                if status not in (503, "error") and status < 500:  # a verdict, not a failure to retry: a bug here
                    with self.lock:
                        self.rejected += 1
                    continue
                self._later(body)
        session.close()

    def run(self) -> None:
        threads = [threading.Thread(target=self.run_one, daemon=True) for _ in range(self.options.senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


class Driver:
    """Faults at random intervals while the senders run; every kind at least once.

    Each fault runs on a thread of its own (kill, stay down, restart), so faults
    overlap: Redis may go while a worker is starting, the database's connections
    be cut while the receiver is down. Only one fault of a kind runs at a time.
    """

    def __init__(self, stack: Stack, senders: Senders, options: SoakOptions, rng: random.Random, say) -> None:
        self.stack, self.senders, self.options, self.say = stack, senders, options, say
        self.rng = random.Random(rng.random())
        self.counts: collections.Counter = collections.Counter()
        self.last_fault_at = 0.0  # wall clock, when the last fault's process or server was back
        self.errors: list[str] = []
        self.busy: set[str] = set()
        self.lock = threading.Lock()

    def run(self) -> None:
        first_round = list(FAULTS)
        self.rng.shuffle(first_round)
        threads = []
        started = 0
        while first_round or not self.senders.done.is_set():
            if self.options.max_faults and started >= self.options.max_faults:
                break
            if self.senders.done.wait(self.rng.uniform(*self.options.fault_interval)) and not first_round:
                break
            with self.lock:
                free = [kind for kind in (first_round or FAULTS) if kind not in self.busy]
                if not free:
                    continue
                kind = free[0] if first_round else self.rng.choice(free)
                if first_round:
                    first_round.remove(kind)
                self.busy.add(kind)
            thread = threading.Thread(target=self._fault, args=(kind, random.Random(self.rng.random())), daemon=True)
            thread.start()
            threads.append(thread)
            started += 1
        for thread in threads:
            thread.join()

    def _fault(self, kind: str, rng: random.Random) -> None:
        started = time.monotonic()
        try:
            if not self.stack.inject(kind, rng):
                return
        except Exception as exc:  # a fault that could not be injected (or restarted) is a result too
            self.errors.append(f"{kind}: {exc.__class__.__name__}: {exc}")
            self.say(f"  fault {kind} failed: {exc.__class__.__name__}: {exc}")
            return
        finally:
            with self.lock:
                self.busy.discard(kind)
        with self.lock:
            self.counts[kind] += 1
            self.last_fault_at = max(self.last_fault_at, time.time())
            number = sum(self.counts.values())
        self.say(f"  fault {number:>3}: {kind:<8} (back after {time.monotonic() - started:.1f} s); "
                 f"{self.senders.accepted:,}/{self.senders.total:,} deliveries accepted")


# -- the checks ----------------------------------------------------------------------------


def settled_count(conn: psycopg.Connection, ids: list[str]) -> int:
    return conn.execute(
        "SELECT count(*) FROM webhook_events WHERE provider_event_id = ANY(%s) AND status IN ('processed', 'ignored')",
        (ids,),
    ).fetchone()[0]


def wait_settled(url: str, redis_url: str, ids: list[str], timeout: float, say) -> bool:
    """Poll until every event is settled and nothing is left on a queue or a claims list (the
    duplicates a killed consumer held come back when a peer sees it dead); give up after
    `timeout` seconds without progress."""
    last, progressed = None, time.monotonic()
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    while True:
        try:
            with psycopg.connect(dsn(url), autocommit=True, connect_timeout=5) as conn:
                done = settled_count(conn, ids)
            left = queue.depth(client) + queue.claimed(client) + queue.parked(client)
        except (psycopg.OperationalError, redis.RedisError):
            done, left = last or (0, -1)
        if done == len(ids) and left == 0:
            return True
        if (done, left) != last:
            last, progressed = (done, left), time.monotonic()
        if time.monotonic() - progressed > timeout:
            say(f"  gave up: {done:,}/{len(ids):,} settled, {left} items on queues, no progress for {timeout:.0f} s")
            return False
        time.sleep(0.25)


def celery_answers(redis_url: str, workers: int) -> int:
    """How many Celery workers answer a ping: their consumers still read the broker after the faults."""
    from celery import Celery

    app = Celery("soak-probe", broker=redis_url)
    try:
        for _ in range(10):
            replies = app.control.ping(timeout=2.0)
            if len(replies) >= workers:
                break
        return len(replies)
    finally:
        app.close()


def check(url: str, redis_url: str, flows: list[Flow]) -> tuple[dict, float | None, float]:
    """(checks, time of the last grant, time the last event settled) — the times as Unix seconds."""
    ids = [evt["id"] for flow in flows for evt in flow.events]
    expected_users: dict[str, tuple[int, int, int]] = {}
    expected_payments: dict[str, tuple[str, frozenset[str], int, int]] = {}
    for flow in flows:
        for user, outcome in flow.users.items():
            expected_users[user] = (outcome.balance, outcome.purchased, outcome.taken_back)
        for outcome in flow.payments:
            for key in (outcome.key, *outcome.also_known_as):
                expected_payments[key] = (outcome.user_id, outcome.statuses, outcome.granted, outcome.taken_back)
    with psycopg.connect(dsn(url), autocommit=True) as conn:
        one = lambda sql, *args: conn.execute(sql, args).fetchone()[0]  # noqa: E731
        rows = conn.execute(
            "SELECT status, count(*) FROM webhook_events WHERE provider_event_id = ANY(%s) GROUP BY status", (ids,)
        ).fetchall()
        by_status = dict(rows)
        users = {u: (b, p, r) for u, b, p, r in conn.execute(
            "SELECT user_id, balance, total_purchased, total_refunded FROM credit_accounts").fetchall()}
        payments = conn.execute(
            "SELECT provider_session_id, provider_payment_id, user_id, status, credits_granted, credits_taken_back "
            "FROM payments").fetchall()
        wrong_users = sum(users.get(user, (0, 0, 0)) != want for user, want in expected_users.items())
        found_payments: dict[str, tuple] = {}
        for session_id, payment_id, user, status, granted, taken_back in payments:
            for key in (session_id, payment_id):
                if key:
                    found_payments[key] = (user, status, granted, taken_back)
        wrong_payments = 0
        for key, (user, statuses, granted, taken_back) in expected_payments.items():
            got = found_payments.get(key)
            if got is None or got[0] != user or got[1] not in statuses or got[2:] != (granted, taken_back):
                wrong_payments += 1
        redis_client = redis.Redis.from_url(redis_url)
        checks = {
            "events settled (processed or ignored)": (
                by_status.get("processed", 0) + by_status.get("ignored", 0), len(set(ids))),
            "events held, failed or unsettled": (
                sum(n for s, n in by_status.items() if s not in ("processed", "ignored")), 0),
            "inbox rows per event (max)": (one(
                "SELECT coalesce(max(n), 1) FROM (SELECT count(*) AS n FROM webhook_events "
                "GROUP BY provider, provider_event_id) AS per_event"), 1),
            "users whose balance/purchased/taken back differ from their flows": (wrong_users, 0),
            "payments whose user/status/credits differ from their flows": (wrong_payments, 0),
            "Σ ledger − Σ balances": (one("SELECT coalesce(sum(amount), 0) FROM credit_ledger")
                                      - one("SELECT coalesce(sum(balance), 0) FROM credit_accounts"), 0),
            "payments granted more than once": (one(
                "SELECT count(*) FROM (SELECT payment_id FROM credit_ledger WHERE kind = 'grant' "
                "GROUP BY payment_id HAVING count(*) > 1) AS doubled"), 0),
            "dead letters": (one("SELECT count(*) FROM dead_letters"), 0),
            "parked, queued or claimed items": (
                queue.parked(redis_client) + queue.depth(redis_client) + queue.claimed(redis_client), 0),
        }
        last_grant = one("SELECT extract(epoch FROM max(created_at))::float FROM credit_ledger WHERE kind = 'grant'")
        last_settled = one("SELECT extract(epoch FROM max(processed_at))::float FROM webhook_events")
    return checks, last_grant, last_settled or 0.0


# -- the run --------------------------------------------------------------------------------


def run(options: SoakOptions, stack_services=None) -> SoakReport:
    say = (lambda line: print(line, flush=True)) if options.log else (lambda line: None)
    rng = random.Random(options.seed)
    flows = make_flows(options.events, rng)
    events = [evt for flow in flows for evt in flow.events]
    deliveries = [encode(evt) for evt in events for _ in range(rng.randint(1, 3))]
    event_of = {body: orjson.loads(body)["id"] for body in set(deliveries)}
    rng.shuffle(deliveries)
    say(f"soak: {len(flows):,} flows, {len(events):,} events, {len(deliveries):,} deliveries; "
        f"{options.workers} worker(s) × {options.concurrency}, WEB_CONCURRENCY={options.web_concurrency}, "
        f"{options.senders} senders, a fault every {options.fault_interval[0]:g}–{options.fault_interval[1]:g} s")
    setup_started = time.monotonic()
    own_services = stack_services is None
    started_services = services.start() if own_services else stack_services
    workdir = Path(started_services.redis.directory)
    stack = None
    try:
        with FakeStripe() as fake:
            for flow in flows:
                serve(flow, fake)
            record_payments(started_services.database_url, flows)
            env = processes.service_env({
                "DATABASE_URL": started_services.database_url,
                "REDIS_URL": started_services.redis_url,
                "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "API_TOKEN": API_TOKEN,
                "STRIPE_API_KEY": STRIPE_API_KEY,
                "STRIPE_API_BASE": fake.url,
                "PAYHOOKS_CONFIG": str(config_file(flows, workdir / "soak-config.yaml")),
                **options.env,
            })
            stack = Stack(options, started_services, env, workdir)
            stack.start()
            say(f"  processes up {time.monotonic() - setup_started:.1f} s after the start")
            senders = Senders(stack, deliveries, options, rng, event_of)
            driver = Driver(stack, senders, options, rng, say)
            started = time.time()
            sending = threading.Thread(target=senders.run, daemon=True)
            sending.start()
            driver.run()
            sending.join()
            sent_at = senders.finished_at or time.time()
            say(f"  all {len(deliveries):,} deliveries accepted in {sent_at - started:.1f} s "
                f"({senders.posts:,} POSTs: {dict(senders.answers)}); faults stopped; waiting for the work to settle")
            ids = [evt["id"] for evt in events]
            settled = wait_settled(started_services.database_url, started_services.redis_url, ids,
                                   options.settle_timeout, say)
            emptied_at = time.time()
            checks, last_grant, last_settled = check(started_services.database_url, started_services.redis_url, flows)
            named = flow_latencies(started_services.database_url, flows, senders.accepted_at)
            latencies = [wait for wait, _ in named]
            checks["flows applied > 60 s after their last event was accepted (DESIGN.md invariant 7)"] = (
                sum(wait > 60 for wait in latencies), 0)
            checks["Celery workers answering a ping after the faults"] = (
                celery_answers(started_services.redis_url, options.workers), options.workers)
            problems = list(driver.errors)
            if senders.timed_out:
                problems.append(f"not every delivery was accepted within {options.send_timeout:.0f} s")
            if senders.rejected:
                problems.append(f"{senders.rejected} deliveries were answered 4xx")
            if not settled:
                problems.append("not every event settled")
            for process in stack.outputs():
                if process.saw("consumer thread crashed"):
                    problems.append(f"{process.name}: a consumer thread crashed")
            for reason in stack.exit_reasons:
                say(f"  exited on its own (restarted by the soak's supervisor): {reason}")
            last_fault = driver.last_fault_at or started
            return SoakReport(
                options=options, flows=len(flows), events=len(events), deliveries=len(deliveries),
                posts=senders.posts, answers=senders.answers, faults=driver.counts,
                seconds_sending=sent_at - started, seconds_total=max(last_settled, sent_at) - started,
                last_fault_to_last_grant=(last_grant - last_fault) if last_grant else None,
                last_fault_to_settled=max(0.0, last_settled - last_fault),
                last_fault_to_drained=max(0.0, emptied_at - last_fault), checks=checks, problems=problems,
                exits=stack.exits, exit_reasons=list(stack.exit_reasons), flow_latencies=latencies, slowest=named[-3:][::-1],
            )
    finally:
        if stack is not None:
            stack.stop()
        if own_services:
            started_services.close()


def flow_latencies(url: str, flows: list[Flow], accepted_at: dict[str, float]) -> list[tuple[float, str]]:
    """How long each flow waited under the faults: from when its last event was first accepted
    to when its last event was applied (held events count from their release, lookups included)."""
    ids = [evt["id"] for flow in flows for evt in flow.events]
    with psycopg.connect(dsn(url), autocommit=True) as conn:
        applied = dict(conn.execute(
            "SELECT provider_event_id, extract(epoch FROM processed_at)::float FROM webhook_events "
            "WHERE provider_event_id = ANY(%s) AND processed_at IS NOT NULL", (ids,)).fetchall())
    waits = []
    for flow in flows:
        events = [evt["id"] for evt in flow.events]
        if all(e in accepted_at and e in applied for e in events):
            wait = max(0.0, max(applied[e] for e in events) - max(accepted_at[e] for e in events))
            waits.append((wait, f"{flow.name} ({flow.shape}, {events[0].split('_')[1]})"))
    return sorted(waits)


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def record_payments(database_url: str, flows: list[Flow]) -> None:
    """Payments the host application records before checkout, as `POST /api/payments` does."""
    recorded = [payment for flow in flows for payment in flow.config.recorded]
    if not recorded:
        return
    database = Database(database_url)
    try:
        tracker = PaymentTracker(UnitOfWork(database, Rules()), Settings())
        for payment in recorded:
            tracker.create_pending_payment(user_id=payment.user_id, amount_cents=payment.amount_cents,
                                           currency=payment.currency, credits=payment.credits,
                                           session_id=payment.session_id)
    finally:
        database.dispose()


def print_report(report: SoakReport) -> None:
    faults = ", ".join(f"{kind} {report.faults.get(kind, 0)}" for kind in FAULTS)
    print(f"\nchaos soak — {report.events:,} events in {report.flows:,} flows, {report.deliveries:,} deliveries "
          f"({report.posts:,} POSTs; answers {dict(report.answers)})")
    print(f"  faults injected              {sum(report.faults.values())}: {faults}")
    exits = ", ".join(f"{name} {count}" for name, count in sorted(report.exits.items())) or "none"
    print(f"  exited on their own          {exits}   (restarted, as a process manager would)")
    for reason in report.exit_reasons:
        print(f"    {reason}")
    print(f"  sending (all accepted)       {report.seconds_sending:8.1f} s")
    print(f"  end to end                   {report.events_per_second:8.1f} events/s "
          f"({report.events:,} settled {report.seconds_total:.1f} s after the first POST)")
    waits = report.flow_latencies
    print(f"  accepted → applied, per flow p50 {_quantile(waits, 0.5):.1f} s, p99 {_quantile(waits, 0.99):.1f} s, "
          f"max {waits[-1] if waits else float('nan'):.1f} s; over 60 s: {sum(w > 60 for w in waits)} of {len(waits):,}")
    for wait, name in report.slowest:
        print(f"    slowest: {wait:5.1f} s  {name}")
    grant = report.last_fault_to_last_grant
    print(f"  last fault → last grant      {grant:8.1f} s" + ("   (negative: the last grant came first)"
                                                            if grant is not None and grant < 0 else "")
          if grant is not None else "  last fault → last grant           n/a (no grant)")
    print(f"  last fault → last settled    {report.last_fault_to_settled:8.1f} s")
    print(f"  last fault → queues empty    {report.last_fault_to_drained:8.1f} s   (polled every 0.25 s)")
    for name, (found, expected) in report.checks.items():
        mark = "ok" if found == expected else "FAILED"
        print(f"  {name:<66} {found!s:>8}  expected {expected!s:<6} {mark}")
    for problem in report.problems:
        print(f"  PROBLEM: {problem}")
    print(f"  result: {'ok' if report.ok else 'FAILED'}")
