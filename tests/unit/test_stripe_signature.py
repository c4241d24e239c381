"""Stripe-Signature verification: our verify/sign, and agreement with the official library."""

from __future__ import annotations

import json
import time

import hypothesis.strategies as st
import pytest
import stripe
from hypothesis import given
from hypothesis import settings as hypothesis_settings

from providers.changes import SignatureError
from providers.stripe import sign, verify_signature
from tests.support.stripe_events import completed_event, encode

PRIMARY = "whsec_test_primary"
ROTATED = "whsec_test_rotated"
SECRETS = (PRIMARY, ROTATED)
TOLERANCE = 300
NOW = 1_700_000_000

BODY = encode(
    completed_event(
        session_id="cs_test_signature", user_id="user_sig", credits="100", payment_intent="pi_sig"
    )
)
GOOD = sign(BODY, PRIMARY, NOW)
GOOD_V1 = GOOD.split("v1=", 1)[1]
ROTATED_V1 = sign(BODY, ROTATED, NOW).split("v1=", 1)[1]
TAMPERED = BODY.replace(b'"user_sig"', b'"user_siG"')
assert TAMPERED != BODY and len(TAMPERED) == len(BODY)


def verify(body=BODY, header=GOOD, secrets=SECRETS, *, now=NOW, tolerance=TOLERANCE) -> int:
    return verify_signature(body, header, secrets, tolerance=tolerance, now=now)


def test_sign_format():
    header = sign(b"{}", "whsec_x", 1234)

    t, v1 = header.split(",")
    assert t == "t=1234"
    assert v1.startswith("v1=")
    digest = v1[3:]
    assert len(digest) == 64
    assert digest == digest.lower()
    int(digest, 16)  # hex


def test_sign_depends_on_body_secret_and_timestamp():
    base = sign(b"{}", "whsec_x", 1234)
    assert sign(b"{}", "whsec_x", 1234) == base
    assert sign(b"{ }", "whsec_x", 1234) != base
    assert sign(b"{}", "whsec_y", 1234) != base
    assert sign(b"{}", "whsec_x", 1235).split("v1=")[1] != base.split("v1=")[1]


# -- the accept/reject table -------------------------------------------------------


def ok(header, index, case_id, *, body=BODY, secrets=SECRETS, now=NOW):
    return pytest.param(body, header, secrets, now, index, id=case_id)


def bad(header, message, case_id, *, body=BODY, secrets=SECRETS, now=NOW):
    return pytest.param(body, header, secrets, now, message, id=case_id)


OLDEST = NOW - TOLERANCE
NEWEST = NOW + TOLERANCE
ZEROS, EFFS = "0" * 64, "f" * 64

ACCEPT = [
    ok(GOOD, 0, "first-secret"),
    ok(sign(BODY, ROTATED, NOW), 1, "second-rotated-secret"),
    ok(GOOD, 0, "single-secret", secrets=(PRIMARY,)),
    ok(f"t={NOW},v1={ZEROS},v1={GOOD_V1},v1={EFFS}", 0, "several-v1-one-matches"),
    ok(f"t={NOW},v1={'a' * 64},v1={ROTATED_V1}", 1, "several-v1-rotated-matches"),
    ok(f"t={NOW},v1={ROTATED_V1},v1={GOOD_V1}", 0, "both-match-first-secret-wins"),
    ok(f"t={NOW},v0={ZEROS},v1={GOOD_V1}", 0, "v0-ignored-beside-v1"),
    ok(f"v1={GOOD_V1},t={NOW}", 0, "t-after-v1"),
    ok(sign(BODY, PRIMARY, OLDEST), 0, "age-equals-tolerance"),
    ok(sign(BODY, PRIMARY, NEWEST), 0, "future-equals-tolerance"),
    ok(sign(b"", PRIMARY, NOW), 0, "empty-body", body=b""),
]


@pytest.mark.parametrize(("body", "header", "secrets", "now", "index"), ACCEPT)
def test_accepted(body, header, secrets, now, index):
    assert verify(body, header, secrets, now=now) == index


ONE_T = "exactly one t"
REJECT = [
    bad(None, "missing", "header-none"),
    bad("", "missing", "header-empty"),
    bad(f"v1={GOOD_V1}", ONE_T, "no-t"),
    bad(f"t={NOW},t={NOW},v1={GOOD_V1}", ONE_T, "two-t"),
    bad(f"t=,v1={GOOD_V1}", ONE_T, "empty-t"),
    bad(f"t=abc,v1={GOOD_V1}", ONE_T, "non-numeric-t"),
    bad(f"t={NOW}.0,v1={GOOD_V1}", ONE_T, "fractional-t"),
    bad(f"t=-{NOW},v1={GOOD_V1}", ONE_T, "negative-t"),
    bad(f"t=\u0661\u0662,v1={GOOD_V1}", ONE_T, "unicode-digit-t"),
    bad("garbage", ONE_T, "garbage"),
    bad(",,,===,,", ONE_T, "punctuation"),
    bad(f"t={NOW}", "no v1", "no-v1"),
    bad(f"t={NOW},v0={GOOD_V1}", "no v1", "only-v0"),
    bad(f"t={NOW},V1={GOOD_V1}", "no v1", "uppercase-scheme"),
    bad(f"t={NOW},v1=", "no v1 signature matches", "empty-v1"),
    bad(sign(BODY, "whsec_wrong", NOW), "matches", "wrong-secret"),
    bad(GOOD, "matches", "tampered-body", body=TAMPERED),
    bad(GOOD, "matches", "appended-byte", body=BODY + b" "),
    bad(f"t={NOW + 1},v1={GOOD_V1}", "matches", "timestamp-swapped"),
    bad(f"t={NOW},v1={GOOD_V1.upper()}", "matches", "uppercase-hex"),
    bad(sign(BODY, PRIMARY, OLDEST - 1), "older", "age-tolerance-plus-1"),
    bad(sign(BODY, PRIMARY, NOW - 86400), "older", "a-day-old"),
    bad(sign(BODY, PRIMARY, NEWEST + 1), "future", "future-tolerance-plus-1"),
    bad(sign(BODY, PRIMARY, OLDEST), "older", "fraction-past-tolerance", now=NOW + 0.5),
    bad(f"t={NOW},v1=\u00e9\u00e8\u2603\U0001f4a9", "matches", "non-ascii-v1"),
    bad(f"t={NOW},v1={GOOD_V1[:-1]}\u00e9", "matches", "non-ascii-last-char"),
    bad(f"t={NOW},v1=\ud800{GOOD_V1[1:]}", "matches", "lone-surrogate-v1"),
    bad(f"t={NOW},v1={GOOD_V1}\x00", "matches", "nul-suffix"),
    bad(GOOD, "matches", "no-secrets", secrets=()),
    bad(GOOD, "matches", "no-secret-matches", secrets=("whsec_other", "whsec_another")),
]


