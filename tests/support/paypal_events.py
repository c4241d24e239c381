"""PayPal events built from PayPal's published samples, signed as PayPal signs them.

Every event starts as a deep copy of the sample of its type
(``tests/fixtures/paypal/events.json``, with canary personal data) and changes
only the fields a scenario decides, so the shapes stay PayPal's.

Signing uses real RSA keys and X.509 certificates made here with
``cryptography``: a test root CA, an intermediate (PayPal's real chain has one:
DigiCert root, DigiCert intermediate, PayPal's leaf), and a leaf for
``messageverificationcerts.sandbox.paypal.com`` (subjectAltName and common
name, serverAuth, as PayPal's). ``TestPKI.leaf_pem()`` is what a certificate
address serves; ``TestPKI.root`` is what a ``CertificateSource`` trusts.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from providers import paypal

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "paypal"
SAMPLES: dict[str, dict] = json.loads((FIXTURES_DIR / "events.json").read_text())
SANDBOX_SUBJECT = "messageverificationcerts.sandbox.paypal.com"
CERT_URL = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-c4n4ry01"
WEBHOOK_ID = "8PT597110X687430LKGECATA"
ROTATED_WEBHOOK_ID = "1JE4291016473214C"


# -- keys and certificates -------------------------------------------------------


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, organization: str = "PayPal, Inc.") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca(
    subject: x509.Name,
    key,
    issuer: x509.Name,
    issuer_key,
    *,
    path_length: int | None,
    not_before,
    not_after,
):
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def issue_leaf(
    issuer: x509.Certificate,
    issuer_key,
    key,
    *,
    subject: str = SANDBOX_SUBJECT,
    san: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    ca_issuers_url: str | None = None,
) -> x509.Certificate:
    """A message-verification certificate like PayPal's (serverAuth, the name in subjectAltName)."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=30))
        .not_valid_after(not_after or now + dt.timedelta(days=335))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(san or subject)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca_issuers_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(ca_issuers_url),
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class TestPKI:
    """A root CA, an intermediate and a PayPal-like signing certificate, with their keys."""

    __test__ = False  # not a pytest class

    root_key: rsa.RSAPrivateKey
    root: x509.Certificate
    intermediate_key: rsa.RSAPrivateKey
    intermediate: x509.Certificate
    leaf_key: rsa.RSAPrivateKey
    leaf: x509.Certificate

    def leaf_pem(self, *, with_intermediate: bool = True) -> bytes:
        """What a certificate address serves: the leaf, and the intermediate unless asked not to."""
        pem = self.leaf.public_bytes(Encoding.PEM)
        return pem + self.intermediate.public_bytes(Encoding.PEM) if with_intermediate else pem

    def leaf_with(self, **changes) -> x509.Certificate:
        """Another certificate for the same key, from the same intermediate (``issue_leaf`` arguments)."""
        return issue_leaf(self.intermediate, self.intermediate_key, self.leaf_key, **changes)


def make_pki(*, subject: str = SANDBOX_SUBJECT, ca_issuers_url: str | None = None) -> TestPKI:
    now = dt.datetime.now(dt.UTC)
    root_key, intermediate_key, leaf_key = _key(), _key(), _key()
    root_name = _name("payhooks Test Root CA", "payhooks tests")
    root = _ca(root_name, root_key, root_name, root_key, path_length=1,
               not_before=now - dt.timedelta(days=3650), not_after=now + dt.timedelta(days=3650))  # fmt: skip
    intermediate = _ca(_name("payhooks Test EV Server CA", "payhooks tests"), intermediate_key, root_name, root_key,
                       path_length=0, not_before=now - dt.timedelta(days=365), not_after=now + dt.timedelta(days=1825))  # fmt: skip
    leaf = issue_leaf(
        intermediate, intermediate_key, leaf_key, subject=subject, ca_issuers_url=ca_issuers_url
    )
    return TestPKI(root_key, root, intermediate_key, intermediate, leaf_key, leaf)


@functools.cache
def default_pki() -> TestPKI:
    """One PKI for the whole run: RSA key generation is the slow part."""
    return make_pki()


