"""Stripe events built from Stripe's published object shapes, signed as Stripe signs them."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

from providers.stripe import sign

FIXTURES = json.loads((Path(__file__).parent.parent / "fixtures/stripe/objects.json").read_text())


def stripe_object(kind: str, **changes) -> dict:
    """A copy of the fixture object of this kind with some fields changed."""
    obj = copy.deepcopy(FIXTURES[kind])
    obj.update(changes)
    return obj


def checkout_session(
    *,
    session_id: str | None = None,
    user_id: str | None = "user_1",
    credits: str | int | None = "100",
    paid: bool = True,
    amount_total: int = 1999,
    currency: str = "usd",
    payment_intent: str | None = None,
    client_reference_id: str | None = None,
) -> dict:
    metadata = {}
    if user_id is not None:
        metadata["user_id"] = user_id
    if credits is not None:
        metadata["credits"] = credits
    suffix = uuid.uuid4().hex[:24]
    return stripe_object(
        "checkout.session",
        id=session_id or f"cs_test_{suffix}",
        metadata=metadata,
        client_reference_id=client_reference_id,
        payment_status="paid" if paid else "unpaid",
        status="complete",
        amount_total=amount_total,
        amount_subtotal=amount_total,
        currency=currency,
        payment_intent=payment_intent or f"pi_{suffix}",
    )


def event(event_type: str, data_object: dict, *, event_id: str | None = None, created: int | None = None) -> dict:
    """An event envelope in the fixture's shape around one object."""
    envelope = copy.deepcopy(FIXTURES["event"])
    envelope.update(
        id=event_id or f"evt_{uuid.uuid4().hex[:24]}",
        type=event_type,
        created=created if created is not None else int(time.time()),
        data={"object": data_object},
        api_version="2025-10-29.clover",
    )
    return envelope


def completed_event(**session_fields) -> dict:
    return event("checkout.session.completed", checkout_session(**session_fields))


def encode(evt: dict) -> bytes:
    return json.dumps(evt, separators=(",", ":")).encode()


def signed_headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    return {
        "Stripe-Signature": sign(body, secret, timestamp if timestamp is not None else int(time.time())),
        "Content-Type": "application/json",
    }
