"""PayPal signature verification offline: real RSA keys and certificates, and PayPal's own deliveries."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from providers import paypal
from providers.changes import SignatureError
from providers.errors import (
    ProviderRequestError,
    ProviderUnavailableError,
    VerificationUnavailableError,
)
from tests.support import paypal_events as pe

TOLERANCE = 300
BODY = pe.encode(
    pe.event(
        "PAYMENT.CAPTURE.COMPLETED", pe.capture("5TY05013RG002845M", order_id="5O190127TN364715T")
    )
)
IDS = (pe.WEBHOOK_ID, pe.ROTATED_WEBHOOK_ID)


class Fetcher:
    """Certificate addresses served from a dict; counts downloads."""

    def __init__(
        self, served: dict[str, bytes] | None = None, *, error: Exception | None = None
    ) -> None:
        self.served = dict(served or {})
        self.error = error
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if self.error is not None:
            raise self.error
        if url not in self.served:
            raise ProviderRequestError(
                "PayPal refused the certificate download (404): RESOURCE_NOT_FOUND"
            )
        return self.served[url]


@pytest.fixture(scope="module")
def pki() -> pe.TestPKI:
    return pe.default_pki()


@pytest.fixture
def now() -> float:
    return float(int(time.time()))


def source_for(pki, served=None, *, store=None, clock=None, **kwargs):
    fetch = Fetcher({pe.CERT_URL: pki.leaf_pem()} if served is None else served)
    source = paypal.CertificateSource(
        fetch, roots=[pki.root], store=store, clock=clock or time.time, **kwargs
    )
    return source, fetch


def headers_at(now: float, body: bytes = BODY, **kwargs) -> dict[str, str]:
    return pe.sign_headers(body, transmission_time=dt.datetime.fromtimestamp(now, dt.UTC), **kwargs)


def verify(body, headers, source, now, ids=IDS):
    return paypal.verify(body, headers, ids, certificates=source, tolerance=TOLERANCE, now=now)


def reason(body, headers, source, now, ids=IDS) -> str:
    with pytest.raises(SignatureError) as caught:
        verify(body, headers, source, now, ids)
    return caught.value.reason


# -- accepted --------------------------------------------------------------------------


def test_a_good_delivery_is_accepted_for_the_webhook_id_it_was_signed_for(pki, now):
    source, fetch = source_for(pki)
    assert verify(BODY, headers_at(now), source, now) == 0
    assert verify(BODY, headers_at(now, webhook_id=pe.ROTATED_WEBHOOK_ID), source, now) == 1
    assert fetch.calls == [pe.CERT_URL]  # once, then from the process cache


def test_header_names_are_case_insensitive_in_a_plain_dict(pki, now):
    source, _ = source_for(pki)
    lowered = {k.lower(): v for k, v in headers_at(now).items()}
    assert verify(BODY, lowered, source, now) == 0


@pytest.mark.parametrize("offset", [-TOLERANCE, TOLERANCE])
def test_transmission_time_at_the_tolerance_is_accepted(pki, now, offset):
    source, _ = source_for(pki)
    assert verify(BODY, headers_at(now + offset), source, now) == 0


def test_the_signed_string_is_ids_time_webhook_and_unsigned_decimal_crc32():
    message = paypal.signed_message("tid", "2024-08-02T19:33:35Z", "WH1", b"\xff" * 7)
    crc = int(message.rsplit(b"|", 1)[1])
    assert message.startswith(b"tid|2024-08-02T19:33:35Z|WH1|")
    assert (
        crc == 0xFFFFFFFF & __import__("zlib").crc32(b"\xff" * 7) and crc > 2**31
    )  # unsigned, not negative


# -- refused ------------------------------------------------------------------------------


def test_a_tampered_body_is_refused(pki, now):
    source, _ = source_for(pki)
    tampered = BODY.replace(b'"5TY05013RG002845M"', b'"5TY05013RG002845N"')
    assert tampered != BODY
    assert reason(tampered, headers_at(now), source, now) == "mismatch"


def test_a_signature_by_another_key_is_refused(pki, now):
    source, _ = source_for(pki)
    forger = pe.make_pki()
    assert reason(BODY, headers_at(now, pki=forger), source, now) == "mismatch"


def test_a_webhook_id_not_configured_is_refused(pki, now):
    source, _ = source_for(pki)
    assert reason(BODY, headers_at(now, webhook_id="5GP028458E2496506"), source, now) == "mismatch"
    assert reason(BODY, headers_at(now), source, now, ids=()) == "unconfigured"


@pytest.mark.parametrize(
    ("offset", "expected"), [(-TOLERANCE - 1, "stale"), (TOLERANCE + 1, "future")]
)
def test_stale_and_future_transmissions_are_refused_before_any_download(pki, now, offset, expected):
    source, fetch = source_for(pki)
    assert reason(BODY, headers_at(now + offset), source, now) == expected
    assert fetch.calls == []


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        (paypal.AUTH_ALGO_HEADER, "SHA1withRSA", "algorithm"),
        (paypal.TRANSMISSION_SIG_HEADER, "not base64!", "malformed"),
        (paypal.TRANSMISSION_TIME_HEADER, "yesterday", "malformed"),
        (paypal.TRANSMISSION_ID_HEADER, "a|b", "malformed"),
        (
            paypal.CERT_URL_HEADER,
            "http://api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
            "scheme",
        ),
        (paypal.CERT_URL_HEADER, "https://evil.example/v1/notifications/certs/CERT-1", "host"),
        (
            paypal.CERT_URL_HEADER,
            "https://api.paypal.com.evil.example/v1/notifications/certs/CERT-1",
            "host",
        ),
        (
            paypal.CERT_URL_HEADER,
            "https://api.paypal.com:8443/v1/notifications/certs/CERT-1",
            "host",
        ),
        (paypal.CERT_URL_HEADER, "https://x@api.paypal.com/v1/notifications/certs/CERT-1", "host"),
        (paypal.CERT_URL_HEADER, "https://api.paypal.com/v1/oauth2/token", "url"),
        (
            paypal.CERT_URL_HEADER,
            "https://api.paypal.com/v1/notifications/certs/../../oauth2/token",
            "url",
        ),
        (paypal.CERT_URL_HEADER, "https://api.paypal.com/v1/notifications/certs/CERT-1?x=1", "url"),
    ],
)
def test_bad_headers_are_refused_without_a_download(pki, now, header, value, expected):
    source, fetch = source_for(pki)
    headers = headers_at(now)
    headers[header] = value
    assert reason(BODY, headers, source, now) == expected
    assert fetch.calls == []


@pytest.mark.parametrize("header", paypal.SIGNATURE_HEADERS)
def test_each_missing_header_is_named(pki, now, header):
    source, _ = source_for(pki)
    headers = headers_at(now)
    del headers[header]
    with pytest.raises(SignatureError, match=header) as caught:
        verify(BODY, headers, source, now)
    assert caught.value.reason == "missing"


def _serve(pki, leaf: x509.Certificate, *, intermediate: bool = True) -> dict[str, bytes]:
    pem = leaf.public_bytes(Encoding.PEM)
    return {
        pe.CERT_URL: pem + (pki.intermediate.public_bytes(Encoding.PEM) if intermediate else b"")
    }


def test_an_expired_or_not_yet_valid_certificate_is_refused(pki, now):
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    expired = pki.leaf_with(
        not_before=at - dt.timedelta(days=400), not_after=at - dt.timedelta(seconds=1)
    )
    early = pki.leaf_with(
        not_before=at + dt.timedelta(hours=1), not_after=at + dt.timedelta(days=300)
    )
    for leaf in (expired, early):
        source, _ = source_for(pki, _serve(pki, leaf))
        assert reason(BODY, headers_at(now), source, now) == "expired"


@pytest.mark.parametrize(
    "names",
    [
        {"subject": "www.paypal.com"},
        {"subject": "messageverificationcerts.paypal.com.evil.example"},
        {
            "subject": "evil.example",
            "san": pe.SANDBOX_SUBJECT,
        },  # the name in SAN only, another in CN
        {"subject": pe.SANDBOX_SUBJECT, "san": "evil.example"},  # the name in CN only
    ],
)
def test_a_certificate_for_another_subject_is_refused(pki, now, names):
    source, _ = source_for(pki, _serve(pki, pki.leaf_with(**names)))
    assert reason(BODY, headers_at(now), source, now) == "subject"


def test_the_live_subject_is_accepted_too(pki, now):
    source, _ = source_for(
        pki, _serve(pki, pki.leaf_with(subject="messageverificationcerts.paypal.com"))
    )
    assert verify(BODY, headers_at(now), source, now) == 0


def test_a_certificate_that_does_not_chain_to_a_trusted_root_is_refused(pki, now):
    # what a forger makes: PayPal's name, their own CA (or none)
    forger = pe.make_pki()
    untrusted = {pe.CERT_URL: forger.leaf_pem()}
    self_signed = pe.issue_leaf(
        forger.leaf, forger.leaf_key, forger.leaf_key
    )  # issuer = subject, own key
    assert self_signed.issuer == self_signed.subject
    for served in (untrusted, {pe.CERT_URL: self_signed.public_bytes(Encoding.PEM)}):
        source, _ = source_for(pki, served)
        assert reason(BODY, headers_at(now, pki=forger), source, now) == "chain"


def test_a_leaf_without_its_intermediate_needs_one_from_configuration_or_its_issuer(pki, now):
    leaf_only = {pe.CERT_URL: pki.leaf_pem(with_intermediate=False)}
    source, _ = source_for(pki, leaf_only)
    assert reason(BODY, headers_at(now), source, now) == "chain"

    configured, _ = source_for(pki, leaf_only, intermediates=[pki.intermediate])
    assert verify(BODY, headers_at(now), configured, now) == 0

    # PayPal serves the leaf alone; its "CA issuers" address (DigiCert's, allowlisted) has the intermediate
    issuer_url = "http://cacerts.digicert.com/payhooksTestEVServerCA.crt"
    with_aia = pki.leaf_with(ca_issuers_url=issuer_url)
    served = {
        pe.CERT_URL: with_aia.public_bytes(Encoding.PEM),
        issuer_url: pki.intermediate.public_bytes(Encoding.DER),
    }
    source, fetch = source_for(pki, served)
    assert verify(BODY, headers_at(now), source, now) == 0
    assert fetch.calls == [pe.CERT_URL, issuer_url]

    elsewhere = "http://cacerts.evil.example/intermediate.crt"
    with_bad_aia = pki.leaf_with(ca_issuers_url=elsewhere)
    source, fetch = source_for(
        pki, {pe.CERT_URL: with_bad_aia.public_bytes(Encoding.PEM), elsewhere: b""}
    )
    assert reason(BODY, headers_at(now), source, now) == "chain"
    assert elsewhere not in fetch.calls


def test_a_certificate_address_that_paypal_does_not_serve_is_refused(pki, now):
    source, _ = source_for(pki, {})
    assert reason(BODY, headers_at(now), source, now) == "certificate"


def test_a_download_failure_is_unavailable_not_a_bad_signature(pki, now):
    fetch = Fetcher(error=ProviderUnavailableError("PayPal did not answer in time (ReadTimeout)"))
    source = paypal.CertificateSource(fetch, roots=[pki.root])
    with pytest.raises(VerificationUnavailableError):
        verify(BODY, headers_at(now), source, now)


def test_errors_name_what_is_wrong_never_the_values(pki, now):
    source, _ = source_for(pki)
    headers = headers_at(now)
    headers[paypal.CERT_URL_HEADER] = (
        "https://zq7c4n4ry.example/v1/notifications/certs/CERT-zq7c4n4ry"
    )
    headers[paypal.TRANSMISSION_ID_HEADER] = "zq7c4n4ry-transmission"
    with pytest.raises(SignatureError) as caught:
        verify(BODY, headers, source, now)
    assert "c4n4ry" not in str(caught.value)
    headers = headers_at(now)
    headers[paypal.TRANSMISSION_SIG_HEADER] = "zq7c4n4ry!!"
    with pytest.raises(SignatureError) as caught:
        verify(BODY, headers, source, now)
    assert "c4n4ry" not in str(caught.value)


# -- caching ---------------------------------------------------------------------------------


def test_the_shared_store_spares_other_processes_the_download(pki, now):
    store = paypal.MemoryStore()
    first, first_fetch = source_for(pki, store=store)
    assert verify(BODY, headers_at(now), first, now) == 0
    assert store.sets == 1
    second, second_fetch = source_for(pki, store=store)  # another process, same Redis
    assert verify(BODY, headers_at(now), second, now) == 0
    assert (first_fetch.calls, second_fetch.calls) == ([pe.CERT_URL], [])


def test_what_the_shared_store_holds_is_checked_again(pki, now):
    store = paypal.MemoryStore()
    first, _ = source_for(pki, store=store)
    verify(BODY, headers_at(now), first, now)
    [key] = store._items
    forger = pe.make_pki()
    store.set(key, forger.leaf_pem(), 3600)  # a poisoned cache: re-downloaded, not trusted
    second, second_fetch = source_for(pki, store=store)
    assert verify(BODY, headers_at(now), second, now) == 0
    assert second_fetch.calls == [pe.CERT_URL]


def test_a_cached_certificate_is_not_used_past_its_expiry(pki, now):
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    short = pki.leaf_with(
        not_before=at - dt.timedelta(days=1), not_after=at + dt.timedelta(seconds=100)
    )
    source, fetch = source_for(pki, _serve(pki, short))
    assert verify(BODY, headers_at(now), source, now) == 0
    later = now + 200
    assert reason(BODY, headers_at(later), source, later) == "expired"
    assert len(fetch.calls) == 2  # looked again, in case PayPal replaced it


def test_downloads_of_unknown_certificates_are_limited_per_minute(pki, now):
    source, fetch = source_for(pki, max_downloads_per_minute=3)
    for n in range(3):  # forged deliveries naming certificates PayPal does not serve
        headers = headers_at(now)
        headers[paypal.CERT_URL_HEADER] = (
            f"https://api.paypal.com/v1/notifications/certs/CERT-forged-{n}"
        )
        assert reason(BODY, headers, source, now) == "certificate"
    with pytest.raises(VerificationUnavailableError):
        verify(BODY, headers_at(now), source, now)
    assert len(fetch.calls) == 3
    assert verify(BODY, headers_at(now + 61), source, now + 61) == 0  # a minute later


def test_the_memory_store_expires_entries():
    clock = [1000.0]
    store = paypal.MemoryStore(clock=lambda: clock[0])
    store.set("k", b"v", 10)
    assert store.get("k") == b"v"
    clock[0] += 10
    assert store.get("k") is None


# -- PayPal's own deliveries --------------------------------------------------------------

LIVE = json.loads((pe.FIXTURES_DIR / "live_deliveries.json").read_text())
DIGICERT = [
    x509.load_pem_x509_certificate((pe.FIXTURES_DIR / name).read_bytes())
    for name in ("digicert_sha2_ev_server_ca.pem", "digicert_high_assurance_ev_root_ca.pem")
]


@pytest.mark.parametrize("event_type", sorted(LIVE["deliveries"]))
def test_deliveries_signed_by_paypal_verify_with_paypals_certificate_chain(event_type):
    delivery = LIVE["deliveries"][event_type]
    body, headers = delivery["body"].encode(), delivery["headers"]
    sent = dt.datetime.fromisoformat(headers["paypal-transmission-time"]).timestamp()
    fetch = Fetcher({url: pem.encode() for url, pem in LIVE["certificates"].items()})
    intermediate, root = DIGICERT
    source = paypal.CertificateSource(fetch, roots=[root], intermediates=[intermediate])

    assert (
        paypal.verify(
            body,
            headers,
            ["ROTATED", LIVE["webhook_id"]],
            certificates=source,
            tolerance=300,
            now=sent + 3,
        )
        == 1
    )
    with pytest.raises(SignatureError) as caught:  # one byte more: another CRC32
        paypal.verify(
            body + b" ",
            headers,
            [LIVE["webhook_id"]],
            certificates=source,
            tolerance=300,
            now=sent + 3,
        )
    assert caught.value.reason == "mismatch"
    # the certificate expired on 2025-03-07: a year later the same delivery is refused
    later = sent + 365 * 86400
    stale_ok = paypal.CertificateSource(fetch, roots=[root], intermediates=[intermediate])
    with pytest.raises(SignatureError) as caught:
        paypal.verify(
            body, headers, [LIVE["webhook_id"]], certificates=stale_ok, tolerance=10**9, now=later
        )
    assert caught.value.reason == "expired"
