"""Hypothesis against POST /webhooks/stripe: random bodies, headers, sizes and signatures.

Whatever arrives, the receiver answers 200, 400 or 413 with the JSON error shape
(the documented 503s need a missing secret or an unreachable broker, neither of
which holds here), and nothing reaches Redis that was not signed with a
configured secret over exactly these bytes, within the tolerance (invariant 6).
The app runs in process on a real Redis database no worker consumes.
"""

from __future__ import annotations

import json
import time

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.stripe import sign
from receiver import create_app
from tests.conftest import PRIMARY_SECRET, ROTATED_SECRET
from tests.support.stripe_events import completed_event, encode
from transport.queue import EVENTS, Envelope

MAX_BYTES = 4096

# -- bodies ---------------------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def event_like(draw) -> bytes:
    """Something shaped like a Stripe event, with any field missing, mistyped or strange."""
    event = {}
    for key, value in (
        ("id", st.text(max_size=40) | json_values),
        ("type", st.sampled_from(["checkout.session.completed", "charge.refunded", ""]) | st.text(max_size=30) | json_values),
        ("created", st.integers(min_value=-(2**64), max_value=2**64) | json_values),
        ("data", st.fixed_dictionaries({"object": st.dictionaries(st.text(max_size=8), json_values, max_size=4)}) | json_values),
    ):
        if draw(st.booleans()) or key in ("id", "type"):
            event[key] = draw(value)
    text = json.dumps(event, allow_nan=True)  # NaN and Infinity literals, which JSON has not
    return text.encode("utf-8", "surrogatepass")


def nested(depth: int) -> bytes:
    return b'{"id":"evt_deep","type":"x","data":{"object":' + b"[" * depth + b"]" * depth + b"}}"


bodies = st.one_of(
    st.binary(max_size=600),
    event_like(),
    st.builds(lambda: encode(completed_event())),  # a real event
    st.integers(min_value=100, max_value=3000).map(nested),
    st.integers(min_value=MAX_BYTES - 10, max_value=MAX_BYTES + 2000).map(lambda n: b"{" + b" " * (n - 2) + b"}"),
)

# -- signatures -------------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=120)
HOW = ["none", "garbage", "random_hex", "wrong_secret", "stale", "future", "other_body", "tampered",
       "valid", "valid_rotated", "valid_among_garbage", "two_timestamps"]


@st.composite
def deliveries(draw):
    body = draw(bodies)
    how = draw(st.sampled_from(HOW))
    now = int(time.time())
    headers = {}
    if draw(st.booleans()):
        headers["Content-Type"] = draw(st.just("application/json") | header_text)
    signed = how in ("valid", "valid_rotated", "valid_among_garbage")
    header = {
        "none": None,
        "garbage": draw(header_text),
        "random_hex": f"t={now},v1={draw(st.binary(min_size=32, max_size=32)).hex()}",
        "wrong_secret": sign(body, "whsec_someone_else", now),
        "stale": sign(body, PRIMARY_SECRET, now - 301 - draw(st.integers(0, 10**6))),
        "future": sign(body, PRIMARY_SECRET, now + 301 + draw(st.integers(0, 10**6))),
        "other_body": sign(body + b" ", PRIMARY_SECRET, now),
        "tampered": sign(body, PRIMARY_SECRET, now),
        "valid": sign(body, PRIMARY_SECRET, now),
        "valid_rotated": sign(body, ROTATED_SECRET, now),
        "valid_among_garbage": f"{draw(header_text).replace(',', '')},{sign(body, PRIMARY_SECRET, now)},v0=00",
        "two_timestamps": f"t={now - 1},{sign(body, PRIMARY_SECRET, now)}",
    }[how]
    if how == "tampered":
        body = body[:-1] + bytes([body[-1] ^ 1]) if body else b"x"
    if header is not None:
        headers["Stripe-Signature"] = header
    return body, headers, signed


# -- the test ----------------------------------------------------------------------------------


@pytest.fixture
def receiver(settings, test_services):
    url = test_services.redis_url.rsplit("/", 1)[0] + "/3"
    queue = redis.Redis.from_url(url)
    queue.flushdb()
    app = create_app(settings.replace(redis_url=url, webhook_max_bytes=MAX_BYTES))
    yield app.test_client(), queue
    queue.flushdb()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow, HealthCheck.data_too_large])
@given(delivery=deliveries())
def test_no_5xx_and_no_forgery_reaches_the_queue(receiver, delivery):
    client, queue = receiver
    body, headers, signed = delivery
    before = queue.llen(EVENTS)

    response = client.post("/webhooks/stripe", data=body, headers=headers)

    added = queue.llen(EVENTS) - before
    queued = queue.lrange(EVENTS, 0, added - 1) if added else []  # LPUSH: newest first
    assert response.status_code in (200, 400, 413), (response.status_code, response.get_data()[:300])
    payload = response.get_json()
    if response.status_code != 200:
        assert isinstance(payload["error"], str) and isinstance(payload["message"], str)
        assert queued == []
        return
    # Accepted: only ever a signed event, queued exactly as it came.
    assert signed and len(body) <= MAX_BYTES
    [item] = queued
    assert Envelope.decode(item).body == body
    assert payload == {"received": True, "id": orjson.loads(body)["id"]}


def test_the_strategies_reach_every_answer(receiver):
    """The fuzz is only worth something if it gets past the signature: check it can."""
    client, _ = receiver
    seen = set()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(delivery=deliveries())
    def collect(delivery):
        body, headers, _ = delivery
        response = client.post("/webhooks/stripe", data=body, headers=headers)
        seen.add((response.status_code, (response.get_json() or {}).get("error", "accepted")))

    collect()
    assert {(200, "accepted"), (400, "invalid_signature"), (400, "invalid_event"),
            (413, "request_entity_too_large")} <= seen, seen
