"""Canary values: customer data and secrets that must never reach a log line or an error report.

Every Stripe object the tests build starts from ``FIXTURES`` (Stripe's published
example objects), and ``FIXTURES`` carries these values wherever Stripe puts
customer data: checkout sessions' ``customer_details`` and shipping, charges'
``billing_details`` and card, payment intents' receipt e-mail, shipping and
client secret, invoices' ``customer_*`` fields, disputes' evidence, customers.
The test settings use the canary secrets (webhook secrets, API token, Stripe API
key), and every ``Stripe-Signature`` the tests compute is remembered
(``remember_signature``). tests/support/leaks.py searches everything captured for
all of them.

Each value holds a token that cannot occur by accident (``c4n4ry``, made-up
words), is searched case-insensitively, and survives JSON, repr and URL
encoding; base64 renderings are searched too (a logged Celery message carries
its body in base64). A card's last four digits are four digits like any other:
they are searched next to their key (``last4``), and the card's fingerprint,
always sent with them, stands for the card alone. A body is recognised by
its ``"object": "event"`` (or ``"checkout.session"``…) marker, which Stripe
sends right after the id, so a body cut after a few dozen bytes is caught as
well as a whole one.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
from pathlib import Path

EMAIL = "zq7.c4n4ry@example.com"
NAME = "Zyxcanary Qwertanary"
PHONE = "+15550107713"
ADDRESS = {
    "city": "Brimcanaryton",
    "country": "GB",
    "line1": "88 Vexcanary Row",
    "line2": "Quillanary Flat 3",
    "postal_code": "ZC4 9NQ",
    "state": "Zedshire",
}
CARD_LAST4 = "9713"
CARD_FINGERPRINT = "Fp9c4n4ryQx7Zw2K"
CLIENT_SECRET_SUFFIX = "_secret_c4n4ryCs8Lm"
IP_ADDRESS = "203.0.113.97"

WEBHOOK_SECRET = "whsec_c4n4ryPr1maryQx7"
ROTATED_WEBHOOK_SECRET = "whsec_c4n4ryR0tatedZk9"
API_TOKEN = "tok-c4n4ry-Jw5apiV2-long-enough-for-the-minimum"
STRIPE_API_KEY = "sk_test_c4n4ryK3yZq8Hn"
PAYPAL_CLIENT_SECRET = "EfakeSecret0c4n4ryPP"  # tests/support/fake_paypal.py's default

# name -> the distinctive part searched for
TOKENS: dict[str, str] = {
    "customer e-mail": "zq7.c4n4ry",
    "customer name (given)": "Zyxcanary",
    "customer name (family)": "Qwertanary",
    "customer phone": "5550107713",
    "address line 1": "Vexcanary",
    "address line 2": "Quillanary",
    "address city": "Brimcanaryton",
    "card fingerprint": CARD_FINGERPRINT,
    "payment intent client secret": CLIENT_SECRET_SUFFIX,
    "webhook secret": WEBHOOK_SECRET.removeprefix("whsec_"),
    "rotated webhook secret": ROTATED_WEBHOOK_SECRET.removeprefix("whsec_"),
    "API token": API_TOKEN,
    "Stripe API key": STRIPE_API_KEY.removeprefix("sk_test_"),
    "PayPal client secret": PAYPAL_CLIENT_SECRET,
}
PATTERNS: dict[str, str] = {
    "card last4": rf"last4\W{{1,8}}{CARD_LAST4}\b",
    "customer IP address": rf"\b{re.escape(IP_ADDRESS)}\b",
    # A Stripe object's own marker, which Stripe sends second, right after its id.
    "raw Stripe object": r"""\\?["']object\\?["']\s*:\s*\\?["']"""
    r"""(?:event|checkout\.session|charge|dispute|invoice|payment_intent|refund|customer|subscription)"""
    r"""\\?["']""",
}


def _base64_cores(token: str) -> list[str]:
    """The parts of ``token``'s base64 encoding that do not depend on what precedes it."""
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + token.encode()).decode()
        # The first 4-character group mixes in the padding; the last may mix in what follows.
        start = 4 if shift else 0
        end = (len(encoded) - 4) if (shift + len(token)) % 3 else len(encoded)
        core = encoded[start:end]
        if len(core) >= 8:
            cores.append(core)
    return cores


