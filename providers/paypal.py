"""PayPal: verify a delivery, parse an event, translate it into changes.

Verification, offline (the default): PayPal signs
``<transmission id>|<transmission time>|<webhook id>|<CRC32 of the raw body, unsigned, in decimal>``
with SHA256withRSA and names the signing certificate in ``PAYPAL-CERT-URL``.
The certificate is taken only from PayPal's own hosts over https, must chain to
a trusted root (intermediates from the response, from configuration, or from
the leaf's "CA issuers" address on an allowlisted CA host), name one of
PayPal's two message-verification subjects, and be valid now. Certificates are
cached in process and in a shared store (Redis, for the other processes), so
the hot path makes no network call after the first delivery of a certificate;
whatever comes from the shared store is checked again before it is trusted.
Every configured webhook id is tried (several while rotating, or sandbox and
live together). ``verify_online`` asks PayPal's verify-webhook-signature API
instead. A delivery that cannot be checked now (certificate or API out of
reach) raises ``VerificationUnavailableError``: answer 503, never 200 unchecked.

Translation: handlers are pure functions of the event, listed in ``HANDLERS``.
A PayPal order is the payment's ``session_id``; its capture, which refunds and
disputes name, is its ``payment_id``. Who bought how many credits travels in
the purchase unit's ``custom_id`` (``encode_custom_id``). Amounts are decimal
strings, converted exactly into the currency's ISO 4217 minor units.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import Protocol
from urllib.parse import urlsplit

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from providers.changes import (
    CaptureRequested,
    Change,
    DisputeClosed,
    DisputeOpened,
    Ignored,
    InvalidEventError,
    PaymentCanceled,
    PaymentExpired,
    PaymentFailed,
    PaymentProcessing,
    PaymentRef,
    PaymentSucceeded,
    ProviderEvent,
    Purchase,
    RefundChanged,
    Refunded,
    SignatureError,
)
from providers.errors import (
    ProviderRequestError,
    ProviderUnavailableError,
    VerificationUnavailableError,
)

NAME = "paypal"

# -- verification ---------------------------------------------------------------------

TRANSMISSION_ID_HEADER = "PAYPAL-TRANSMISSION-ID"
TRANSMISSION_TIME_HEADER = "PAYPAL-TRANSMISSION-TIME"
TRANSMISSION_SIG_HEADER = "PAYPAL-TRANSMISSION-SIG"
CERT_URL_HEADER = "PAYPAL-CERT-URL"
AUTH_ALGO_HEADER = "PAYPAL-AUTH-ALGO"
SIGNATURE_HEADERS = (
    TRANSMISSION_ID_HEADER,
    TRANSMISSION_TIME_HEADER,
    TRANSMISSION_SIG_HEADER,
    CERT_URL_HEADER,
    AUTH_ALGO_HEADER,
)
AUTH_ALGO = "SHA256withRSA"  # the only one PayPal uses; SHA1withRSA is refused

LIVE_CERT_HOSTS = frozenset({"api.paypal.com", "api-m.paypal.com"})
SANDBOX_CERT_HOSTS = frozenset({"api.sandbox.paypal.com", "api-m.sandbox.paypal.com"})
CERT_HOSTS = LIVE_CERT_HOSTS | SANDBOX_CERT_HOSTS
CERT_PATH = "/v1/notifications/certs/"
CERT_SUBJECTS = (
    "messageverificationcerts.paypal.com",
    "messageverificationcerts.sandbox.paypal.com",
)
# Where DigiCert, PayPal's CA, publishes its intermediates (the leaf's "CA issuers" address).
AIA_HOSTS = frozenset({"cacerts.digicert.com"})
MAX_CERT_BYTES = 64 * 1024
CERT_CACHE_SECONDS = 24 * 3600  # at most; never past the certificate's own expiry
_CERT_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
_TRANSMISSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_MAX_SIGNATURE = 2048


class CertificateStore(Protocol):
    """A shared cache the processes of one deployment see (Redis, in production)."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: int) -> None: ...


