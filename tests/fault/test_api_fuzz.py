"""schemathesis over /api/openapi.json, in process, against the real database: no 5xx, ever.

Every documented operation gets valid and invalid inputs generated from the
document itself (types, sizes, formats, missing and extra fields); each answer
must be a documented status with the documented JSON shape, and never a 5xx.
The Stripe API is the local fake, so verify and checkout run their real paths;
a 502 from it would mean we sent the provider something we should have refused.

Bounded (FUZZ_EXAMPLES per operation and mode) to stay well under a minute.
"""

from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from receiver import create_app
from receiver.openapi import openapi_document
from tests.conftest import API_TOKEN, STARTER

# schemathesis gives every operation's test one node id, which pytest-xdist cannot tell apart:
# this file runs in the Makefile's one-process part.
pytestmark = pytest.mark.serial

FUZZ_EXAMPLES = 25
SEEN: dict[str, set[int]] = collections.defaultdict(set)  # operation -> statuses answered to authenticated requests
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

CONFIG = schemathesis.Config.from_dict({
    "generation": {"mode": "all"},
    # The document's "bearer" scheme, so schemathesis knows the token is supplied (and
    # still checks on its own that requests without it are refused).
    "auth": {"openapi": {"bearer": {"bearer": API_TOKEN}}},
    # every built-in check: not_a_server_error, status and content-type and headers conformance,
    # response_schema_conformance, negative_data_rejection, positive_data_acceptance, …
    "checks": {"enabled": True},
})


class AppUnderTest:
    """A WSGI app that forwards to the one the current test built (it needs the test services)."""

    app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


APP = AppUnderTest()
# The document the app serves at /api/openapi.json (checked below); every request schemathesis
# sends, its own probes included, goes in process to APP.
DOCUMENT = openapi_document((STARTER.id,))  # as served with stripe_settings' one credit package
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
schema.app = APP
schema.config.update(base_url="http://localhost")


@pytest.fixture
def fuzzed_app(stripe_settings):
    APP.app = create_app(stripe_settings)
    yield APP.app
    APP.app = None


def test_the_app_serves_the_document_fuzzed_here(fuzzed_app):
    served = fuzzed_app.test_client().get("/api/openapi.json", headers=AUTH)
    assert served.get_json() == DOCUMENT


@schema.parametrize()
# derandomize: the same requests every run, so the coverage check below cannot pass one run and fail the next
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_answers_every_generated_request_without_a_5xx(case, fuzzed_app):
    response = case.call_and_validate()
    if response.request.headers.get("Authorization") == AUTH["Authorization"]:
        SEEN[case.operation.label].add(response.status_code)
        assert response.status_code != 401  # the token schemathesis sends is the right one
    else:
        # without it (or with another) nothing gets in; an id no route matches is a 404 before that
        assert response.status_code in (401, 404)


def test_the_fuzz_got_past_authentication_on_every_operation():
    """Runs after the fuzz above (pytest keeps file order): each operation answered something else than 401."""
    operations = {f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert all(SEEN[label] - {401} for label in operations), dict(SEEN)