def sign_headers(
    body: bytes,
    *,
    pki: TestPKI | None = None,
    webhook_id: str = WEBHOOK_ID,
    cert_url: str = CERT_URL,
    transmission_time: dt.datetime | None = None,
    transmission_id: str | None = None,
) -> dict[str, str]:
    """The headers PayPal sends with ``body``, signed with the test leaf's key."""
    pki = pki or default_pki()
    sent = transmission_time or dt.datetime.now(dt.UTC)
    return paypal.sign(
        body,
        pki.leaf_key,
        webhook_id=webhook_id,
        cert_url=cert_url,
        transmission_id=transmission_id or str(uuid.uuid1()),
        transmission_time=sent.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


# -- events ----------------------------------------------------------------------------


def sample(event_type: str) -> dict:
    """A copy of PayPal's sample event of this type."""
    return copy.deepcopy(SAMPLES[event_type])


def event(
    event_type: str,
    resource: dict | None = None,
    *,
    event_id: str | None = None,
    create_time: str | None = None,
) -> dict:
    """The sample's envelope around ``resource`` (the sample's own resource if None)."""
    envelope = sample(event_type)
    envelope["id"] = (
        event_id or f"WH-{uuid.uuid4().hex[:17].upper()}-{uuid.uuid4().hex[:17].upper()}"
    )
    envelope["create_time"] = (
        create_time or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    )
    if resource is not None:
        envelope["resource"] = copy.deepcopy(resource)
    for link in envelope.get("links") or []:
        link["href"] = (
            link["href"].rsplit("/webhooks-events/", 1)[0]
            + "/webhooks-events/"
            + envelope["id"]
            + ("/resend" if link.get("rel") == "resend" else "")
        )
    return envelope


def money(amount_cents: int, currency: str = "USD") -> dict:
    return {
        "currency_code": currency.upper(),
        "value": paypal.to_paypal_value(amount_cents, currency),
    }


def custom_id(user_id: str | None, credits: int | None) -> str | None:
    if user_id is None or credits is None:
        return None
    return paypal.encode_custom_id(user_id=user_id, credits=credits)


def order(
    order_id: str,
    *,
    status: str = "APPROVED",
    amount_cents: int = 999,
    currency: str = "USD",
    user_id: str | None = "user_1",
    credits: int | None = 100,
    captures: list[dict] | None = None,
    intent: str = "CAPTURE",
) -> dict:
    """An order as CHECKOUT.ORDER.APPROVED carries it (the sample's, with these facts)."""
    resource = sample("CHECKOUT.ORDER.APPROVED")["resource"]
    unit = resource["purchase_units"][0]
    unit["amount"] = money(amount_cents, currency)
    unit.pop("custom_id", None)
    if (cid := custom_id(user_id, credits)) is not None:
        unit["custom_id"] = cid
    if captures is not None:
        unit["payments"] = {"captures": copy.deepcopy(captures)}
    resource.update(id=order_id, status=status, intent=intent)
    for link in resource["links"]:
        link["href"] = link["href"].replace("42942721MY574140S", order_id)
    return resource


def capture(
    capture_id: str,
    *,
    order_id: str | None = None,
    status: str = "COMPLETED",
    amount_cents: int = 999,
    currency: str = "USD",
    user_id: str | None = "user_1",
    credits: int | None = 100,
    reason: str | None = None,
) -> dict:
    """A capture as PAYMENT.CAPTURE.* carries it (PayPal's COMPLETED sample, with these facts)."""
    resource = sample("PAYMENT.CAPTURE.COMPLETED")["resource"]
    resource.update(id=capture_id, status=status, amount=money(amount_cents, currency))
    resource["seller_receivable_breakdown"]["gross_amount"] = money(amount_cents, currency)
    resource.pop("custom_id", None)
    if (cid := custom_id(user_id, credits)) is not None:
        resource["custom_id"] = cid
    if reason:
        resource["status_details"] = {"reason": reason}
    if order_id is None:
        resource.pop("supplementary_data", None)
        resource["links"] = [link for link in resource["links"] if link["rel"] != "up"]
    else:
        resource["supplementary_data"] = {"related_ids": {"order_id": order_id}}
    for link in resource["links"]:
        link["href"] = (
            link["href"]
            .replace("12A34567BC123456S", capture_id)
            .replace("1AB234567A1234567", order_id or "")
        )
    return resource


def refund(
    refund_id: str,
    capture_id: str,
    *,
    amount_cents: int,
    total_refunded_cents: int | None,
    currency: str = "USD",
    status: str = "COMPLETED",
) -> dict:
    """A refund as PAYMENT.CAPTURE.REFUNDED carries it (PayPal's sample, with these facts)."""
    resource = sample("PAYMENT.CAPTURE.REFUNDED")["resource"]
    resource.update(id=refund_id, status=status, amount=money(amount_cents, currency))
    breakdown = resource["seller_payable_breakdown"]
    breakdown["gross_amount"] = money(amount_cents, currency)
    if total_refunded_cents is None:
        breakdown.pop("total_refunded_amount")
    else:
        breakdown["total_refunded_amount"] = money(total_refunded_cents, currency)
    resource["links"] = [
        {
            "href": f"https://api.paypal.com/v2/payments/refunds/{refund_id}",
            "rel": "self",
            "method": "GET",
        },
        {
            "href": f"https://api.paypal.com/v2/payments/captures/{capture_id}",
            "rel": "up",
            "method": "GET",
        },
    ]
    return resource


def dispute(
    dispute_id: str,
    capture_id: str,
    *,
    amount_cents: int | None = 300,
    currency: str = "USD",
    outcome: str | None = None,
) -> dict:
    """A dispute (PayPal's CREATED sample, or RESOLVED with ``outcome``)."""
    resource = sample("CUSTOMER.DISPUTE.RESOLVED" if outcome else "CUSTOMER.DISPUTE.CREATED")[
        "resource"
    ]
    resource["dispute_id"] = dispute_id
    resource["disputed_transactions"][0]["seller_transaction_id"] = capture_id
    if amount_cents is None:
        resource.pop("dispute_amount")
    else:
        resource["dispute_amount"] = money(amount_cents, currency)
    if outcome:
        resource["dispute_outcome"] = {"outcome_code": outcome}
    return resource


def approval_reversed(
    order_id: str, *, user_id: str | None = "user_1", credits: int | None = 100
) -> dict:
    resource = sample("CHECKOUT.PAYMENT-APPROVAL.REVERSED")["resource"]
    resource["order_id"] = order_id
    resource["purchase_units"][0].pop("custom_id", None)
    if (cid := custom_id(user_id, credits)) is not None:
        resource["purchase_units"][0]["custom_id"] = cid
    return resource


def encode(event_dict: dict) -> bytes:
    """An event as PayPal sends it: compact JSON."""
    return json.dumps(event_dict, separators=(",", ":")).encode()