class MemoryStore:
    """A ``CertificateStore`` in a dict, with expiry: for tests and single-process runs."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._items: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self.sets = 0

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[1] <= self._clock():
                self._items.pop(key, None)
                return None
            return item[0]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        with self._lock:
            self.sets += 1
            self._items[key] = (value, self._clock() + ttl)


@dataclass(frozen=True)
class _Trusted:
    certificate: x509.Certificate
    valid_until: float


class CertificateSource:
    """PayPal's signing certificates: allowlisted, checked, cached in process and in ``store``.

    ``fetch(url) -> bytes`` downloads a certificate (``PayPalAPI.fetch_certificate``);
    it raises ``ProviderUnavailableError`` when it cannot now and
    ``ProviderRequestError`` when PayPal refuses. ``roots`` are the trust anchors
    (``default_roots()``: the certifi bundle); ``intermediates`` are extra CA
    certificates to build chains with.
    """

    def __init__(
        self,
        fetch: Callable[[str], bytes],
        *,
        roots: Sequence[x509.Certificate],
        intermediates: Sequence[x509.Certificate] = (),
        store: CertificateStore | None = None,
        hosts: frozenset[str] = CERT_HOSTS,
        subjects: Sequence[str] = CERT_SUBJECTS,
        aia_hosts: frozenset[str] = AIA_HOSTS,
        clock: Callable[[], float] = time.time,
        max_entries: int = 64,
        max_downloads_per_minute: int = 10,
    ) -> None:
        if not roots:
            raise ValueError("a certificate source needs at least one trusted root")
        self._fetch = fetch
        self._store = Store(list(roots))
        self._intermediates = list(intermediates)
        self._shared = store
        self._hosts = frozenset(h.lower() for h in hosts)
        self._subjects = tuple(subjects)
        self._aia_hosts = frozenset(h.lower() for h in aia_hosts)
        self._clock = clock
        self._max_entries = max_entries
        self._trusted: dict[str, _Trusted] = {}
        self._issuers: dict[str, x509.Certificate] = {}  # AIA downloads, by address
        self._lock = threading.Lock()
        # Forged deliveries may name any certificate on PayPal's hosts: each unknown one
        # costs a download, so only so many per minute; past that, "try again later".
        self._max_downloads = max_downloads_per_minute
        self._downloads: deque[float] = deque()
        self.fetches = 0  # network downloads of certificates (not AIA), for tests and metrics

    def get(self, url: str, *, now: float | None = None) -> x509.Certificate:
        """The checked signing certificate at ``url``; SignatureError if it is not PayPal's."""
        now = self._clock() if now is None else now
        cached = self._trusted.get(url)  # only addresses that passed check_cert_url are kept
        if cached is not None and now < cached.valid_until:
            return cached.certificate
        check_cert_url(url, self._hosts)
        with self._lock:  # one download per certificate, however many deliveries wait for it
            cached = self._trusted.get(url)
            if cached is not None and now < cached.valid_until:
                return cached.certificate
            key = "payhooks:paypal:cert:" + hashlib.sha256(url.encode()).hexdigest()
            shared = self._shared.get(key) if self._shared is not None else None
            if shared is not None:
                try:
                    trusted, _ = self._check(shared, now)
                except SignatureError:
                    shared = None  # stale or damaged: download it again
                else:
                    return self._remember(url, trusted)
            while self._downloads and self._downloads[0] <= now - 60:
                self._downloads.popleft()
            if len(self._downloads) >= self._max_downloads:
                raise VerificationUnavailableError("too many certificate downloads this minute")
            self._downloads.append(now)
            self.fetches += 1
            try:
                pem = self._fetch(url)
            except ProviderUnavailableError as exc:
                raise VerificationUnavailableError(
                    "PayPal's signing certificate could not be downloaded now"
                ) from exc
            except ProviderRequestError:
                raise SignatureError(
                    f"{CERT_URL_HEADER} names no certificate PayPal serves", "certificate"
                ) from None
            trusted, bundle = self._check(pem, now)
            if self._shared is not None:
                ttl = int(min(trusted.valid_until - now, CERT_CACHE_SECONDS))
                if ttl > 0:
                    self._shared.set(key, bundle, ttl)
            return self._remember(url, trusted)

    def _remember(self, url: str, trusted: _Trusted) -> x509.Certificate:
        if len(self._trusted) >= self._max_entries and url not in self._trusted:
            self._trusted.pop(next(iter(self._trusted)))
        self._trusted[url] = trusted
        return trusted.certificate

    def _check(self, data: bytes, now: float) -> tuple[_Trusted, bytes]:
        """The leaf of a PEM bundle, checked; and the bundle (leaf and the intermediates used) to share."""
        if len(data) > MAX_CERT_BYTES:
            raise SignatureError("the signing certificate is too large", "certificate")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise SignatureError("the signing certificate is not PEM", "certificate") from None
        leaf, extra = certs[0], certs[1:]
        at = datetime.fromtimestamp(now, UTC)
        if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
            raise SignatureError("the signing certificate is expired or not yet valid", "expired")
        subject = self._subject(leaf)
        if subject is None:
            raise SignatureError(
                "the signing certificate is not PayPal's message-verification certificate",
                "subject",
            )
        if not isinstance(leaf.public_key(), rsa.RSAPublicKey):
            raise SignatureError("the signing certificate has no RSA key", "certificate")
        verifier = (
            PolicyBuilder().store(self._store).time(at).build_server_verifier(x509.DNSName(subject))
        )
        intermediates = [*extra, *self._intermediates]
        try:
            chain = verifier.verify(leaf, intermediates)
        except VerificationError:
            issuers = self._aia_issuers(leaf, intermediates)
            if not issuers:
                raise SignatureError(
                    "the signing certificate does not chain to a trusted root", "chain"
                ) from None
            try:
                chain = verifier.verify(leaf, [*intermediates, *issuers])
            except VerificationError:
                raise SignatureError(
                    "the signing certificate does not chain to a trusted root", "chain"
                ) from None
        valid_until = min(c.not_valid_after_utc for c in chain).timestamp()
        bundle = b"".join(c.public_bytes(Encoding.PEM) for c in chain[:-1])  # the root stays local
        return _Trusted(leaf, valid_until), bundle

    def _subject(self, leaf: x509.Certificate) -> str | None:
        """The allowed name the certificate is for: in its subjectAltName, else its common name."""
        try:
            names = leaf.extensions.get_extension_for_oid(
                ExtensionOID.SUBJECT_ALTERNATIVE_NAME
            ).value
            dns = [n.lower() for n in names.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            dns = []
        common = [
            a.value.lower()
            for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if isinstance(a.value, str)
        ]
        for subject in self._subjects:
            # the chain check below requires the name in subjectAltName, as TLS does
            if subject in dns and (not common or subject in common):
                return subject
        return None

    def _aia_issuers(
        self, leaf: x509.Certificate, known: list[x509.Certificate]
    ) -> list[x509.Certificate]:
        """Intermediates named by "CA issuers" addresses on allowlisted CA hosts (two levels at most)."""
        found: list[x509.Certificate] = []
        cert = leaf
        for _ in range(2):
            url = _ca_issuers(cert)
            if url is None or (urlsplit(url).hostname or "").lower() not in self._aia_hosts:
                break
            issuer = self._issuers.get(url)
            if issuer is None:
                try:
                    data = self._fetch(url)
                except ProviderUnavailableError as exc:
                    raise VerificationUnavailableError(
                        "the signing certificate's issuer could not be downloaded now"
                    ) from exc
                except ProviderRequestError:
                    break
                issuer = _load_any(data)
                if issuer is None:
                    break
                self._issuers[url] = issuer
            if issuer in known or issuer in found:
                break
            found.append(issuer)
            cert = issuer
        return found


def _ca_issuers(cert: x509.Certificate) -> str | None:
    try:
        access = cert.extensions.get_extension_for_oid(
            ExtensionOID.AUTHORITY_INFORMATION_ACCESS
        ).value
    except x509.ExtensionNotFound:
        return None
    for description in access:
        if (
            description.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS
            and isinstance(description.access_location, x509.UniformResourceIdentifier)
        ):
            return description.access_location.value
    return None


def _load_any(data: bytes) -> x509.Certificate | None:
    if len(data) > MAX_CERT_BYTES:
        return None
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        try:
            return x509.load_pem_x509_certificates(data)[0]
        except ValueError:
            return None


def default_roots() -> list[x509.Certificate]:
    """The trust anchors of the certifi bundle (what httpx trusts for TLS)."""
    import certifi

    with open(certifi.where(), "rb") as bundle:
        return x509.load_pem_x509_certificates(bundle.read())


def check_cert_url(url: str, hosts: frozenset[str] = CERT_HOSTS) -> None:
    """Raise SignatureError unless ``url`` is a certificate address on one of PayPal's hosts."""
    if not isinstance(url, str) or len(url) > 500:
        raise SignatureError(f"malformed {CERT_URL_HEADER} header", "malformed")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SignatureError(f"malformed {CERT_URL_HEADER} header", "malformed") from None
    if parts.scheme != "https":
        raise SignatureError(f"{CERT_URL_HEADER} is not https", "scheme")
    if (
        (parts.hostname or "").lower() not in hosts
        or port not in (None, 443)
        or parts.username
        or parts.password
    ):
        raise SignatureError(f"{CERT_URL_HEADER} is not on one of PayPal's hosts", "host")
    name = parts.path[len(CERT_PATH) :] if parts.path.startswith(CERT_PATH) else ""
    if not _CERT_NAME.fullmatch(name) or parts.query or parts.fragment:
        raise SignatureError(f"{CERT_URL_HEADER} is not a PayPal certificate address", "url")


@dataclass(frozen=True)
class Transmission:
    """The signature headers of one delivery, checked for shape."""

    id: str
    time: str
    signature: bytes
    cert_url: str
    auth_algo: str


def transmission(headers: Mapping[str, str], *, tolerance: int, now: float) -> Transmission:
    """Read and check the signature headers (presence, shape, algorithm, freshness)."""
    values = {name: _header(headers, name) for name in SIGNATURE_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise SignatureError(
            f"missing {', '.join(missing)} header{'s' if len(missing) > 1 else ''}", "missing"
        )
    if values[AUTH_ALGO_HEADER] != AUTH_ALGO:
        raise SignatureError(f"{AUTH_ALGO_HEADER} is not {AUTH_ALGO}", "algorithm")
    transmission_id = values[TRANSMISSION_ID_HEADER]
    if not _TRANSMISSION_ID.fullmatch(transmission_id):
        raise SignatureError(f"malformed {TRANSMISSION_ID_HEADER} header", "malformed")
    sent = _parse_time(values[TRANSMISSION_TIME_HEADER])
    if sent is None:
        raise SignatureError(f"malformed {TRANSMISSION_TIME_HEADER} header", "malformed")
    age = now - sent.timestamp()
    if age > tolerance:
        raise SignatureError("transmission time is older than the tolerance", "stale")
    if -age > tolerance:
        raise SignatureError(
            "transmission time is further in the future than the tolerance", "future"
        )
    encoded = values[TRANSMISSION_SIG_HEADER]
    try:
        signature = (
            base64.b64decode(encoded, validate=True) if len(encoded) <= _MAX_SIGNATURE else b""
        )
    except (binascii.Error, ValueError):
        signature = b""
    if not signature:
        raise SignatureError(f"malformed {TRANSMISSION_SIG_HEADER} header", "malformed")
    return Transmission(
        transmission_id,
        values[TRANSMISSION_TIME_HEADER],
        signature,
        values[CERT_URL_HEADER],
        AUTH_ALGO,
    )


def signed_message(
    transmission_id: str, transmission_time: str, webhook_id: str, body: bytes
) -> bytes:
    """What PayPal signs: ids and time as sent, and the body's CRC32 (unsigned, decimal)."""
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body)}".encode()