class Canaries:
    """Everything searched for: plain tokens (found with ``str.find``, fast) and a few patterns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signatures: set[str] = set()
        self._tokens: list[tuple[str, str]] = []  # (lowercased token, name)
        for name, token in TOKENS.items():
            self._tokens.append((token.lower(), name))
            self._tokens.extend((core.lower(), f"{name} (base64)") for core in _base64_cores(token))
        # (a cheap word that must be in the line, pattern, name)
        self._patterns = [
            (hint, re.compile(PATTERNS[name], re.IGNORECASE), name)
            for name, hint in (
                ("card last4", "last4"),
                ("customer IP address", IP_ADDRESS),
                ("raw Stripe object", "object"),
            )
        ]
        self._hex = re.compile(r"[0-9a-f]{64}")

    def remember_signature(self, header: str) -> None:
        """A Stripe-Signature the tests sent: its v1 digests must not appear anywhere either."""
        with self._lock:
            self._signatures.update(
                part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")
            )

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """(canary name, start, end) of every canary in ``text``."""
        lowered = text.lower()
        found = []
        for token, name in self._tokens:
            start = lowered.find(token)
            while start != -1:
                found.append((name, start, start + len(token)))
                start = lowered.find(token, start + 1)
        for hint, pattern, name in self._patterns:
            if hint in lowered:
                found.extend((name, m.start(), m.end()) for m in pattern.finditer(text))
        if self._signatures and len(lowered) >= 64:
            found.extend(
                ("Stripe-Signature digest", m.start(), m.end())
                for m in self._hex.finditer(lowered)
                if m.group() in self._signatures
            )
        return found

    def mask(self, text: str) -> str:
        """``text`` with every canary replaced by its name, for reports."""
        hits = sorted(self.find(text), key=lambda hit: (hit[1], -hit[2]))
        parts, position = [], 0
        for name, start, end in hits:
            if start < position:
                continue  # inside a hit already masked
            parts.append(f"{text[position:start]}<canary: {name}>")
            position = end
        return "".join(parts) + text[position:]


CANARIES = Canaries()


def _set(obj: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        obj = obj[key]
    obj[last] = copy.deepcopy(value)


def _shipping() -> dict:
    return {
        "address": ADDRESS,
        "name": NAME,
        "phone": PHONE,
        "carrier": None,
        "tracking_number": None,
    }


def with_canaries(fixtures: dict[str, dict]) -> dict[str, dict]:
    """Stripe's example objects with canary customer data wherever Stripe puts customer data."""
    fixtures = copy.deepcopy(fixtures)
    details = {"address": ADDRESS, "email": EMAIL, "name": NAME, "phone": PHONE}
    places = {
        "checkout.session": {
            "customer_email": EMAIL,
            "customer_details": {
                **details,
                "business_name": None,
                "individual_name": NAME,
                "tax_exempt": "none",
                "tax_ids": [],
            },
            "collected_information.individual_name": NAME,
            "collected_information.shipping_details": {"address": ADDRESS, "name": NAME},
        },
        "charge": {
            "billing_details": {**details, "tax_id": None},
            "receipt_email": EMAIL,
            "shipping": _shipping(),
            "payment_method_details.card.last4": CARD_LAST4,
            "payment_method_details.card.fingerprint": CARD_FINGERPRINT,
        },
        "payment_intent": {"receipt_email": EMAIL, "shipping": _shipping()},
        "invoice": {
            "customer_email": EMAIL,
            "customer_name": NAME,
            "customer_phone": PHONE,
            "customer_address": ADDRESS,
            "customer_shipping": _shipping(),
        },
        "dispute": {
            "evidence.customer_email_address": EMAIL,
            "evidence.customer_name": NAME,
            "evidence.customer_purchase_ip": IP_ADDRESS,
            "evidence.billing_address": ", ".join(v for v in ADDRESS.values() if v),
            "evidence.shipping_address": ", ".join(v for v in ADDRESS.values() if v),
        },
        "customer": {**details, "shipping": _shipping()},
    }
    for kind, fields in places.items():
        for path, value in fields.items():
            _set(fixtures[kind], path, value)
    return fixtures


def stripe_order(obj: dict) -> dict:
    """An object's keys in the order Stripe sends them: ``id`` and ``object`` first.

    (The published fixtures are sorted.) A body then starts with its
    ``"object": "event"`` marker, so even its first few dozen bytes are recognised.
    """
    first = {key: obj[key] for key in ("id", "object") if key in obj}
    return {**first, **{key: value for key, value in obj.items() if key not in first}}


def load_fixtures() -> dict[str, dict]:
    """tests/fixtures/stripe/objects.json, with the canaries in, keys in Stripe's order."""
    raw = json.loads((Path(__file__).parent.parent / "fixtures/stripe/objects.json").read_text())
    return {kind: stripe_order(obj) for kind, obj in with_canaries(raw).items()}
