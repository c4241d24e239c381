"""How the receiver checks a PayPal delivery, as the settings say: offline (the default) or online.

Offline: PayPal's signing certificate, downloaded once from an allowlisted
PayPal host (no credentials needed), checked, cached in Redis for the other
processes and in this one, so the hot path is one RSA verification. Online:
PayPal's verify-webhook-signature API, one call per delivery (and credentials).
Either raises ``SignatureError`` (answer 400) or ``VerificationUnavailableError``
(answer 503 + Retry-After); never lets an unchecked delivery through.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography import x509

from infra.settings import Settings
from providers import paypal
from providers.paypal_api import CertificateDownloader, PayPalAPI


class PayPalVerifier:
    def __init__(self, settings: Settings, store: paypal.CertificateStore | None) -> None:
        self._settings = settings
        self._webhook_ids = settings.paypal_webhook_ids
        self._tolerance = settings.paypal_webhook_tolerance_seconds
        self._api: PayPalAPI | None = None
        self._certificates: paypal.CertificateSource | None = None
        if settings.paypal_verification == "online":
            self._api = PayPalAPI(
                settings.paypal_client_id, settings.reveal("paypal_client_secret"), settings.paypal_api_url,
                timeout_seconds=5.0, max_retries=1, backoff_seconds=0.1,
            )
        else:
            self._certificates = paypal.CertificateSource(
                CertificateDownloader(settings.paypal_api_url), roots=trust_anchors(settings), store=store
            )

    def __call__(self, body: bytes, headers: Mapping[str, str], now: float) -> int:
        """The index of the configured webhook id the delivery was signed for."""
        if self._api is not None:
            return paypal.verify_online(
                body, headers, self._webhook_ids, api=self._api, tolerance=self._tolerance, now=now
            )
        return paypal.verify(
            body, headers, self._webhook_ids, certificates=self._certificates, tolerance=self._tolerance, now=now
        )


def trust_anchors(settings: Settings) -> list[x509.Certificate]:
    """PAYPAL_CA_FILE's certificates if set, else the certifi bundle's."""
    if settings.paypal_ca_file:
        with open(settings.paypal_ca_file, "rb") as pem:
            return x509.load_pem_x509_certificates(pem.read())
    return paypal.default_roots()