def verify(
    body: bytes,
    headers: Mapping[str, str],
    webhook_ids: Sequence[str],
    *,
    certificates: CertificateSource,
    tolerance: int,
    now: float,
) -> int:
    """Check a delivery offline; return the index of the webhook id it was signed for."""
    if not webhook_ids:
        raise SignatureError("no PayPal webhook id is configured", "unconfigured")
    sent = transmission(headers, tolerance=tolerance, now=now)
    key = certificates.get(sent.cert_url, now=now).public_key()
    assert isinstance(key, rsa.RSAPublicKey)  # CertificateSource admits RSA keys only
    for index, webhook_id in enumerate(webhook_ids):
        try:
            key.verify(
                sent.signature,
                signed_message(sent.id, sent.time, webhook_id, body),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            continue
        return index
    raise SignatureError("the signature matches no configured webhook id", "mismatch")


class VerificationAPI(Protocol):
    def verify_webhook_signature(
        self, *, body: bytes, headers: Mapping[str, str], webhook_id: str
    ) -> bool: ...


def verify_online(
    body: bytes,
    headers: Mapping[str, str],
    webhook_ids: Sequence[str],
    *,
    api: VerificationAPI,
    tolerance: int,
    now: float,
) -> int:
    """Check a delivery with PayPal's verify-webhook-signature API; the index of the webhook id it was for.

    Headers and freshness are checked here first, so a stale or malformed
    delivery costs no API call. PayPal out of reach: VerificationUnavailableError.
    """
    if not webhook_ids:
        raise SignatureError("no PayPal webhook id is configured", "unconfigured")
    sent = transmission(headers, tolerance=tolerance, now=now)
    check_cert_url(sent.cert_url)
    for index, webhook_id in enumerate(webhook_ids):
        try:
            if api.verify_webhook_signature(body=body, headers=headers, webhook_id=webhook_id):
                return index
        except ProviderUnavailableError as exc:
            raise VerificationUnavailableError(
                "PayPal could not be asked to verify the delivery now"
            ) from exc
        except ProviderRequestError:
            continue  # PayPal refuses to verify for this webhook id (unknown to the account)
    raise SignatureError(
        "PayPal does not confirm the signature for any configured webhook id", "mismatch"
    )


def sign(
    body: bytes,
    private_key: rsa.RSAPrivateKey,
    *,
    webhook_id: str,
    cert_url: str,
    transmission_id: str,
    transmission_time: str,
) -> dict[str, str]:
    """The signature headers PayPal would send with ``body`` (tests sign with their own key and certificate)."""
    signature = private_key.sign(
        signed_message(transmission_id, transmission_time, webhook_id, body),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    return {
        TRANSMISSION_ID_HEADER: transmission_id,
        TRANSMISSION_TIME_HEADER: transmission_time,
        TRANSMISSION_SIG_HEADER: base64.b64encode(signature).decode(),
        CERT_URL_HEADER: cert_url,
        AUTH_ALGO_HEADER: AUTH_ALGO,
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict: header names are case-insensitive
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value.strip() if isinstance(value, str) else None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# -- amounts ----------------------------------------------------------------------

# ISO 4217 exponents that are not 2. PayPal supports few currencies, but an
# amount is converted by its currency's rule whatever it is.
_ZERO_DECIMAL = frozenset(
    {
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "ISK",
        "JPY",
        "KMF",
        "KRW",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    }
)
_THREE_DECIMAL = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})
# PayPal takes no decimals for these, though ISO 4217 gives HUF and TWD two:
# amounts sent to PayPal must be whole units (PayPal's currency-codes reference).
WHOLE_UNITS_ONLY = frozenset({"HUF", "JPY", "TWD"})
MAX_MINOR_UNITS = 10**15
_AMOUNT = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,6})?")
_EXACT = Context(prec=64, traps=[Inexact, InvalidOperation])


