"""Shared fixtures: real services for the run, settings pointing at them, clean state per test."""

from __future__ import annotations

import base64
import os

import pytest
import redis
import sentry_sdk
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import text

from infra.sentry import init_sentry
from infra.settings import CreditPackage, Settings
from models.db import Database
from models.tables import Base
from receiver import create_app
from tests.support import canaries, leaks, processes, services
from tests.support.fake_paypal import FakePayPal
from tests.support.fake_stripe import FakeStripe

STARTER = CreditPackage("starter", "Starter", 100, 999, "usd")
# Canary secrets: the search for leaks (tests/support/leaks.py) looks for them everywhere.
PRIMARY_SECRET = canaries.WEBHOOK_SECRET
ROTATED_SECRET = canaries.ROTATED_WEBHOOK_SECRET
API_TOKEN = canaries.API_TOKEN
STRIPE_API_KEY = canaries.STRIPE_API_KEY
# A Fernet key (32 bytes, url-safe base64) for endpoint secrets at rest.
OUTBOUND_SECRET_KEY = base64.urlsafe_b64encode(b"payhooks-tests-outbound-key-32b!").decode()

# Every table the models define, so a new table is cleaned without anyone remembering to.
TABLES = tuple(Base.metadata.tables)


_USED: list[str] = []


@pytest.fixture(scope="session")
def test_services():
    started = services.start()
    _USED.append(f"PostgreSQL: {started.postgres_origin}; Redis: private redis-server on {started.redis_url}")
    yield started
    started.close()


def pytest_report_header(config):
    return "payhooks tests use real PostgreSQL and Redis (see tests/support/services.py)"


def pytest_terminal_summary(terminalreporter):
    for line in _USED:
        terminalreporter.write_line(f"services used — {line}")
    for line in _CANARY_SUMMARY:
        terminalreporter.write_line(line)


# -- the canary search: nothing personal or secret in any log line or error report ----


_CANARY_SUMMARY: list[str] = []


def pytest_configure(config):
    """Before anything starts: a fake Sentry every process reports to, and the log capture."""
    sentry = leaks.start()
    # In the environment, so every process a test starts reports there too,
    # whether or not it is given the test settings.
    os.environ["SENTRY_DSN"] = sentry.dsn
    init_sentry(Settings(sentry_dsn=sentry.dsn), "tests")


def pytest_unconfigure(config):
    sentry_sdk.get_client().close(timeout=2)
    leaks.stop()


@pytest.fixture(autouse=True)
def no_canary_leaks():
    """After each test: search what every process wrote and Sentry received since the last search."""
    leaks.ensure_handler()
    yield
    found = leaks.CAPTURE.scan()
    if found:
        pytest.fail(leaks.report(found), pytrace=False)


@pytest.fixture
def fake_sentry():
    """The local Sentry every process reports to (tests/support/fake_sentry.py)."""
    return leaks.fake_sentry()


def pytest_sessionfinish(session, exitstatus):
    """What came late (processes shutting down, envelopes in flight) is searched too.

    Under pytest-xdist each worker searches its own capture and hands the
    summary and any problem to the controller (``pytest_testnodedown``), which
    reports them and fails the run.
    """
    problems = list(_WORKER_PROBLEMS)
    if leaks.CAPTURE.sources:
        sentry_sdk.flush(timeout=5)
        capture = leaks.CAPTURE
        late = capture.scan()
        _CANARY_SUMMARY.append(
            f"canary search — {capture.count('process')} lines from {capture.sources_of('process')} processes, "
            f"{capture.count('command')} lines of command output, "
            f"{capture.count('test process')} log lines of the test process, "
            f"{capture.count('metrics')} lines of /metrics, "
            f"{capture.sources_of('sentry')} Sentry envelopes ({len(leaks.fake_sentry().events())} events): "
            f"{len(capture.leaks)} hits"
        )
        if late:
            problems.append(leaks.report(late))
        if leaks.expected_capture():
            problems.extend(leaks.vacuity_problems())
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["canary_summary"] = [f"services used — {line}" for line in _USED] + _CANARY_SUMMARY
        workeroutput["canary_problems"] = problems
        return
    if problems:
        _CANARY_SUMMARY.extend(problems)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_WORKER_PROBLEMS: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """An xdist worker finished: keep its canary summary and problems for the controller's report."""
    output = getattr(node, "workeroutput", {})
    _CANARY_SUMMARY.extend(f"[{node.gateway.id}] {line}" for line in output.get("canary_summary", []))
    _WORKER_PROBLEMS.extend(output.get("canary_problems", []))


