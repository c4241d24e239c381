"""/metrics on the outbound deliveries: pending and failed counted off their indexes, the oldest pending's age."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from receiver import create_app
from tests.support.outbound_rows import write_message


def scrape(settings) -> dict[tuple[str, tuple], float]:
    body = create_app(settings).test_client().get("/metrics").get_data(as_text=True)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def test_the_gauges_count_pending_and_failed_deliveries_and_age_the_oldest_pending(settings, database):
    before = scrape(settings)
    with database.transaction() as session:
        write_message(session, "metrics_done", days=2, deliveries=("delivered", "delivered"))
        write_message(session, "metrics_failed", days=3, deliveries=("failed", "failed", "delivered"))
        write_message(session, "metrics_pending", days=1, deliveries=("pending",))

    after = scrape(settings)

    def grew(status: str) -> float:
        key = ("payhooks_outbound_deliveries", (("status", status),))
        return after.get(key, 0) - before.get(key, 0)

    assert (grew("pending"), grew("failed")) == (1, 2)
    assert ("payhooks_outbound_deliveries", (("status", "delivered"),)) not in after  # not counted per scrape
    assert after[("payhooks_outbound_oldest_pending_age_seconds", ())] >= 86_400
    with database.transaction() as session:
        session.execute(text("DELETE FROM outbox_messages WHERE message_id LIKE 'metrics_%'"))