def minor_unit(currency: str) -> int:
    """Decimal places of a currency's minor unit (ISO 4217): 0 for JPY, 3 for KWD, else 2."""
    code = currency.upper()
    return 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2


def to_minor_units(value: str, currency: str) -> int:
    """An amount string in minor units, exactly; ValueError if it has more decimals than the currency."""
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise ValueError("not a non-negative decimal string")
    with localcontext(_EXACT):
        scaled = Decimal(value).scaleb(minor_unit(currency))
        if scaled != scaled.to_integral_value():
            raise ValueError(f"more decimals than {currency.upper()} has")
        return int(scaled)


def to_paypal_value(amount: int, currency: str) -> str:
    """Minor units as the decimal string PayPal takes; ValueError for a fraction PayPal refuses."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError("an amount is a non-negative integer of minor units")
    exponent = minor_unit(currency)
    places = 0 if currency.upper() in WHOLE_UNITS_ONLY else exponent
    with localcontext(_EXACT):
        value = Decimal(amount).scaleb(-exponent)
        if places < exponent and value != value.to_integral_value():
            raise ValueError(f"PayPal takes whole units of {currency.upper()}")
        return f"{value:.{places}f}"


def _money(value: object, name: str) -> tuple[int, str] | None:
    """A PayPal money object as (minor units, lowercase currency); None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidEventError(f"{name} is not a money object: {_shape(value)}")
    currency, amount = value.get("currency_code"), value.get("value")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise InvalidEventError(
            f"{name}.currency_code is not a three-letter code: {_shape(currency)}"
        )
    try:
        minor = to_minor_units(amount, currency)
    except ValueError as exc:
        raise InvalidEventError(
            f"{name}.value is not an amount of {currency.upper()}: {_shape(amount)}, {exc}"
        ) from None
    if minor > MAX_MINOR_UNITS:
        raise InvalidEventError(f"{name}.value is out of range: {_shape(amount)}")
    return minor, currency.lower()


