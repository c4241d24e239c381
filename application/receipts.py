"""E-mail receipts: a plain-text message to the buyer when credits are granted or taken back.

Off unless ``EMAIL_RECEIPTS`` is on. The address is the one the provider's
event gave (Stripe's ``customer_details.email`` on the Checkout Session, a
PaymentIntent's ``receipt_email``, PayPal's ``payer.email_address`` on an
approved order), kept on the payment row and read only
here, when the message is built: it is never logged, never put in an outbox
message, a metric or an error text (an SMTP error is recorded by its class
and code only, since smtplib's texts quote the recipient).
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from string import Template

from infra.settings import Settings
from models.outbox import MessageType

RECEIPT_TYPES = frozenset({MessageType.CREDITS_GRANTED.value, MessageType.CREDITS_REVOKED.value})

_ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
_THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

_SUBJECTS = {
    MessageType.CREDITS_GRANTED.value: "Your purchase: $credits credits added",
    MessageType.CREDITS_REVOKED.value: "$credits credits taken back after a $reason",
}
_BODIES = {
    MessageType.CREDITS_GRANTED.value: Template(
        "Thank you for your purchase.\n\n"
        "Credits added: $credits\n"
        "Amount paid: $amount\n"
        "Payment: $payment\n"
    ),
    MessageType.CREDITS_REVOKED.value: Template(
        "Credits were taken back from your account after a $reason.\n\n"
        "Credits taken back: $credits\n"
        "Original payment: $amount\n"
        "Payment: $payment\n"
    ),
}


def money(cents: int | None, currency: str | None) -> str:
    """Minor units as the currency writes them: 1999 usd -> '19.99 USD', 500 jpy -> '500 JPY'."""
    if cents is None or not currency:
        return "n/a"
    code = currency.lower()
    places = 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2
    whole, part = divmod(cents, 10**places)
    return f"{whole}.{part:0{places}d} {code.upper()}" if places else f"{whole} {code.upper()}"


def render(message_type: str, data: dict, to: str, sender: str) -> EmailMessage:
    fields = {
        "credits": data.get("credits"),
        "amount": money(data.get("amount_cents"), data.get("currency")),
        "payment": data.get("provider_payment_id") or data.get("provider_session_id") or data.get("payment_id"),
        "reason": data.get("reason", "refund"),
    }
    email = EmailMessage()
    email["From"] = sender
    email["To"] = to
    email["Subject"] = Template(_SUBJECTS[message_type]).substitute(fields)
    email.set_content(_BODIES[message_type].substitute(fields))
    return email


class SmtpError(Exception):
    """Sending failed; the text names the kind and code, never an address."""


def send(settings: Settings, email: EmailMessage) -> None:
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.outbound_timeout_seconds) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.reveal("smtp_password") or "")
            smtp.send_message(email)
    except smtplib.SMTPResponseException as exc:
        raise SmtpError(f"{exc.__class__.__name__} {exc.smtp_code}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise SmtpError(exc.__class__.__name__) from None
