"""Shared fixtures: real services for the run, settings pointing at them, clean state per test."""

from __future__ import annotations

import dataclasses

import pytest
import redis
from sqlalchemy import text

from models.db import Database
from models.tables import Base
from receiver import create_app
from tests.support import processes, services
from tests.support.fake_stripe import FakeStripe
from workers.settings import CreditPackage, Settings

STARTER = CreditPackage("starter", "Starter", 100, 999, "usd")
PRIMARY_SECRET = "whsec_test_primary"
ROTATED_SECRET = "whsec_test_rotated"
API_TOKEN = "test-token-0123456789abcdef0123456789"

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


@pytest.fixture(scope="session")
def settings_env(test_services) -> dict[str, str]:
    """The environment every payhooks process in the tests runs with."""
    return {
        "DATABASE_URL": test_services.database_url,
        "REDIS_URL": test_services.redis_url,
        "STRIPE_WEBHOOK_SECRET": f"{PRIMARY_SECRET},{ROTATED_SECRET}",
        "API_TOKEN": API_TOKEN,
        # Short enough that a worker killed outright has its messages restored
        # within a test; retries stay below it, as in production.
        "BROKER_VISIBILITY_TIMEOUT": "6",
        "RETRY_BACKOFF_BASE_SECONDS": "0.2",
        "RETRY_BACKOFF_MAX_SECONDS": "2",
    }


@pytest.fixture(scope="session")
def settings(settings_env) -> Settings:
    return Settings.from_env(settings_env)


@pytest.fixture(scope="session")
def database(settings) -> Database:
    db = Database(settings.database_url)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def redis_client(test_services) -> redis.Redis:
    return redis.Redis.from_url(test_services.redis_url)


BROKER_KEYS = ("webhooks", "maintenance", "unacked", "unacked_index")


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
    request.getfixturevalue("redis_client").delete(*BROKER_KEYS)
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
    return dataclasses.replace(
        settings,
        stripe_api_key="sk_test_x",
        stripe_api_base=fake.url,
        credit_packages={"starter": STARTER},
        checkout_success_url="https://example.com/ok",
    )