# -- custom_id: who bought how many credits ------------------------------------

MAX_CUSTOM_ID = 127  # Orders v2: purchase_units[].custom_id
MAX_CREDITS = 10**12
_DIGITS = re.compile(r"[0-9]+")


def encode_custom_id(*, user_id: str, credits: int, package_id: str | None = None) -> str:
    """The ``custom_id`` payhooks puts on an order's purchase unit: compact JSON, at most 127 characters."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError("user_id must be a non-empty string")
    if isinstance(credits, bool) or not isinstance(credits, int) or not 0 < credits <= MAX_CREDITS:
        raise ValueError(f"credits must be an integer between 1 and {MAX_CREDITS}")
    facts: dict[str, object] = {"user_id": user_id, "credits": credits}
    if package_id:
        facts["package_id"] = package_id
    encoded = orjson.dumps(facts).decode()
    if len(encoded) > MAX_CUSTOM_ID:
        raise ValueError(
            f"custom_id would be {len(encoded)} characters; PayPal takes at most {MAX_CUSTOM_ID}"
        )
    return encoded


def decode_custom_id(value: object) -> Purchase:
    """The purchase a ``custom_id`` names; unknowns when it is absent or another integration's."""
    if value is None or (isinstance(value, str) and not value.startswith("{")):
        return Purchase()
    if not isinstance(value, str):
        raise InvalidEventError(f"custom_id is not a string: {_shape(value)}")
    try:
        facts = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidEventError(
            f"custom_id is not the JSON payhooks writes: {_shape(value)}"
        ) from None
    if not isinstance(facts, dict):
        raise InvalidEventError(f"custom_id is not a JSON object: {_shape(facts)}")
    user_id = facts.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or not user_id.strip()):
        raise InvalidEventError(f"custom_id.user_id is not a non-empty string: {_shape(user_id)}")
    package_id = facts.get("package_id")
    return Purchase(
        user_id=user_id,
        credits=_credits(facts.get("credits")),
        package_id=package_id if isinstance(package_id, str) and package_id else None,
    )


def _credits(value: object) -> int | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _DIGITS.fullmatch(text.strip()):
        raise InvalidEventError(f"custom_id.credits is not a positive integer: {_shape(value)}")
    credits = int(text)
    if not 0 < credits <= MAX_CREDITS:
        raise InvalidEventError(
            f"custom_id.credits must be between 1 and {MAX_CREDITS}: {_shape(credits)}"
        )
    return credits


# -- parsing ---------------------------------------------------------------------


def parse_event(body: bytes | str) -> ProviderEvent:
    """Decode an event body; raise InvalidEventError unless it is a JSON PayPal webhook event."""
    raw = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "nested too deeply" if "recursion" in str(exc).lower() else "not JSON"
        raise InvalidEventError(f"body is {reason}") from None
    if not isinstance(event, dict):
        raise InvalidEventError("body is not a JSON object")
    event_id, event_type = event.get("id"), event.get("event_type")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEventError("event has no string id")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEventError("event has no string event_type")
    resource = event.get("resource")
    if not isinstance(resource, dict):
        raise InvalidEventError("event has no resource object")
    create_time = event.get("create_time")
    if create_time is not None and not isinstance(create_time, str):
        raise InvalidEventError(f"create_time is not a string: {_shape(create_time)}")
    data = {"object": resource}
    for name in ("resource_type", "resource_version", "event_version"):
        if isinstance(event.get(name), str):
            data[name] = event[name]
    return ProviderEvent(
        provider=NAME,
        id=event_id,
        type=event_type,
        # PayPal's own simulator has sent impossible dates ("2018-19-12"): unknown, not fatal
        created=_parse_time(create_time),
        data=data,
        raw=raw,
    )


# -- handlers: event -> change --------------------------------------------------

