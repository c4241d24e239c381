"""lifecycle: facts, attempts, disputes, subscriptions, held events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subscriptions',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('provider_subscription_id', sa.String(length=255), nullable=False),
    sa.Column('provider_customer_id', sa.String(length=255), nullable=True),
    sa.Column('user_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('price_id', sa.String(length=255), nullable=True),
    sa.Column('credits_per_period', sa.BigInteger(), nullable=True),
    sa.Column('current_period_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_event_created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriptions')),
    sa.UniqueConstraint('provider', 'provider_subscription_id', name=op.f('uq_subscriptions_provider_provider_subscription_id'))
    )
    op.create_index(op.f('ix_subscriptions_user_id'), 'subscriptions', ['user_id'], unique=False)
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
    op.create_table('payment_attempts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('payment_id', sa.BigInteger(), nullable=False),
    sa.Column('code', sa.String(length=255), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('cause', sa.String(length=255), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_payment_attempts_payment_id_payments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_attempts'))
    )
    op.create_index(op.f('ix_payment_attempts_payment_id_id'), 'payment_attempts', ['payment_id', 'id'], unique=False)
    op.add_column('credit_ledger', sa.Column('shortfall', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('payments', sa.Column('package_name', sa.String(length=255), nullable=True))
    op.add_column('payments', sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('payments', sa.Column('refunded_cents', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('payments', sa.Column('has_disputes', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('payments', sa.Column('unpaid_status', sa.String(length=32), nullable=True))
    op.add_column('payments', sa.Column('unpaid_status_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('webhook_events', sa.Column('hold_key', sa.String(length=255), nullable=True))
    op.create_index(op.f('ix_webhook_events_hold_key'), 'webhook_events', ['hold_key'], unique=False, postgresql_where=sa.text("status = 'held'"))

    # CHECK constraints autogenerate does not compare.
    op.drop_constraint(op.f('ck_webhook_events_status'), 'webhook_events', type_='check')
    op.create_check_constraint(op.f('ck_webhook_events_status'), 'webhook_events',
                               "status IN ('received', 'processed', 'ignored', 'held', 'failed')")
    op.drop_constraint(op.f('ck_credit_ledger_kind'), 'credit_ledger', type_='check')
    op.create_check_constraint(op.f('ck_credit_ledger_kind'), 'credit_ledger', "kind IN ('grant', 'clawback', 'spend')")
    op.drop_constraint(op.f('ck_credit_ledger_amount_not_zero'), 'credit_ledger', type_='check')
    op.create_check_constraint(op.f('ck_credit_ledger_amount_or_shortfall'), 'credit_ledger', 'amount <> 0 OR shortfall > 0')
    op.create_check_constraint(op.f('ck_credit_ledger_shortfall_not_negative'), 'credit_ledger', 'shortfall >= 0')
    op.create_check_constraint(op.f('ck_payments_refunded_not_negative'), 'payments', 'refunded_cents >= 0')

    # Payments completed under 0001 were paid: record the fact the status now derives from.
    op.execute("UPDATE payments SET paid_at = updated_at WHERE status = 'completed'")


def downgrade() -> None:
    op.drop_constraint(op.f('ck_payments_refunded_not_negative'), 'payments', type_='check')
    op.drop_constraint(op.f('ck_credit_ledger_shortfall_not_negative'), 'credit_ledger', type_='check')
    op.drop_constraint(op.f('ck_credit_ledger_amount_or_shortfall'), 'credit_ledger', type_='check')
    op.create_check_constraint(op.f('ck_credit_ledger_amount_not_zero'), 'credit_ledger', 'amount <> 0')
    op.drop_constraint(op.f('ck_credit_ledger_kind'), 'credit_ledger', type_='check')
    op.create_check_constraint(op.f('ck_credit_ledger_kind'), 'credit_ledger', "kind IN ('grant', 'clawback')")
    op.drop_constraint(op.f('ck_webhook_events_status'), 'webhook_events', type_='check')
    op.create_check_constraint(op.f('ck_webhook_events_status'), 'webhook_events',
                               "status IN ('received', 'processed', 'ignored', 'failed')")
    op.drop_index(op.f('ix_webhook_events_hold_key'), table_name='webhook_events', postgresql_where=sa.text("status = 'held'"))
    op.drop_column('webhook_events', 'hold_key')
    op.drop_column('payments', 'unpaid_status_at')
    op.drop_column('payments', 'unpaid_status')
    op.drop_column('payments', 'has_disputes')
    op.drop_column('payments', 'refunded_cents')
    op.drop_column('payments', 'paid_at')
    op.drop_column('payments', 'package_name')
    op.drop_column('credit_ledger', 'shortfall')
    op.drop_index(op.f('ix_payment_attempts_payment_id_id'), table_name='payment_attempts')
    op.drop_table('payment_attempts')
    op.drop_index(op.f('ix_disputes_payment_id'), table_name='disputes')
    op.drop_table('disputes')
    op.drop_index(op.f('ix_subscriptions_user_id'), table_name='subscriptions')
    op.drop_table('subscriptions')
