"""Outbox messages and outbound deliveries written straight into the tables, at any age and status."""

from __future__ import annotations

from sqlalchemy import text


def write_message(session, name: str, *, days: int, dispatched: bool = True, deliveries: tuple[str, ...] = ()) -> None:
    """An outbox message written ``days`` ago, with a delivery (and one logged attempt) per status given."""
    outbox_id = session.scalar(
        text(
            """
            INSERT INTO outbox_messages (message_id, type, user_id, data, created_at, dispatched_at)
            VALUES (:name, 'payment.succeeded', 'user_ret_out', '{}', now() - make_interval(days => :days),
                    CASE WHEN :dispatched THEN now() - make_interval(days => :days) END)
            RETURNING id
            """
        ),
        {"name": name, "days": days, "dispatched": dispatched},
    )
    for number, status in enumerate(deliveries):
        delivery_id = session.scalar(
            text(
                """
                INSERT INTO outbound_deliveries (outbox_id, consumer, status, give_up_at)
                VALUES (:outbox, :consumer, :status, now()) RETURNING id
                """
            ),
            {"outbox": outbox_id, "consumer": f"hook:h{number}", "status": status},
        )
        session.execute(
            text("INSERT INTO outbound_attempts (delivery_id, attempt, outcome, latency_ms) VALUES (:id, 1, 'retry', 5)"),
            {"id": delivery_id},
        )
