"""Whatever a PayPal event holds, translating it gives a change or InvalidEventError, never a crash."""

from __future__ import annotations

import copy

import hypothesis.strategies as st
from hypothesis import given, settings
from werkzeug.datastructures import Headers

from providers import paypal
from providers.changes import InvalidEventError
from tests.support import paypal_events as pe

TYPES = sorted(paypal.HANDLED_TYPES)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TYPES), st.data(), JSON)
def test_any_field_replaced_by_anything_translates_or_is_invalid(event_type, data, value):
    event = pe.sample(event_type)
    resource = event["resource"]
    path = data.draw(st.sampled_from([p for p in _paths(resource) if p]))
    node = resource
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = copy.deepcopy(value)
    try:
        parsed = paypal.parse_event(pe.encode(event))
    except InvalidEventError:
        return
    try:
        paypal.translate(parsed)
    except InvalidEventError:
        pass


def test_headers_as_the_receiver_gets_them():
    body = b'{"id":"WH-1"}'
    signed = pe.sign_headers(body)
    headers = Headers([(name.title(), value) for name, value in signed.items()])
    sent = paypal.transmission(headers, tolerance=60, now=__import__("time").time())
    assert sent.cert_url == pe.CERT_URL and sent.auth_algo == "SHA256withRSA"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(paypal.SIGNATURE_HEADERS), st.text(max_size=80))
def test_any_header_value_is_refused_cleanly(header, value):
    import time

    from providers.changes import SignatureError

    body = b'{"id":"WH-1","event_type":"X","resource":{}}'
    headers = pe.sign_headers(body)
    headers[header] = value
    source = paypal.CertificateSource(lambda url: b"", roots=[pe.default_pki().root])
    try:
        paypal.verify(
            body, headers, [pe.WEBHOOK_ID], certificates=source, tolerance=300, now=time.time()
        )
    except SignatureError as exc:
        assert exc.reason.isalpha()