@pytest.fixture(scope="session")
def paypal_fake(tmp_path_factory):
    """One fake PayPal for the run (tests/support/fake_paypal.py): the workers capture orders there."""
    with FakePayPal() as fake_paypal:
        roots = tmp_path_factory.mktemp("paypal") / "roots.pem"
        roots.write_bytes(fake_paypal.pki.root.public_bytes(Encoding.PEM))
        fake_paypal.roots_file = str(roots)
        yield fake_paypal


@pytest.fixture(scope="session")
def settings_env(test_services, paypal_fake) -> dict[str, str]:
    """The environment every payhooks process in the tests runs with."""
    return {
        "PAYPAL_WEBHOOK_ID": ",".join(paypal_fake.webhook_ids),
        "PAYPAL_CLIENT_ID": paypal_fake.client_id,
        "PAYPAL_CLIENT_SECRET": paypal_fake.client_secret,
        "PAYPAL_API_BASE": paypal_fake.url,
        "PAYPAL_CA_FILE": paypal_fake.roots_file,
        "DATABASE_URL": test_services.database_url,
        "REDIS_URL": test_services.redis_url,
        "STRIPE_WEBHOOK_SECRET": f"{PRIMARY_SECRET},{ROTATED_SECRET}",
        "API_TOKEN": API_TOKEN,
        "SENTRY_DSN": leaks.fake_sentry().dsn,
        # Short enough that a worker killed outright has its messages restored
        # within a test; retries stay below it, as in production.
        "BROKER_VISIBILITY_TIMEOUT": "6",
        "RETRY_BACKOFF_BASE_SECONDS": "0.2",
        "RETRY_BACKOFF_MAX_SECONDS": "2",
        # A killed consumer's events come back within a few seconds in the tests.
        "CONSUMER_HEARTBEAT_SECONDS": "0.5",
        "CONSUMER_DEAD_AFTER_SECONDS": "3",
        "CONSUMER_RETRY_MAX_SECONDS": "1",
        # Outbound webhooks: retried within a second or two, a lease of 3 × 1 + 5 s.
        "OUTBOUND_SECRET_KEY": OUTBOUND_SECRET_KEY,
        "OUTBOUND_TIMEOUT_SECONDS": "1",
        "OUTBOUND_RETRY_BASE_SECONDS": "0.2",
        "OUTBOUND_RETRY_MAX_SECONDS": "1",
        "OUTBOUND_KICK_INTERVAL_SECONDS": "1",
    }


@pytest.fixture(scope="session")
def settings(settings_env) -> Settings:
    return Settings.from_env(settings_env)


@pytest.fixture
def quiet(settings, test_services) -> Settings:
    """Settings on a broker database no worker consumes, so a test can read what the receiver queued."""
    return settings.replace(redis_url=test_services.redis_url.rsplit("/", 1)[0] + "/1")


@pytest.fixture
def queue(quiet) -> redis.Redis:
    """The quiet broker database, emptied before and after the test."""
    client = redis.Redis.from_url(quiet.redis_url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(scope="session")
def database(settings) -> Database:
    db = Database(settings.database_url)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def redis_client(test_services) -> redis.Redis:
    return redis.Redis.from_url(test_services.redis_url)


BROKER_KEYS = ("webhooks", "maintenance", "outbound", "unacked", "unacked_index", "payhooks:events", "payhooks:events:parked")


@pytest.fixture(autouse=True)
def clean_state(request):
    """Integration and fault tests start with empty tables and empty queues.

    Only the queue keys are deleted, never the whole Redis database: kombu keeps
    its exchange bindings there, and a running worker's retries need them.
    """
    if "unit" in request.node.path.parts:
        yield
        return
    database = request.getfixturevalue("database")
    with database.transaction() as session:
        session.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    client = request.getfixturevalue("redis_client")
    client.delete(*BROKER_KEYS)
    # Claims of consumers from earlier tests' workers (live ones re-register at their next beat).
    for key in client.scan_iter("payhooks:claims:*"):
        client.delete(key)
    yield


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def process_env(settings_env) -> dict[str, str]:
    return processes.service_env(settings_env)


@pytest.fixture(scope="session")
def worker(process_env, test_services):
    """One real Celery worker (prefork, 2 processes) shared by the integration tests."""
    started = processes.celery_worker(process_env)
    yield started
    started.stop()


@pytest.fixture
def fake():
    """A local fake of the Stripe API (tests/support/fake_stripe.py)."""
    with FakeStripe() as fake_stripe:
        yield fake_stripe


@pytest.fixture
def stripe_settings(settings, fake):
    """Settings pointing the Stripe client at the fake, with one credit package."""
    return settings.replace(
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=fake.url,
        credit_packages={"starter": STARTER},
        checkout_success_url="https://example.com/ok",
    )
