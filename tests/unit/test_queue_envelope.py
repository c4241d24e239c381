"""transport.queue.Envelope: one JSON header line, then the raw body, byte for byte. No I/O.

The Lua scripts and reliable fetch are tested against Redis in the integration
and fault tests; what is tested here is that an item decodes to exactly what was
encoded, whatever the body holds (newlines, invalid UTF-8, nothing at all).
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.queue import Envelope

# Provider names and event ids come from parsed JSON, which holds no lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
TIMES = st.floats(min_value=0, max_value=2**40, allow_nan=False, allow_infinity=False)


@settings(max_examples=300)
@given(provider=TEXT, event_id=TEXT, received_at=TIMES, body=st.binary(max_size=512))
def test_decode_gives_back_exactly_what_was_encoded(provider, event_id, received_at, body):
    envelope = Envelope(provider, event_id, received_at, body)

    assert Envelope.decode(envelope.encode()) == envelope


@settings(max_examples=200)
@given(
    lines=st.lists(st.binary(max_size=40), min_size=1, max_size=6),
    event_id=TEXT,
)
def test_bodies_with_newlines_survive(lines, event_id):
    body = b"\n".join(lines)

    decoded = Envelope.decode(Envelope("stripe", event_id, 1.0, body).encode())

    assert decoded.body == body
    assert decoded.event_id == event_id


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\n",
        b"\n\n\n",
        b'{\n  "id": "evt_1",\n  "object": "event"\n}\n',
        b"\r\n{}\r\n",
        b'{"id":"evt_1"}\n{"p":"forged","id":"evt_2","at":0}\n',  # a body that looks like a header
        '{"user": "us\u00e9r_\u2603"}'.encode(),
        b"\xff\xfe\x00not utf-8",
    ],
    ids=repr,
)
def test_the_body_is_kept_byte_for_byte(body):
    envelope = Envelope("stripe", "evt_1", 1_764_000_000.25, body)

    assert Envelope.decode(envelope.encode()) == envelope


@pytest.mark.parametrize("event_id", ["evt_with\nnewline", 'evt_"quoted"', "evt_\u2603", "\n"])
def test_the_header_is_one_line_whatever_the_event_id(event_id):
    item = Envelope("stripe", event_id, 1.0, b"{}\n").encode()

    header, _, body = item.partition(b"\n")

    assert orjson.loads(header)["id"] == event_id
    assert body == b"{}\n"
    assert Envelope.decode(item).event_id == event_id


def test_the_item_format_is_a_json_header_line_then_the_body():
    item = Envelope("stripe", "evt_1", 1_764_000_000.5, b'{"id":"evt_1"}').encode()

    assert item == b'{"p":"stripe","id":"evt_1","at":1764000000.5}\n{"id":"evt_1"}'


def test_an_integer_time_decodes_as_a_float():
    decoded = Envelope.decode(b'{"p":"stripe","id":"evt_1","at":1764000000}\n{}')

    assert decoded.received_at == 1_764_000_000.0
    assert type(decoded.received_at) is float
