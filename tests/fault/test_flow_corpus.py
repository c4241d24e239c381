"""The flow corpus through the real apply path: every Stripe flow ends as specified, in any delivery order.

``tests/support/stripe_flows.py`` holds, for each way a Stripe account sells
credits, the events Stripe sends (legacy and basil shapes) and how the flow
must end. Here each flow's events go through the unit of work on the real
PostgreSQL — the code the batch consumers run — in the provider's order, and
then (hypothesis) in random orders, with random duplicates, cut into random
batches; a session's line items are looked up from a fake Stripe as the
worker would. ``test_flow_corpus_end_to_end`` does the same through the
receiver, Redis and Celery workers.
"""

from __future__ import annotations

import itertools
import random

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, or_, select

from application.lookups import look_up_session
from application.tracker import PaymentTracker
from application.unit import UnitOfWork
from infra.settings import Settings
from models.enums import EventStatus, FraudPolicy, LedgerKind, ZeroAmountInvoices
from models.rules import Plan, Rules
from models.tables import CreditAccount, CreditLedger, Payment, Subscription, WebhookEvent
from providers.stripe_api import StripeAPI
from receiver import create_app
from tests.conftest import PRIMARY_SECRET
from tests.support import processes
from tests.support.apply import apply_batch, parsed
from tests.support.fake_stripe import FakeStripe
from tests.support.processes import wait_until
from tests.support.stripe_events import SHAPES, encode, signed_headers
from tests.support.stripe_flows import FLOWS, Flow, build, config_file, serve

CASES = [(name, shape) for name in sorted(FLOWS) for shape in SHAPES]


@pytest.fixture(scope="module")
def stripe_fake():
    with FakeStripe() as fake:
        yield fake


def rules_for(flow: Flow) -> Rules:
    config = flow.config
    return Rules(
        credit_catalog=dict(config.catalog),
        subscription_plans={
            price: Plan(config.plans.get(price), ZeroAmountInvoices.GRANT if price in config.zero_amount_plans else None)
            for price in {*config.plans, *config.zero_amount_plans}
        },
        fraud_policy=FraudPolicy.FREEZE if config.freeze_on_fraud else FraudPolicy.OFF,
    )


def deliver(database, fake, flow: Flow, events: list[dict], cuts: list[int] = ()) -> None:
    """The events in this order, in batches cut at these places, then the lookups the worker would make."""
    rules = rules_for(flow)
    serve(flow, fake)
    unit = UnitOfWork(database, rules)
    for recorded in flow.config.recorded:
        PaymentTracker(unit, Settings()).create_pending_payment(
            user_id=recorded.user_id, amount_cents=recorded.amount_cents, currency=recorded.currency,
            credits=recorded.credits, session_id=recorded.session_id,
        )
    edges = [0, *sorted({c % (len(events) + 1) for c in cuts}), len(events)]
    lookups: set[tuple[str, str]] = set()
    for start, end in zip(edges, edges[1:], strict=False):
        if end > start:
            lookups |= apply_batch(database, [parsed(e) for e in events[start:end]], rules).lookups
    api = StripeAPI("sk_test_corpus", fake.url)
    for provider, session_id in sorted(lookups):
        look_up_session(unit, api, provider, session_id)


def check(database, flow: Flow) -> None:
    where = f"flow {flow.name} ({flow.shape})"
    with database.transaction() as session:
        for outcome in flow.payments:
            keys = [outcome.key, *outcome.also_known_as]
            rows = session.scalars(
                select(Payment).where(or_(Payment.provider_session_id.in_(keys), Payment.provider_payment_id.in_(keys)))
            ).all()
            assert len(rows) == 1, f"{where}: {len(rows)} payments for {outcome.key}"
            row = rows[0]
            assert row.status in outcome.statuses, f"{where}: {outcome.key} is {row.status}, not {set(outcome.statuses)}"
            got = (row.user_id, row.credits_granted, row.credits_taken_back, row.credits_frozen)
            want = (outcome.user_id, outcome.granted, outcome.taken_back, outcome.frozen)
            assert got == want, f"{where}: {outcome.key} (user, granted, taken back, frozen) {got} != {want}"
        for user, expected in flow.users.items():
            account = session.get(CreditAccount, user)
            got = (account.balance, account.total_purchased, account.total_refunded, account.frozen) if account else (0, 0, 0, 0)
            want = (expected.balance, expected.purchased, expected.taken_back, expected.frozen)
            assert got == want, f"{where}: {user} (balance, purchased, taken back, frozen) {got} != {want}"
            ledger = session.scalar(select(func.coalesce(func.sum(CreditLedger.amount), 0)).where(CreditLedger.user_id == user))
            assert ledger == got[0], f"{where}: {user}'s balance is not the sum of the ledger"
        for subscription_id, status in flow.subscriptions.items():
            found = session.scalar(select(Subscription.status).where(Subscription.provider_subscription_id == subscription_id))
            assert found == status, f"{where}: subscription {subscription_id} is {found}, not {status}"
        for provider_id in flow.no_grant:
            granted = session.scalar(
                select(func.count()).select_from(CreditLedger).join(Payment, Payment.id == CreditLedger.payment_id).where(
                    CreditLedger.kind == LedgerKind.GRANT,
                    or_(Payment.provider_session_id == provider_id, Payment.provider_payment_id == provider_id),
                )
            )
            assert granted == 0, f"{where}: {provider_id} was granted credits"
        ids = [e["id"] for e in flow.events]
        left = session.execute(
            select(WebhookEvent.provider_event_id, WebhookEvent.status, WebhookEvent.last_error).where(
                WebhookEvent.provider_event_id.in_(ids),
                WebhookEvent.status.in_([EventStatus.HELD, EventStatus.FAILED, EventStatus.RECEIVED]),
            )
        ).all()
        assert not left, f"{where}: events left unsettled: {left}"


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_each_flow_in_the_providers_order(database, stripe_fake, name, shape):
    flow = build(name, shape)
    deliver(database, stripe_fake, flow, list(flow.events))
    check(database, flow)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_each_flow_in_reverse_order_in_one_batch(database, stripe_fake, name, shape):
    """The hardest order for holding and releasing: everything that depends on something arrives first."""
    flow = build(name, shape)
    deliver(database, stripe_fake, flow, list(reversed(flow.events)))
    check(database, flow)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_order_with_duplicates_and_batches_ends_as_specified(database, stripe_fake, data):
    name, shape = data.draw(st.sampled_from(CASES), label="flow")
    flow = build(name, shape)
    events = list(data.draw(st.permutations(flow.events), label="delivery order"))
    events += data.draw(st.lists(st.sampled_from(flow.events), max_size=3), label="redeliveries")
    cuts = data.draw(st.lists(st.integers(0, len(events)), max_size=4), label="batch cuts")
    deliver(database, stripe_fake, flow, events, cuts)
    check(database, flow)