@pytest.mark.parametrize(("body", "header", "secrets", "now", "message"), REJECT)
def test_rejected(body, header, secrets, now, message):
    with pytest.raises(SignatureError, match=message):
        verify(body, header, secrets, now=now)


@pytest.mark.parametrize(
    "timestamp", ["1" + "0" * 400, "9" * 5000], ids=["400-digits", "5000-digits"]
)
def test_huge_timestamp_is_rejected_as_signature_error(timestamp):
    # regression: now - int(t) raised OverflowError (400 digits, float now) or ValueError
    # (>4300 digits) instead of SignatureError, and the receiver answered 500.
    # The receiver passes now=time.time(), a float.
    with pytest.raises(SignatureError):
        verify(header=f"t={timestamp},v1={GOOD_V1}", now=float(NOW))


def test_accepted_before_expiry_and_rejected_one_second_after_at_both_edges():
    past = sign(BODY, PRIMARY, NOW - TOLERANCE)
    future = sign(BODY, PRIMARY, NOW + TOLERANCE)

    assert verify(header=past, now=NOW) == 0
    assert verify(header=future, now=NOW) == 0
    with pytest.raises(SignatureError):
        verify(header=past, now=NOW + 1)
    with pytest.raises(SignatureError):
        verify(header=future, now=NOW - 1)


def test_tolerance_argument_is_honoured():
    header = sign(BODY, PRIMARY, NOW - 60)

    assert verify(header=header, tolerance=60) == 0
    with pytest.raises(SignatureError):
        verify(header=header, tolerance=59)


def test_secrets_may_be_a_list():
    assert verify(secrets=[ROTATED, PRIMARY]) == 1


# -- agreement with the official stripe library -------------------------------------

NON_ASCII_BODY = json.dumps(
    completed_event(session_id="cs_test_unicode", user_id="usér_☃", credits="5"), ensure_ascii=False
).encode("utf-8")


@pytest.fixture(params=[BODY, NON_ASCII_BODY], ids=["ascii", "non-ascii"])
def body(request) -> bytes:
    return request.param


def test_stripe_library_accepts_our_header(body):
    timestamp = int(time.time())  # stripe checks the age against the real clock
    header = sign(body, PRIMARY, timestamp)

    payload = body.decode("utf-8")
    assert stripe.WebhookSignature.verify_header(payload, header, PRIMARY, TOLERANCE) is True


def test_stripe_library_rejects_our_header_for_another_body(body):
    # the check above can fail: stripe really compares what we signed
    header = sign(body, PRIMARY, int(time.time()))

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            body.decode("utf-8") + " ", header, PRIMARY, TOLERANCE
        )


def test_we_accept_a_signature_computed_by_the_stripe_library(body):
    payload = body.decode("utf-8")
    timestamp = NOW
    digest = stripe.WebhookSignature._compute_signature(f"{timestamp}.{payload}", ROTATED)
    header = f"t={timestamp},v1={digest}"

    assert verify(body, header, SECRETS, now=timestamp) == 1


def test_we_reject_a_stripe_library_signature_with_another_secret(body):
    payload = body.decode("utf-8")
    digest = stripe.WebhookSignature._compute_signature(f"{NOW}.{payload}", "whsec_not_ours")

    with pytest.raises(SignatureError):
        verify(body, f"t={NOW},v1={digest}", SECRETS, now=NOW)


def test_our_header_is_identical_to_stripe_generate_signature_header(body):
    expected = stripe.WebhookSignature.generate_signature_header(
        body.decode("utf-8"), PRIMARY, timestamp=NOW
    )

    assert sign(body, PRIMARY, NOW) == expected


# -- property ------------------------------------------------------------------------


@hypothesis_settings(database=None, deadline=None, max_examples=200)
@given(
    body=st.binary(min_size=1, max_size=2048),
    secret=st.text(max_size=64),
    timestamp=st.integers(min_value=0, max_value=9_999_999_999),  # 10-digit unix times
    data=st.data(),
)
def test_sign_verify_round_trip_and_any_flipped_byte_fails(body, secret, timestamp, data):
    header = sign(body, secret, timestamp)

    assert verify_signature(body, header, (secret,), tolerance=TOLERANCE, now=timestamp) == 0

    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="position")
    flip = data.draw(st.integers(min_value=1, max_value=255), label="xor mask")
    tampered = body[:position] + bytes([body[position] ^ flip]) + body[position + 1 :]
    assert tampered != body
    with pytest.raises(SignatureError):
        verify_signature(tampered, header, (secret,), tolerance=TOLERANCE, now=timestamp)
