"""The outbox's other consumers: e-mail receipts through a real SMTP server, and in-process hooks.

In-process (the dispatcher and deliveries called as a worker calls them):
what is proved is what each consumer receives and how a failure is retried,
not the worker's plumbing (tests/integration/test_outbound_webhooks.py).
"""

from __future__ import annotations

import email
import logging
import socket
import threading
from email import policy

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, text

from application import hooks
from application.outbound import Outbound
from models import outbound as outbound_models
from models.tables import OutboundAttempt, OutboxMessage
from tests.support import canaries
from tests.support.apply import apply_batch
from tests.support.processes import wait_until
from tests.support.stripe_events import charge, checkout_session, event


class Mailbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.refuse = 0  # answer this many messages with a temporary failure first

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            self.refuse -= 1
            return "451 try again later"
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    # aiosmtpd's own INFO lines name the peer's envelope; they are the test server's, not payhooks'.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, mailbox
    controller.stop()


def purchase_and_refund(database, user: str, intent: str) -> None:
    paid = event("checkout.session.completed", checkout_session(
        user_id=user, credits="100", amount_total=1999, payment_intent=intent))
    assert paid["data"]["object"]["customer_details"]["email"] == canaries.EMAIL
    apply_batch(database, [paid])
    apply_batch(database, [event("charge.refunded", charge(intent, 1999, 1999))])


def deliver_all(outbound: Outbound, ids: list[int]) -> dict[int, str]:
    """Try each delivery until it is delivered (or fails for good), as the worker's retries would."""
    outcomes = {}

    def settled(delivery_id):
        result = outbound.deliver(delivery_id)
        if result.outcome != "skipped":
            outcomes[delivery_id] = result.outcome
        return outcomes.get(delivery_id) in ("delivered", "failed", "gone")

    for delivery_id in ids:
        wait_until(lambda: settled(delivery_id), 10, interval=0.1, what=f"delivery {delivery_id} settled")
    return outcomes


def test_receipts_reach_the_buyer_with_the_right_amounts(database, settings, smtp):
    controller, mailbox = smtp
    mailbox.refuse = 1  # the first message is refused once: retried, not lost
    receipt_settings = settings.replace(
        email_receipts=True, smtp_host="127.0.0.1", smtp_port=controller.port, smtp_starttls=False,
        smtp_from="receipts@shop.example",
    )
    outbound = Outbound(database, receipt_settings)
    purchase_and_refund(database, "user_receipt", "pi_receipt")

    ids = outbound.dispatch()
    assert set(deliver_all(outbound, ids).values()) == {"delivered"}

    assert len(mailbox.messages) == 2
    by_subject = {msg["Subject"]: (rcpt, msg) for rcpt, msg in mailbox.messages}
    granted = by_subject["Your purchase: 100 credits added"]
    revoked = by_subject["100 credits taken back after a refund"]
    for rcpt, msg in (granted, revoked):
        assert rcpt == [canaries.EMAIL] and msg["To"] == canaries.EMAIL and msg["From"] == "receipts@shop.example"
    assert "Credits added: 100\nAmount paid: 19.99 USD\nPayment: pi_receipt" in granted[1].get_content().replace("\r\n", "\n")
    assert "Credits taken back: 100\nOriginal payment: 19.99 USD" in revoked[1].get_content().replace("\r\n", "\n")
    with database.transaction() as session:
        log = session.execute(select(OutboundAttempt.outcome, OutboundAttempt.error).order_by(OutboundAttempt.id)).all()
        data = [str(d) for d in session.scalars(select(OutboxMessage.data))]
    assert [tuple(row) for row in log][0] == ("retry", "SMTPDataError 451")  # the code, never the recipient
    assert not any("c4n4ry" in d for d in data)  # the address is never in a message the host app receives


def test_receipts_are_off_by_default(database, settings, smtp):
    _, mailbox = smtp
    assert settings.email_receipts is False
    purchase_and_refund(database, "user_no_receipt", "pi_no_receipt")
    assert Outbound(database, settings).dispatch() == []
    assert mailbox.messages == []


@pytest.fixture
def registered():
    names = []

    def register(*types):
        def wrap(fn):
            hooks.on(*types)(fn)
            names.append(hooks.name_of(fn))
            return fn
        return wrap

    yield register
    for name in names:
        hooks.remove(name)


def test_hooks_run_after_commit_and_a_failing_one_blocks_no_other(database, settings, registered):
    calls: dict[str, list] = {"flaky": [], "steady": []}
    seen_committed = threading.Event()

    @registered("credits.granted")
    def flaky(message):
        calls["flaky"].append(message.message_id)
        if len(calls["flaky"]) < 3:
            raise RuntimeError("the host application is down")

    @registered("*")
    def steady(message):
        # From another connection: the grant is visible, so the money transaction has committed.
        with database.transaction() as session:
            if session.scalar(text("SELECT count(*) FROM credit_ledger WHERE user_id = :u"), {"u": message.user_id}):
                seen_committed.set()
        calls["steady"].append(message.type)

    purchase_and_refund(database, "user_hooked", "pi_hooked")
    outbound = Outbound(database, settings)
    outcomes = deliver_all(outbound, outbound.dispatch())

    assert set(outcomes.values()) == {"delivered"}
    assert len(calls["flaky"]) == 3 and len(set(calls["flaky"])) == 1  # retried, same message
    assert sorted(calls["steady"]) == sorted(["credits.granted", "credits.revoked", "payment.status_changed",
                                              "payment.status_changed"])
    assert seen_committed.is_set()
    with database.transaction() as session:
        flaky_log = session.execute(text(
            "SELECT a.outcome, a.error FROM outbound_attempts a JOIN outbound_deliveries d ON d.id = a.delivery_id "
            "WHERE d.consumer LIKE '%flaky' ORDER BY a.attempt")).all()
    assert [tuple(r) for r in flaky_log] == [("retry", "RuntimeError"), ("retry", "RuntimeError"), ("delivered", None)]


def test_a_delivery_whose_worker_died_is_due_again_once_its_lease_runs_out(database, settings, registered):
    """Beat's kick finds it (tasks/outbound.py); a delivery leased by a live worker is left alone."""
    registered("credits.granted")(lambda message: None)
    apply_batch(database, [event("checkout.session.completed", checkout_session(user_id="user_lease", credits="1"))])
    outbound = Outbound(database, settings)
    [delivery_id] = outbound.dispatch()
    assert outbound.due(late=0) == [delivery_id]
    with database.transaction() as session:  # a worker takes it, then dies
        assert outbound_models.lease(session, [delivery_id], 60)
    assert outbound.due(late=0) == [] and outbound.deliver(delivery_id).outcome == "skipped"
    with database.transaction() as session:
        session.execute(text("UPDATE outbound_deliveries SET lease_until = now() - interval '1 second'"))
    assert outbound.due(late=0) == [delivery_id]
    assert outbound.deliver(delivery_id).outcome == "delivered"
    assert outbound.due(late=0) == []