REFUND_STATUSES = {
    "COMPLETED": "succeeded",
    "PENDING": "pending",
    "FAILED": "failed",
    "CANCELLED": "canceled",
}
# dispute_outcome.outcome_code -> did the merchant keep the money?
DISPUTE_WON = {
    "RESOLVED_SELLER_FAVOUR": True,
    "CANCELED_BY_BUYER": True,
    "DENIED": True,  # the buyer's claim was denied
    # PayPal paid the buyer out of its own funds; the merchant was not debited
    "RESOLVED_WITH_PAYOUT": True,
    "RESOLVED_BUYER_FAVOUR": False,
    "ACCEPTED": False,  # the merchant accepted the claim: the disputed amount went back
}
_UP_CAPTURE = re.compile(r"/v2/payments/captures/([A-Za-z0-9-]{1,64})/?$")
_UP_ORDER = re.compile(r"/v2/checkout/orders/([A-Za-z0-9-]{1,64})/?$")
_CODE = re.compile(r"[0-9A-Z_]{1,64}")


def capture_request_id(order_id: str, approval: str | None = None) -> str:
    """The ``PayPal-Request-Id`` of the capture an approval event (its id) asks for.

    The same for every attempt at that approval, so PayPal captures once and a
    card it declined is not tried again however often the held approval is
    retried: PayPal answers a repeated id with its earlier answer. A new
    approval event — the buyer sent back after ``INSTRUMENT_DECLINED``, as
    PayPal advises, approving with another funding source — asks with a new id.
    Not the order's ``update_time``: nothing says PayPal leaves it alone on a
    refused capture, and a new id at every retry would try the card each time.
    """
    if not approval:
        return f"payhooks-capture-{order_id}"
    return f"payhooks-capture-{order_id}-{hashlib.sha256(approval.encode()).hexdigest()[:16]}"


def checkout_order_approved(event: ProviderEvent) -> Change:
    """The buyer approved an order: capture it (outside any transaction), unless it already was."""
    change = order_outcome(event.data["object"])
    if isinstance(change, CaptureRequested):
        change = replace(change, request_id=capture_request_id(change.ref.session_id, event.id))
    return change


def order_outcome(order: dict) -> Change:
    """What an order says now (an approval's resource, a capture's answer, an order read for recovery)."""
    order_id = _required_id(order, "order")
    intent = order.get("intent")
    if intent is not None and intent != "CAPTURE":
        return Ignored(
            "an order to authorize, not to capture: payhooks captures CAPTURE orders only"
        )
    unit = _first(order.get("purchase_units"))
    purchase = replace(_unit_purchase(unit), email=_payer_email(order))
    capture = _latest_capture(unit)
    if capture is not None:
        return _capture_change(capture, order_id, purchase)
    status = order.get("status")
    if status == "VOIDED":
        return PaymentCanceled(PaymentRef(session_id=order_id), reason="order voided")
    if status in (None, "APPROVED", "COMPLETED"):
        return CaptureRequested(
            PaymentRef(session_id=order_id),
            request_id=capture_request_id(order_id),
            purchase=purchase,
        )
    return Ignored("order not approved by the buyer yet")


def with_capture(event: ProviderEvent, order: dict) -> ProviderEvent:
    """The approval event as if its order carried the capture the API answered (``capture_order``)."""
    if not isinstance(order, dict) or order.get("id") != event.data["object"].get("id"):
        raise ValueError("the captured order is not the approved one")
    return replace(event, data={**event.data, "object": order})


def look_up(api, order_id: str, waiting: Sequence[ProviderEvent] = ()) -> dict:
    """What an approval held under the order's lookup key waits for (application/lookups.py): its capture.

    Captured with the ``PayPal-Request-Id`` of the newest approval waiting
    (``capture_request_id``), the same however often this runs for it, so
    PayPal captures once. A capture PayPal refuses (declined, voided, expired)
    leaves the order as it stands, which is read instead; an order with no
    capture to apply yet is a ``ProviderRequestError``, and the approval stays
    held (the periodic retry of held events tries again).
    """
    approvals = [event.id for event in waiting if event.type == "CHECKOUT.ORDER.APPROVED"]
    request_id = capture_request_id(order_id, approvals[-1] if approvals else None)
    try:
        order = api.capture_order(order_id, request_id=request_id)
    except ProviderRequestError:
        order = api.get_order(order_id)
    status = order.get("status")
    if _latest_capture(_first(order.get("purchase_units"))) is None and status != "VOIDED":
        raise ProviderRequestError(f"order {order_id} is {_code(status) or 'unknown'} and has no capture yet")
    return order


def payment_capture_completed(event: ProviderEvent) -> Change:
    capture = event.data["object"]
    return _capture_change({**capture, "status": "COMPLETED"}, _capture_order(capture), None)


def payment_capture_pending(event: ProviderEvent) -> Change:
    capture = event.data["object"]
    return _capture_change({**capture, "status": "PENDING"}, _capture_order(capture), None)


def payment_capture_failed(event: ProviderEvent) -> Change:
    """PAYMENT.CAPTURE.DENIED and .DECLINED: the money was not taken."""
    capture = event.data["object"]
    status = "DECLINED" if event.type.endswith("DECLINED") else "DENIED"
    return _capture_change({**capture, "status": status}, _capture_order(capture), None)