# -- end to end: signed deliveries, the receiver, Redis, real Celery workers --------------


def _config_file(tmp_path, flows: list[Flow]) -> str:
    return str(config_file(flows, tmp_path / f"payhooks-{len(list(tmp_path.iterdir()))}.yaml"))


def test_flow_corpus_end_to_end(process_env, test_services, settings, database, stripe_fake, tmp_path):
    """Every flow in both shapes at once, interleaved, duplicated, signed and posted to the receiver."""
    rng = random.Random(8)
    flows = [build(name, shape) for name, shape in CASES]
    for flow in flows:
        serve(flow, stripe_fake)
    groups = {
        policy: [f for f in flows if f.config.freeze_on_fraud == (policy == "freeze")] for policy in ("off", "freeze")
    }
    workers = []
    try:
        for db, (policy, group) in enumerate(groups.items(), start=5):
            url = test_services.redis_url.rsplit("/", 1)[0] + f"/{db}"
            redis_lib.Redis.from_url(url).flushdb()
            env = {**process_env, "REDIS_URL": url, "FRAUD_POLICY": policy, "PAYHOOKS_CONFIG": _config_file(tmp_path, group),
                   "STRIPE_API_KEY": "sk_test_corpus", "STRIPE_API_BASE": stripe_fake.url, "EVENT_BATCH_SIZE": "20"}
            workers.append(processes.celery_worker(env, name=f"corpus-{policy}"))
            receiver = create_app(settings.replace(redis_url=url)).test_client()
            for flow in group:
                unit = UnitOfWork(database, Rules())
                for recorded in flow.config.recorded:
                    PaymentTracker(unit, Settings()).create_pending_payment(
                        user_id=recorded.user_id, amount_cents=recorded.amount_cents, currency=recorded.currency,
                        credits=recorded.credits, session_id=recorded.session_id,
                    )
            deliveries = [evt for flow in group for evt in flow.events]
            deliveries += rng.sample(deliveries, len(deliveries) // 5)  # some delivered twice
            rng.shuffle(deliveries)
            for evt in deliveries:
                body = encode(evt)
                response = receiver.post("/webhooks/stripe", data=body, headers=signed_headers(body, PRIMARY_SECRET))
                assert response.status_code == 200, response.get_json()
        event_ids = [evt["id"] for flow in flows for evt in flow.events]

        def settled() -> bool:
            with database.transaction() as session:
                return session.scalar(
                    select(func.count()).where(
                        WebhookEvent.provider_event_id.in_(event_ids),
                        WebhookEvent.status.in_([EventStatus.PROCESSED, EventStatus.IGNORED]),
                    )
                ) == len(set(event_ids))

        wait_until(settled, 90, interval=0.2, what=f"all {len(set(event_ids))} events of {len(flows)} flows settled")
    finally:
        for worker in workers:
            worker.stop()
    for flow in flows:
        check(database, flow)


TIES = [(name, shape) for name, shape in CASES if any(len(p.statuses) > 1 for p in build(name, shape).payments)]


@pytest.mark.parametrize(("name", "shape"), TIES)
def test_a_tie_ends_the_same_in_every_order(database, stripe_fake, name, shape):
    """Where the corpus allows either status (news in the same second), every order must pick the same one."""
    ends = set()
    for order in itertools.permutations(range(len(build(name, shape).events))):
        flow = build(name, shape)
        deliver(database, stripe_fake, flow, [flow.events[i] for i in order])
        check(database, flow)
        with database.transaction() as session:
            outcome = flow.payments[0]
            keys = [outcome.key, *outcome.also_known_as]
            ends.add(session.scalar(
                select(Payment.status).where(or_(Payment.provider_session_id.in_(keys), Payment.provider_payment_id.in_(keys)))
            ))
    assert len(ends) == 1, f"{name} ({shape}) ends as {ends} depending on the order"
