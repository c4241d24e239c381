"""The synchronous ORM peer: a webhook handler as the tutorials write it.

Verify with the Stripe SDK (``stripe.Webhook.construct_event``), then, inside
the request and in one transaction with the SQLAlchemy ORM: skip an event seen
before, record the payment, lock the user's balance, add the credits and a
ledger row, commit, answer 200. Served by gunicorn with the receiver's config
(same worker count and class; gevent, so the process keeps serving while a
request waits on PostgreSQL), against a database of its own on the same
PostgreSQL (bench/e2e.py creates it). Only ``checkout.session.completed`` is
handled: that is all the end-to-end bench sends.

    gunicorn --config python:receiver.gunicorn_conf 'bench.peer_app:create_app()'
"""

from __future__ import annotations

import os
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, String, create_engine, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker


class Base(DeclarativeBase):
    pass


class ProcessedEvent(Base):
    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(255), unique=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    credits: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CreditAccount(Base):
    __tablename__ = "credit_accounts"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)


class CreditGrant(Base):
    __tablename__ = "credit_grants"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("credit_accounts.user_id"), index=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    payment: Mapped[Payment] = relationship()


def create_app():
    # Imported here, in the gunicorn worker after gevent has patched it (as the receiver does).
    import stripe
    from flask import Flask, request

    secret = os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0]
    engine = create_engine(os.environ["PEER_DATABASE_URL"], pool_size=16, max_overflow=16)
    Session = sessionmaker(engine, expire_on_commit=False)
    app = Flask("peer")

    @app.post("/webhooks/stripe")
    def stripe_webhook():
        try:
            event = stripe.Webhook.construct_event(
                request.get_data(), request.headers.get("Stripe-Signature", ""), secret
            )
        except (ValueError, stripe.SignatureVerificationError):
            return {"error": "invalid"}, 400
        if event["type"] != "checkout.session.completed":
            return {"received": True}
        checkout = event["data"]["object"]
        user_id = checkout["metadata"]["user_id"]
        credits = int(checkout["metadata"]["credits"])
        try:
            with Session.begin() as db:
                if db.get(ProcessedEvent, event["id"]) is not None:
                    return {"received": True, "duplicate": True}
                db.add(ProcessedEvent(event_id=event["id"], event_type=event["type"]))
                payment = Payment(
                    session_id=checkout["id"],
                    user_id=user_id,
                    amount_cents=checkout["amount_total"],
                    currency=checkout["currency"],
                    credits=credits,
                    status="completed",
                )
                db.add(payment)
                account = db.get(CreditAccount, user_id, with_for_update=True)
                if account is None:
                    account = CreditAccount(user_id=user_id, balance=0)
                    db.add(account)
                account.balance += credits
                db.add(CreditGrant(user_id=user_id, payment=payment, amount=credits))
        except IntegrityError:
            return {"error": "conflict, retry"}, 500  # a concurrent delivery won; Stripe retries
        return {"received": True}

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app
