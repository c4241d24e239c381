"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('credit_accounts',
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('balance', sa.BigInteger(), nullable=False),
    sa.Column('total_purchased', sa.BigInteger(), nullable=False),
    sa.Column('total_refunded', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_credit_accounts'))
    )
    op.create_table('payments',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('provider_session_id', sa.String(length=255), nullable=True),
    sa.Column('provider_payment_id', sa.String(length=255), nullable=True),
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('credits', sa.BigInteger(), nullable=False),
    sa.Column('amount_cents', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('package_id', sa.String(length=255), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_event_created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'processing', 'completed', 'failed', 'expired', 'cancelled', 'refunded', 'partially_refunded', 'disputed')", name=op.f('ck_payments_status')),
    sa.CheckConstraint('amount_cents IS NULL OR amount_cents >= 0', name=op.f('ck_payments_amount_not_negative')),
    sa.CheckConstraint('credits >= 0', name=op.f('ck_payments_credits_not_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments')),
    sa.UniqueConstraint('provider', 'provider_session_id', name=op.f('uq_payments_provider_provider_session_id'))
    )
    op.create_index(op.f('ix_payments_provider_provider_payment_id'), 'payments', ['provider', 'provider_payment_id'], unique=False)
    op.create_index(op.f('ix_payments_status_created_at'), 'payments', ['status', 'created_at'], unique=False)
    op.create_index(op.f('ix_payments_user_id_created_at'), 'payments', ['user_id', 'created_at'], unique=False)
    op.create_table('webhook_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('provider_event_id', sa.String(length=255), nullable=False),
    sa.Column('event_type', sa.String(length=128), nullable=False),
    sa.Column('payload', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('provider_created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('received', 'processed', 'ignored', 'failed')", name=op.f('ck_webhook_events_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_events')),
    sa.UniqueConstraint('provider', 'provider_event_id', name=op.f('uq_webhook_events_provider_provider_event_id'))
    )
    op.create_index(op.f('ix_webhook_events_status_received_at'), 'webhook_events', ['status', 'received_at'], unique=False)
    op.create_table('credit_ledger',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('payment_id', sa.BigInteger(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('cause', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('grant', 'clawback')", name=op.f('ck_credit_ledger_kind')),
    sa.CheckConstraint('amount <> 0', name=op.f('ck_credit_ledger_amount_not_zero')),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_credit_ledger_payment_id_payments')),
    sa.ForeignKeyConstraint(['user_id'], ['credit_accounts.user_id'], name=op.f('fk_credit_ledger_user_id_credit_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_ledger')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_credit_ledger_idempotency_key'))
    )
    op.create_index(op.f('ix_credit_ledger_payment_id'), 'credit_ledger', ['payment_id'], unique=False)
    op.create_index(op.f('ix_credit_ledger_user_id_id'), 'credit_ledger', ['user_id', 'id'], unique=False)
    op.create_table('payment_status_history',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('payment_id', sa.BigInteger(), nullable=False),
    sa.Column('from_status', sa.String(length=32), nullable=True),
    sa.Column('to_status', sa.String(length=32), nullable=False),
    sa.Column('cause', sa.String(length=255), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_payment_status_history_payment_id_payments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_status_history'))
    )
    op.create_index(op.f('ix_payment_status_history_payment_id_id'), 'payment_status_history', ['payment_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_payment_status_history_payment_id_id'), table_name='payment_status_history')
    op.drop_table('payment_status_history')
    op.drop_index(op.f('ix_credit_ledger_user_id_id'), table_name='credit_ledger')
    op.drop_index(op.f('ix_credit_ledger_payment_id'), table_name='credit_ledger')
    op.drop_table('credit_ledger')
    op.drop_index(op.f('ix_webhook_events_status_received_at'), table_name='webhook_events')
    op.drop_table('webhook_events')
    op.drop_index(op.f('ix_payments_user_id_created_at'), table_name='payments')
    op.drop_index(op.f('ix_payments_status_created_at'), table_name='payments')
    op.drop_index(op.f('ix_payments_provider_provider_payment_id'), table_name='payments')
    op.drop_table('payments')
    op.drop_table('credit_accounts')