def payment_capture_refunded(event: ProviderEvent) -> Change:
    """PAYMENT.CAPTURE.REFUNDED and .REVERSED: the resource is the refund (a reversal is one too)."""
    refund = event.data["object"]
    refund_id = _required_id(refund, "refund")
    capture_id = _refunded_capture(refund)
    if capture_id is None:
        raise InvalidEventError("refund names no capture (no links[rel=up] to a capture)")
    ref = PaymentRef(session_id=_related(refund, "order_id"), payment_id=capture_id)
    amount = _money(refund.get("amount"), "refund.amount")
    if amount is None:
        raise InvalidEventError("refund has no amount")
    status = refund.get("status", "COMPLETED")
    if not isinstance(status, str) or status not in REFUND_STATUSES:
        raise InvalidEventError("refund.status is not a known refund status")
    breakdown = refund.get("seller_payable_breakdown")
    total = (
        _money(breakdown.get("total_refunded_amount"), "refund.total_refunded_amount")
        if isinstance(breakdown, dict)
        else None
    )
    if status == "COMPLETED" and total is not None and total[1] == amount[1]:
        # cumulative: right whatever order the refunds of one capture arrive in
        return Refunded(ref, refunded_cents=total[0])
    return RefundChanged(
        ref, refund_id=refund_id, amount_cents=amount[0], status=REFUND_STATUSES[status]
    )


def checkout_payment_approval_reversed(event: ProviderEvent) -> Change:
    """Not captured in time: PayPal cancelled the order and gave the buyer the money back."""
    resource = event.data["object"]
    order_id = resource.get("order_id") or resource.get("id")
    if not isinstance(order_id, str) or not order_id:
        raise InvalidEventError("payment approval reversal names no order_id")
    unit = _first(resource.get("purchase_units"))
    return PaymentFailed(
        PaymentRef(session_id=order_id), _unit_purchase(unit), code="PAYMENT_APPROVAL_REVERSED"
    )


def customer_dispute_created(event: ProviderEvent) -> Change:
    dispute = event.data["object"]
    amount = _money(dispute.get("dispute_amount"), "dispute_amount")
    return DisputeOpened(
        _disputed_ref(dispute),
        dispute_id=_dispute_id(dispute),
        amount_cents=amount[0] if amount else None,
        reason=_code(dispute.get("reason")),
    )


def customer_dispute_resolved(event: ProviderEvent) -> Change:
    dispute = event.data["object"]
    outcome = (
        dispute.get("dispute_outcome") if isinstance(dispute.get("dispute_outcome"), dict) else {}
    )
    code = outcome.get("outcome_code")
    won = DISPUTE_WON.get(code) if isinstance(code, str) else None
    if won is None:
        return Ignored(f"dispute resolved with outcome {_code(code) or 'none'}: nothing to settle")
    amount = _money(dispute.get("dispute_amount"), "dispute_amount")
    return DisputeClosed(
        _disputed_ref(dispute),
        dispute_id=_dispute_id(dispute),
        won=won,
        amount_cents=amount[0] if amount else None,
        reason=_code(dispute.get("reason")),
    )


HANDLERS: dict[str, Callable[[ProviderEvent], Change]] = {
    "CHECKOUT.ORDER.APPROVED": checkout_order_approved,
    "CHECKOUT.PAYMENT-APPROVAL.REVERSED": checkout_payment_approval_reversed,
    "PAYMENT.CAPTURE.COMPLETED": payment_capture_completed,
    "PAYMENT.CAPTURE.PENDING": payment_capture_pending,
    "PAYMENT.CAPTURE.DENIED": payment_capture_failed,
    "PAYMENT.CAPTURE.DECLINED": payment_capture_failed,
    "PAYMENT.CAPTURE.REFUNDED": payment_capture_refunded,
    "PAYMENT.CAPTURE.REVERSED": payment_capture_refunded,
    "CUSTOMER.DISPUTE.CREATED": customer_dispute_created,
    "CUSTOMER.DISPUTE.RESOLVED": customer_dispute_resolved,
}

HANDLED_TYPES = tuple(HANDLERS)
with_lookup = with_capture

# Ours, never PayPal's: PayPal says nothing when an order nobody approved lapses,
# so the sweep (application/paypal_recovery.py) writes this for an order still
# unapproved, or no longer known, past its expiry. Not in HANDLERS: nobody
# subscribes to it, and reconciliation never finds it in PayPal's listing.
ORDER_EXPIRED = "PAYHOOKS.ORDER.EXPIRED"


def order_expired(event: ProviderEvent) -> Change:
    """An order left unapproved past its expiry: the checkout expired (an approval after all still pays)."""
    return PaymentExpired(PaymentRef(session_id=_required_id(event.data["object"], "order")))


_OURS: dict[str, Callable[[ProviderEvent], Change]] = {ORDER_EXPIRED: order_expired}


def translate(event: ProviderEvent) -> Change:
    """The change an event asks for; Ignored for types we do not act on."""
    handler = HANDLERS.get(event.type) or _OURS.get(event.type)
    if handler is None:
        return Ignored(f"{event.type} is not handled")
    return handler(event)


