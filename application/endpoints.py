"""Webhook endpoints of the host application: where, which message types, and their signing secrets.

Secrets are Standard Webhooks secrets (``whsec_`` + base64 of 32 random
bytes), stored encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256)
under ``OUTBOUND_SECRET_KEY``: a comma-separated list of Fernet keys, the first
encrypts and every one decrypts, so the key itself can be rotated
(``MultiFernet``). A secret is shown once, when it is made (add, rotate), and
never logged. Rotating keeps the old secret for ``OUTBOUND_SECRET_OVERLAP_SECONDS``:
meanwhile every message carries a signature by each, so a receiver verifies
with either.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select

from infra.settings import Settings, SettingsError
from models import outbound
from models.db import Database
from models.outbox import message_id
from models.tables import OutboundDelivery, OutboxMessage, WebhookEndpoint

TEST_TYPE = "webhook.test"
ALL_TYPES = "*"


class EndpointNotFoundError(LookupError):
    pass


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class SecretBox:
    """Encrypt and decrypt endpoint secrets with the configured Fernet keys."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise SettingsError(
                "OUTBOUND_SECRET_KEY is not set; outbound webhooks store their signing secrets encrypted with it "
                "(generate one with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            )
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError:
            raise SettingsError("OUTBOUND_SECRET_KEY must be Fernet keys (32 url-safe base64-encoded bytes each)") from None

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SettingsError("an endpoint secret cannot be decrypted with any OUTBOUND_SECRET_KEY") from None


@dataclass(frozen=True)
class Signing:
    """What the sender signs with: the current secret, and the previous one during an overlap."""

    secrets: tuple[str, ...]


def view(row: WebhookEndpoint) -> dict:
    """An endpoint as the API and CLI show it: never a secret."""
    return {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "event_types": list(row.event_types),
        "status": row.status,
        "disabled_reason": row.disabled_reason,
        "previous_secret_expires_at": row.previous_secret_expires_at.isoformat() if row.previous_secret_expires_at else None,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


class Endpoints:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    @property
    def box(self) -> SecretBox:
        return SecretBox(self.settings.reveal("outbound_secret_keys"))

    def list(self) -> list[dict]:
        with self.database.transaction() as session:
            return [view(row) for row in session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))]

    def get(self, endpoint_id: int) -> dict:
        with self.database.transaction() as session:
            return view(self._row(session, endpoint_id))

    def add(self, url: str, event_types: list[str], description: str | None = None, secret: str | None = None) -> tuple[dict, str]:
        """A new endpoint, enabled; its view and its secret (shown this once)."""
        secret = secret or new_secret()
        sealed = self.box.seal(secret)
        with self.database.transaction() as session:
            row = WebhookEndpoint(url=url, event_types=sorted(set(event_types)), description=description,
                                  status="enabled", secret_encrypted=sealed)
            session.add(row)
            session.flush()
            session.refresh(row)
            return view(row), secret

    def set_enabled(self, endpoint_id: int, enabled: bool, reason: str | None = None) -> dict:
        with self.database.transaction() as session:
            row = self._row(session, endpoint_id, lock=True)
            row.status = "enabled" if enabled else "disabled"
            row.disabled_reason = None if enabled else (reason or "disabled by an operator")
            session.flush()
            session.refresh(row)
            return view(row)

    def rotate_secret(self, endpoint_id: int, secret: str | None = None) -> tuple[dict, str]:
        """A new secret; the old one is still signed with for the overlap. The view and the new secret."""
        secret = secret or new_secret()
        box = self.box
        with self.database.transaction() as session:
            row = self._row(session, endpoint_id, lock=True)
            row.previous_secret_encrypted = row.secret_encrypted
            row.previous_secret_expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.outbound_secret_overlap_seconds)
            row.secret_encrypted = box.seal(secret)
            session.flush()
            session.refresh(row)
            return view(row), secret

    def test(self, endpoint_id: int) -> int:
        """Send a ``webhook.test`` message to this endpoint alone, through the normal delivery path; the delivery id."""
        with self.database.transaction() as session:
            self._row(session, endpoint_id)
            key = secrets.token_hex(8)
            message = OutboxMessage(message_id=message_id(TEST_TYPE, key), type=TEST_TYPE, user_id=None,
                                    data={"endpoint_id": endpoint_id, "test": True}, dispatched_at=datetime.now(UTC))
            session.add(message)
            session.flush()
            [delivery_id] = outbound.create(
                session, [(message.id, outbound.webhook_consumer(endpoint_id), endpoint_id)],
                timedelta(seconds=self.settings.outbound_retry_window_seconds),
            )
            return delivery_id

    def deliveries(self, endpoint_id: int, limit: int = 50) -> list[dict]:
        """The endpoint's most recent deliveries, with their message ids and state."""
        with self.database.transaction() as session:
            self._row(session, endpoint_id)
            rows = session.execute(
                select(OutboundDelivery, OutboxMessage.message_id, OutboxMessage.type)
                .join(OutboxMessage, OutboxMessage.id == OutboundDelivery.outbox_id)
                .where(OutboundDelivery.endpoint_id == endpoint_id)
                .order_by(OutboundDelivery.id.desc())
                .limit(limit)
            ).all()
            return [
                {"id": d.id, "message_id": mid, "type": kind, "status": d.status, "attempts": d.attempts,
                 "last_error": d.last_error, "next_attempt_at": d.next_attempt_at.isoformat(),
                 "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
                 "created_at": d.created_at.isoformat()}
                for d, mid, kind in rows
            ]

    def signing(self, row: WebhookEndpoint, now: datetime) -> Signing:
        box = self.box
        keys = [box.open(row.secret_encrypted)]
        if row.previous_secret_encrypted and row.previous_secret_expires_at and row.previous_secret_expires_at > now:
            keys.append(box.open(row.previous_secret_encrypted))
        return Signing(tuple(keys))

    @staticmethod
    def _row(session, endpoint_id: int, *, lock: bool = False) -> WebhookEndpoint:
        query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        row = session.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise EndpointNotFoundError(f"no webhook endpoint {endpoint_id}")
        return row
