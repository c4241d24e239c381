"""What Celery may print about a task's arguments: the ids a task declares, and types for the rest.

Celery puts ``argsrepr``/``kwargsrepr`` in every message and prints them in the
worker's "received", retry and failure lines; ``PayhooksTask.apply_async``, the
door every publish and retry goes through, fills them in from
``describe_arguments``. The retry path is driven on a real worker in
tests/fault/test_leak_paths.py.
"""

from __future__ import annotations

import pytest
from celery import Celery

from tasks import events
from tasks.base import PayhooksTask

EMAIL = "someone@example.org"
BODY = (
    f'{{"id": "evt_1", "object": "event", "data": {{"object": {{"customer_email": "{EMAIL}"}}}}}}'
)


@pytest.fixture(scope="module")
def app():
    return Celery("arguments-test", set_as_current=False)


def test_declared_ids_are_shown_everything_else_by_its_type(app):
    @app.task(
        bind=True, base=PayhooksTask, name="test.refund", public_args=("provider", "refund_id")
    )
    def refund(self, provider, refund_id, note, amount=None, *, customer=None):
        pass

    argsrepr, kwargsrepr = refund.describe_arguments(
        ("stripe", "re_1", EMAIL), {"amount": 500, "customer": {"email": EMAIL}}
    )

    assert argsrepr == "('stripe', 're_1', <str>)"
    assert kwargsrepr == "{'amount': <int>, 'customer': <dict>}"


def test_an_id_that_is_not_a_plain_value_is_shown_by_its_type(app):
    @app.task(bind=True, base=PayhooksTask, name="test.lookup", public_args=("key",))
    def lookup(self, key):
        pass

    assert lookup.describe_arguments(({"email": EMAIL},), {}) == ("(<dict>,)", "{}")
    assert lookup.describe_arguments(("k_1",), {}) == ("('k_1',)", "{}")
    assert lookup.describe_arguments((), {"key": "k_2"}) == ("()", "{'key': 'k_2'}")


def test_without_declared_ids_nothing_is_shown(app):
    @app.task(base=PayhooksTask, name="test.unbound")
    def unbound(provider, body):
        pass

    assert unbound.describe_arguments(("stripe", BODY, 1.5), {}) == (
        "(<str>, <str>, <float>)",
        "{}",
    )


def test_process_event_shows_the_provider_and_never_the_body():
    argsrepr, _ = events.process_event.describe_arguments(("stripe", BODY, 1712345678.5), {})

    assert argsrepr == "('stripe', <str>, 1712345678.5)"
    assert EMAIL not in argsrepr and "evt_1" not in argsrepr


def test_celery_never_retries_on_its_own_limit():
    # Our limit (RETRY_MAX_ATTEMPTS, then a dead letter) decides; Celery's default of 3
    # would re-raise the failure and acknowledge the message (fault/test_transient_retries.py).
    assert PayhooksTask.max_retries is None
    assert events.process_event.max_retries is None