def _payer_email(order: dict) -> str | None:
    """The buyer's address on an order (``payer.email_address``), for e-mail receipts only."""
    payer = order.get("payer")
    email = payer.get("email_address") if isinstance(payer, dict) else None
    return email if isinstance(email, str) and email else None


def _capture_change(capture: dict, order_id: str | None, order_purchase: Purchase | None) -> Change:
    capture_id = _required_id(capture, "capture")
    ref = PaymentRef(session_id=order_id, payment_id=capture_id)
    amount = _money(capture.get("amount"), "capture.amount")
    purchase = decode_custom_id(capture.get("custom_id"))
    if (
        order_purchase is not None
    ):  # the order's unit knows the price asked and may carry the custom_id
        purchase = Purchase(
            user_id=purchase.user_id or order_purchase.user_id,
            credits=purchase.credits or order_purchase.credits,
            amount_cents=order_purchase.amount_cents,
            currency=order_purchase.currency,
            package_id=purchase.package_id or order_purchase.package_id,
            line_items=(),
            email=order_purchase.email,
        )
    else:  # PayPal lists no line items to look up; the capture's amount is the price
        purchase = replace(
            purchase,
            amount_cents=amount[0] if amount else None,
            currency=amount[1] if amount else None,
            line_items=(),
        )
    status = capture.get("status")
    if status in ("COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"):
        # refunded later: the capture itself was paid, its refunds come as their own events
        return PaymentSucceeded(
            ref,
            purchase,
            paid_amount_cents=amount[0] if amount else None,
            paid_currency=amount[1] if amount else None,
        )
    if status == "PENDING":
        return PaymentProcessing(ref, purchase)
    if status in ("DECLINED", "DENIED", "FAILED"):
        details = (
            capture.get("status_details") if isinstance(capture.get("status_details"), dict) else {}
        )
        return PaymentFailed(ref, purchase, code=_code(details.get("reason")) or status)
    raise InvalidEventError(f"capture.status is not a known capture status: {_shape(status)}")


def _unit_purchase(unit: dict) -> Purchase:
    purchase = decode_custom_id(unit.get("custom_id"))
    amount = _money(unit.get("amount"), "purchase_units[0].amount")
    if amount is None:
        return replace(purchase, line_items=())
    return replace(purchase, amount_cents=amount[0], currency=amount[1], line_items=())


def _latest_capture(unit: dict) -> dict | None:
    payments = unit.get("payments") if isinstance(unit.get("payments"), dict) else {}
    captures = (
        [c for c in payments.get("captures") or [] if isinstance(c, dict)]
        if isinstance(payments.get("captures"), list)
        else []
    )
    return captures[-1] if captures else None


def _related(obj: dict, name: str) -> str | None:
    supplementary = (
        obj.get("supplementary_data") if isinstance(obj.get("supplementary_data"), dict) else {}
    )
    related = (
        supplementary.get("related_ids")
        if isinstance(supplementary.get("related_ids"), dict)
        else {}
    )
    value = related.get(name)
    return value if isinstance(value, str) and value else None


def _up(obj: dict, pattern: re.Pattern) -> str | None:
    """The id in the object's ``links[rel=up]`` when it points at the kind of object ``pattern`` matches."""
    links = obj.get("links") if isinstance(obj.get("links"), list) else []
    for link in links:
        if isinstance(link, dict) and link.get("rel") == "up" and isinstance(link.get("href"), str):
            match = pattern.search(urlsplit(link["href"]).path)
            if match:
                return match.group(1)
    return None


def _capture_order(capture: dict) -> str | None:
    """The order a capture belongs to: ``supplementary_data.related_ids``, else its ``up`` link."""
    return _related(capture, "order_id") or _up(capture, _UP_ORDER)


def _refunded_capture(refund: dict) -> str | None:
    return _up(refund, _UP_CAPTURE) or _related(refund, "capture_id")


def _disputed_ref(dispute: dict) -> PaymentRef:
    for transaction in _list(dispute.get("disputed_transactions")):
        if isinstance(transaction, dict) and isinstance(
            transaction.get("seller_transaction_id"), str
        ):
            if transaction["seller_transaction_id"]:
                return PaymentRef(payment_id=transaction["seller_transaction_id"])
    raise InvalidEventError("dispute names no disputed_transactions[].seller_transaction_id")


def _dispute_id(dispute: dict) -> str:
    value = dispute.get("dispute_id")
    if not isinstance(value, str) or not value:
        raise InvalidEventError("dispute has no dispute_id")
    return value


def _required_id(obj: dict, what: str) -> str:
    value = obj.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidEventError(f"{what} has no id")
    return value


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _first(items: object) -> dict:
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def _code(value: object) -> str | None:
    """An enum value PayPal sends (a reason, an outcome): kept only if it looks like one."""
    return value if isinstance(value, str) and _CODE.fullmatch(value) else None


def _shape(value: object) -> str:
    """What a bad value is, never the value: the sender may have put anything there, an e-mail too."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "a boolean"
    if isinstance(value, int):
        digits = len(str(abs(value)))
        return f"{'a negative' if value < 0 else 'an'} integer of {digits} digit{'s' if digits > 1 else ''}"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return {"dict": "an object", "list": "an array", "float": "a decimal number"}.get(
        type(value).__name__, "a value"
    )
