"""Outbound webhooks to the host application, through the real worker path, verified as a receiver would.

Every delivery is checked with the ``standardwebhooks`` library's own
``Webhook(secret).verify``; receivers dedupe on ``webhook-id``, so the
property is: each committed change arrives under exactly one id, and no id
is lost.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import WebhookVerificationError

from application.endpoints import Endpoints
from application.outbound import Outbound
from models.tables import OutboundAttempt, OutboundDelivery, OutboxMessage, WebhookEndpoint
from tests.conftest import API_TOKEN, PRIMARY_SECRET, ROTATED_SECRET
from tests.integration.test_pipeline import event_status, post_event
from tests.support import processes
from tests.support.apply import apply_batch
from tests.support.endpoint import Endpoint
from tests.support.processes import wait_until
from tests.support.stripe_events import charge, checkout_session, completed_event, event

CREDIT_TYPES = ["credits.granted", "credits.revoked"]


def deliveries(database, endpoint_id: int) -> list[OutboundDelivery]:
    with database.transaction() as session:
        return list(session.scalars(select(OutboundDelivery).where(OutboundDelivery.endpoint_id == endpoint_id)
                                    .order_by(OutboundDelivery.id)))


def attempts(database, delivery_id: int) -> list[tuple]:
    with database.transaction() as session:
        return [tuple(row) for row in session.execute(
            select(OutboundAttempt.attempt, OutboundAttempt.outcome, OutboundAttempt.status_code)
            .where(OutboundAttempt.delivery_id == delivery_id).order_by(OutboundAttempt.attempt))]


def test_a_purchase_and_its_refund_reach_the_endpoint_once_each_signed(client, worker, database, settings):
    with Endpoint() as receiver:
        endpoint, secret = Endpoints(database, settings).add(receiver.url, CREDIT_TYPES, secret=PRIMARY_SECRET)
        paid = event("checkout.session.completed", checkout_session(
            user_id="user_told", credits="100", amount_total=1000, payment_intent="pi_told"))
        refund = event("charge.refunded", charge("pi_told", 1000, 250))
        assert post_event(client, paid).status_code == 200
        wait_until(lambda: event_status(database, paid["id"]) == "processed", what="the purchase applied")
        assert post_event(client, refund).status_code == 200
        assert post_event(client, paid).status_code == 200  # a provider's redelivery announces nothing

        wait_until(lambda: len(receiver.received) >= 2, 20, what="two deliveries at the endpoint")
        time.sleep(1.0)  # anything extra would arrive now
        received = list(receiver.received)

    assert len(received) == 2 and len({r.message_id for r in received}) == 2
    payloads = {r.message_id: r.verify(secret) for r in received}
    by_type = {p["type"]: p for p in payloads.values()}
    assert set(by_type) == set(CREDIT_TYPES)
    granted, revoked = by_type["credits.granted"]["data"], by_type["credits.revoked"]["data"]
    assert (granted["user_id"], granted["credits"], granted["amount_cents"], granted["currency"]) == ("user_told", 100, 1000, "usd")
    assert (revoked["credits"], revoked["reason"], revoked["shortfall"]) == (25, "refund", 0)
    with database.transaction() as session:
        written = dict(session.execute(select(OutboxMessage.message_id, OutboxMessage.type)
                                       .where(OutboxMessage.type.in_(CREDIT_TYPES))).all())
    assert written == {mid: p["type"] for mid, p in payloads.items()}  # the id is the outbox message's own
    for delivery in deliveries(database, endpoint["id"]):
        assert delivery.status == "delivered" and delivery.attempts == 1
        assert attempts(database, delivery.id) == [(1, "delivered", 200)]
    # A wrong secret does not verify: the check above can fail.
    with pytest.raises(WebhookVerificationError):
        received[0].verify(ROTATED_SECRET)


def test_a_failing_endpoint_delays_but_never_loses_or_doubles_a_message(worker, client, database, settings):
    with Endpoint(answers=[500, 503, 500]) as receiver:
        endpoint, secret = Endpoints(database, settings).add(receiver.url, ["credits.granted"], secret=PRIMARY_SECRET)
        assert post_event(client, completed_event(user_id="user_patient", credits="7")).status_code == 200
        wait_until(lambda: any(d.status == "delivered" for d in deliveries(database, endpoint["id"])), 30,
                   what="delivered after three failures")
        received = list(receiver.received)

    assert [r.verify(secret)["type"] for r in received] == ["credits.granted"] * 4
    assert len({r.message_id for r in received}) == 1  # one message, one id, four tries
    [delivery] = deliveries(database, endpoint["id"])
    assert attempts(database, delivery.id) == [
        (1, "retry", 500), (2, "retry", 503), (3, "retry", 500), (4, "delivered", 200)
    ]


def test_410_gone_disables_the_endpoint(worker, client, database, settings):
    with Endpoint(answers=[410]) as receiver:
        endpoint, _ = Endpoints(database, settings).add(receiver.url, ["credits.granted"], secret=PRIMARY_SECRET)
        assert post_event(client, completed_event(user_id="user_gone", credits="3")).status_code == 200
        wait_until(lambda: Endpoints(database, settings).get(endpoint["id"])["status"] == "disabled", 20,
                   what="the endpoint disabled")
        assert post_event(client, completed_event(user_id="user_gone_too", credits="3")).status_code == 200
        wait_until(lambda: _undispatched(database) == 0, 10,
                   what="the second purchase dispatched")
        time.sleep(0.5)
        assert len(receiver.received) == 1  # nothing more goes to a disabled endpoint
    [delivery] = deliveries(database, endpoint["id"])
    assert delivery.status == "failed"
    assert attempts(database, delivery.id) == [(1, "gone", 410)]
    assert "410" in Endpoints(database, settings).get(endpoint["id"])["disabled_reason"]


def _undispatched(database) -> int:
    with database.transaction() as session:
        return len(session.scalars(select(OutboxMessage.id).where(OutboxMessage.dispatched_at.is_(None))).all())


def test_during_a_secret_rotation_the_receiver_verifies_with_either_secret(database, settings):
    """In-process: the property is the signature header, not the worker."""
    endpoints, outbound = Endpoints(database, settings), Outbound(database, settings)
    with Endpoint() as receiver:
        endpoint, old = endpoints.add(receiver.url, ["credits.granted"], secret=PRIMARY_SECRET)
        _, new = endpoints.rotate_secret(endpoint["id"], secret=ROTATED_SECRET)
        apply_batch(database, [completed_event(user_id="user_rotating", credits="5")])
        [delivery_id] = outbound.dispatch()
        assert outbound.deliver(delivery_id).outcome == "delivered"

        with database.transaction() as session:  # the overlap ends
            session.execute(update(WebhookEndpoint).values(previous_secret_expires_at=WebhookEndpoint.created_at))
        apply_batch(database, [completed_event(user_id="user_rotated", credits="5")])
        [later] = outbound.dispatch()
        assert outbound.deliver(later).outcome == "delivered"
        during, after = receiver.received

    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert during.verify(old) == during.verify(new)
    assert after.verify(new)["type"] == "credits.granted"
    with pytest.raises(WebhookVerificationError):
        after.verify(old)


def test_endpoints_are_managed_through_the_api(client, worker, database):
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with Endpoint(answers=[500]) as receiver:
        created = client.post("/api/webhook-endpoints", headers=auth,
                              json={"url": receiver.url, "event_types": ["credits.granted"], "description": "shop"})
        assert created.status_code == 201
        endpoint = created.get_json()
        secret, endpoint_id = endpoint.pop("secret"), endpoint["id"]
        assert secret.startswith("whsec_") and endpoint["status"] == "enabled"
        listed = client.get("/api/webhook-endpoints", headers=auth).get_json()["endpoints"]
        assert listed == [endpoint] and secret.removeprefix("whsec_") not in str(listed)
        assert client.post("/api/webhook-endpoints", headers=auth,
                           json={"url": "ftp://x", "event_types": ["nope"]}).status_code == 400

        tested = client.post(f"/api/webhook-endpoints/{endpoint_id}/test", headers=auth)
        assert tested.status_code == 202
        wait_until(lambda: len(receiver.received) >= 2, 20, what="the test message, failed once then delivered")
        first, second = receiver.received[:2]
        assert first.message_id == second.message_id and second.verify(secret)["type"] == "webhook.test"

        rotated = client.post(f"/api/webhook-endpoints/{endpoint_id}/rotate-secret", headers=auth).get_json()
        assert rotated["secret"] != secret and rotated["previous_secret_expires_at"]
        disabled = client.post(f"/api/webhook-endpoints/{endpoint_id}/disable", headers=auth, json={"reason": "maintenance"})
        assert (disabled.get_json()["status"], disabled.get_json()["disabled_reason"]) == ("disabled", "maintenance")
        assert client.post(f"/api/webhook-endpoints/{endpoint_id}/enable", headers=auth).get_json()["status"] == "enabled"

        [delivery] = client.get(f"/api/webhook-endpoints/{endpoint_id}/deliveries", headers=auth).get_json()["deliveries"]
        assert (delivery["status"], delivery["attempts"], delivery["message_id"]) == ("delivered", 2, first.message_id)
        replayed = client.post(f"/api/webhook-endpoints/{endpoint_id}/replay", headers=auth,
                               json={"message_id": first.message_id})
        assert replayed.status_code == 202 and replayed.get_json()["replayed"] == 1
        wait_until(lambda: len(receiver.received) == 3, 20, what="the replayed message")
        replay = receiver.received[2]
        assert replay.message_id == first.message_id  # the same id: the receiver dedupes it
        assert replay.verify(rotated["secret"]) == replay.verify(secret)  # both secrets during the overlap
    assert client.get("/api/webhook-endpoints/999", headers=auth).status_code == 404


def test_the_cli_manages_endpoints_and_replays_failed_deliveries_over_a_time_range(worker, process_env, database, settings):
    with Endpoint() as receiver:
        added = processes.cli(process_env, "endpoints", "add", receiver.url, "--type", "credits.granted")
        assert added.returncode == 0, added.stderr
        secret = added.stdout.split("signing secret (shown once): ")[1].strip()
        [endpoint] = Endpoints(database, settings).list()
        assert processes.cli(process_env, "endpoints", "disable", str(endpoint["id"])).returncode == 0
        listed = processes.cli(process_env, "endpoints", "list")
        assert "disabled" in listed.stdout and secret.removeprefix("whsec_") not in listed.stdout

        # Three messages whose deliveries failed for good, one of them written two days ago.
        apply_batch(database, [completed_event(user_id=f"user_replay_{n}", credits="1") for n in range(3)])
        assert processes.cli(process_env, "endpoints", "enable", str(endpoint["id"])).returncode == 0
        ids = Outbound(database, settings).dispatch()
        with database.transaction() as session:
            session.execute(update(OutboundDelivery).values(status="failed"))
            session.execute(update(OutboxMessage).where(OutboxMessage.id == select(OutboxMessage.id).order_by(OutboxMessage.id)
                            .limit(1).scalar_subquery()).values(created_at=OutboxMessage.created_at - timedelta(days=2)))
        assert len(ids) == 3

        replayed = processes.cli(process_env, "outbox", "replay", "--endpoint", str(endpoint["id"]), "--since", "1d",
                                 "--until", (datetime.now(UTC) + timedelta(minutes=1)).isoformat())
        assert replayed.returncode == 0, replayed.stderr
        assert "2 deliveries queued again" in replayed.stdout and "replaying to endpoint" in replayed.stderr
        wait_until(lambda: len(receiver.received) == 2, 20, what="the two replayed messages")
        time.sleep(0.5)
        received = list(receiver.received)
    assert len(received) == 2 and len({r.message_id for r in received}) == 2
    assert all(r.verify(secret)["type"] == "credits.granted" for r in received)
