"""payment facts on the payment row: captured amount, refunds, disputes, fraud warnings, credits

Everything a batch of events needs to settle a payment now lives on its row, so
a batch reads one locked row per payment instead of a row plus its disputes.
The disputes table is folded into ``payments.disputes``. Spend keys chosen by
callers move into their own namespace (``spend:<key>``) so no caller can
choose a key payhooks writes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

JSONB_EMPTY = sa.text("'{}'::jsonb")


def upgrade() -> None:
    op.add_column('payments', sa.Column('paid_amount_cents', sa.BigInteger(), nullable=True))
    op.add_column('payments', sa.Column('paid_currency', sa.String(length=3), nullable=True))
    op.add_column('payments', sa.Column('amount_mismatch', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('payments', sa.Column('refunds', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False))
    op.add_column('payments', sa.Column('disputes', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False))
    op.add_column('payments', sa.Column('fraud_warnings', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False))
    op.add_column('payments', sa.Column('unpaid_status_event', sa.String(length=255), nullable=True))
    op.add_column('payments', sa.Column('credits_granted', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('payments', sa.Column('credits_taken_back', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('payments', sa.Column('credits_frozen', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('credit_accounts', sa.Column('frozen', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('subscriptions', sa.Column('last_event_id', sa.String(length=255), nullable=True))

    op.execute("""
        UPDATE payments p SET disputes = d.disputes
        FROM (
            SELECT payment_id, jsonb_object_agg(provider_dispute_id, jsonb_build_object(
                'status', status, 'reason', reason, 'amount_cents', amount_cents,
                'closed_at', to_char(closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'))) AS disputes
            FROM disputes GROUP BY payment_id
        ) d WHERE d.payment_id = p.id
    """)
    op.execute("""
        UPDATE payments p SET
            credits_granted = l.granted,
            credits_taken_back = l.taken_back,
            paid_amount_cents = CASE WHEN p.paid_at IS NOT NULL THEN p.amount_cents END,
            paid_currency = CASE WHEN p.paid_at IS NOT NULL THEN p.currency END
        FROM (
            SELECT payment_id,
                   coalesce(sum(amount) FILTER (WHERE kind = 'grant'), 0) AS granted,
                   coalesce(sum(-amount + shortfall) FILTER (WHERE kind = 'clawback'), 0) AS taken_back
            FROM credit_ledger WHERE payment_id IS NOT NULL GROUP BY payment_id
        ) l WHERE l.payment_id = p.id
    """)
    op.execute("UPDATE credit_ledger SET idempotency_key = 'spend:' || idempotency_key WHERE kind = 'spend'")

    op.drop_index(op.f('ix_disputes_payment_id'), table_name='disputes')
    op.drop_table('disputes')
    op.drop_column('payments', 'has_disputes')

    op.drop_constraint(op.f('ck_credit_ledger_kind'), 'credit_ledger', type_='check')
    op.create_check_constraint(
        op.f('ck_credit_ledger_kind'), 'credit_ledger',
        "kind IN ('grant', 'clawback', 'reversal', 'spend')",
    )
    op.create_check_constraint(op.f('ck_payments_credits_granted_not_negative'), 'payments', 'credits_granted >= 0')
    op.create_check_constraint(op.f('ck_payments_credits_frozen_not_negative'), 'payments', 'credits_frozen >= 0')


def downgrade() -> None:
    op.drop_constraint(op.f('ck_payments_credits_frozen_not_negative'), 'payments', type_='check')
    op.drop_constraint(op.f('ck_payments_credits_granted_not_negative'), 'payments', type_='check')
    op.drop_constraint(op.f('ck_credit_ledger_kind'), 'credit_ledger', type_='check')
    op.create_check_constraint(op.f('ck_credit_ledger_kind'), 'credit_ledger', "kind IN ('grant', 'clawback', 'spend')")
    op.execute("UPDATE credit_ledger SET idempotency_key = substr(idempotency_key, 7) WHERE kind = 'spend'")
    op.add_column('payments', sa.Column('has_disputes', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.create_table('disputes',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('provider_dispute_id', sa.String(length=255), nullable=False),
    sa.Column('payment_id', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=True),
    sa.Column('amount_cents', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('open', 'won', 'lost')", name=op.f('ck_disputes_status')),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_disputes_payment_id_payments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_disputes')),
    sa.UniqueConstraint('provider', 'provider_dispute_id', name=op.f('uq_disputes_provider_provider_dispute_id'))
    )
    op.create_index(op.f('ix_disputes_payment_id'), 'disputes', ['payment_id'], unique=False)
    op.execute("""
        INSERT INTO disputes (provider, provider_dispute_id, payment_id, status, reason, amount_cents)
        SELECT p.provider, d.key, p.id, d.value->>'status', d.value->>'reason', (d.value->>'amount_cents')::bigint
        FROM payments p, jsonb_each(p.disputes) d
    """)
    op.execute("UPDATE payments SET has_disputes = disputes <> '{}'::jsonb")
    for column in ('credits_frozen', 'credits_taken_back', 'credits_granted', 'unpaid_status_event', 'fraud_warnings',
                   'disputes', 'refunds', 'amount_mismatch', 'paid_currency', 'paid_amount_cents'):
        op.drop_column('payments', column)
    op.drop_column('credit_accounts', 'frozen')
    op.drop_column('subscriptions', 'last_event_id')
