"""celery_message: the Celery protocol-2 envelope the receiver LPUSHes itself."""

from __future__ import annotations

import base64
import json
import uuid

from celery import Celery

from tests.support.stripe_events import completed_event, encode
from workers.publish import celery_message
from workers.queues import PROCESS_EVENT, WEBHOOKS_QUEUE

EVENT = completed_event(
    session_id="cs_test_publish_marker",
    user_id="user_publish_marker",
    credits="100",
    payment_intent="pi_pub",
)
RAW = encode(EVENT).decode("utf-8")
EVENT_ID = EVENT["id"]
RECEIVED_AT = 1_700_000_000.25
ARGS = ["stripe", RAW, RECEIVED_AT]
ARGSREPR = repr(("stripe", EVENT_ID))
TASK_ID = "6f1c1b7e-0000-4000-8000-000000000001"
ORIGIN = "1234@receiver-host"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def build(**overrides) -> bytes:
    kwargs = dict(queue=WEBHOOKS_QUEUE, argsrepr=ARGSREPR, origin=ORIGIN, task_id=TASK_ID)
    kwargs.update(overrides)
    return celery_message(PROCESS_EVENT, ARGS, **kwargs)


def envelope(message: bytes) -> dict:
    return json.loads(message)


def decoded_body(message: bytes):
    return json.loads(base64.b64decode(envelope(message)["body"], validate=True))


def test_returns_json_bytes():
    message = build()

    assert isinstance(message, bytes)
    assert isinstance(envelope(message), dict)
    assert set(envelope(message)) == {
        "body",
        "content-encoding",
        "content-type",
        "headers",
        "properties",
    }


def test_content_type_and_encoding():
    env = envelope(build())

    assert env["content-type"] == "application/json"
    assert env["content-encoding"] == "utf-8"


def test_body_is_base64_json_of_args_kwargs_embed():
    assert decoded_body(build()) == [ARGS, {}, EMBED]


def test_body_round_trips_the_raw_event_exactly():
    args, kwargs, _ = decoded_body(build())

    assert args[1] == RAW
    assert json.loads(args[1]) == EVENT
    assert args[2] == RECEIVED_AT
    assert kwargs == {}


def test_headers():
    headers = envelope(build())["headers"]

    assert headers["task"] == PROCESS_EVENT
    assert headers["id"] == TASK_ID
    assert headers["root_id"] == TASK_ID
    assert headers["parent_id"] is None
    assert headers["argsrepr"] == ARGSREPR
    assert headers["kwargsrepr"] == "{}"
    assert headers["retries"] == 0
    assert headers["ignore_result"] is True
    assert headers["origin"] == ORIGIN
    assert headers["lang"] == "py"
    assert headers["eta"] is None
    assert headers["expires"] is None


def test_properties():
    properties = envelope(build())["properties"]

    # Celery publishes direct-queue tasks to the anonymous exchange with the queue
    # as routing key (celery/app/amqp.py send_task_message); so does the receiver
    # since commit 047c3fd.
    assert properties["delivery_info"] == {"exchange": "", "routing_key": WEBHOOKS_QUEUE}
    assert properties["body_encoding"] == "base64"
    assert properties["correlation_id"] == TASK_ID
    assert properties["delivery_mode"] == 2
    assert properties["priority"] == 0
    assert properties["reply_to"] == ""
    uuid.UUID(properties["delivery_tag"])


def test_delivery_info_follows_the_queue_argument():
    properties = envelope(build(queue="maintenance"))["properties"]

    assert properties["delivery_info"] == {"exchange": "", "routing_key": "maintenance"}


def test_delivery_tag_is_unique_across_calls():
    first = envelope(build())["properties"]["delivery_tag"]
    second = envelope(build())["properties"]["delivery_tag"]

    assert first != second


def test_task_id_is_generated_when_omitted_and_used_consistently():
    first = envelope(build(task_id=None))
    second = envelope(build(task_id=None))

    task_id = first["headers"]["id"]
    uuid.UUID(task_id)
    assert task_id != second["headers"]["id"]
    assert first["headers"]["root_id"] == task_id
    assert first["properties"]["correlation_id"] == task_id


def test_raw_body_is_not_in_headers_only_argsrepr_is():
    message = build()
    env = envelope(message)
    headers_text = json.dumps(env["headers"])
    properties_text = json.dumps(env["properties"])

    # what Celery logs for the task is argsrepr: the event id, never the payload
    assert env["headers"]["argsrepr"] == ARGSREPR
    assert EVENT_ID in env["headers"]["argsrepr"]
    for text in (headers_text, properties_text):
        assert RAW not in text
        assert json.dumps(RAW) not in text
        assert "user_publish_marker" not in text
        assert "cs_test_publish_marker" not in text
    # and the payload appears nowhere in clear in the stored message
    assert b"user_publish_marker" not in message


def test_matches_what_celery_itself_builds():
    app = Celery("payhooks-unit", set_as_current=False)  # no broker is contacted
    reference = app.amqp.as_task_v2(
        TASK_ID,
        PROCESS_EVENT,
        args=ARGS,
        kwargs={},
        argsrepr=ARGSREPR,
        origin=ORIGIN,
        ignore_result=True,
    )
    env = envelope(build())

    assert env["headers"] == reference.headers
    assert decoded_body(build()) == json.loads(json.dumps(list(reference.body)))
    for key, value in reference.properties.items():
        assert env["properties"][key] == value
