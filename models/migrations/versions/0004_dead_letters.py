"""dead letters

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('provider_event_id', sa.String(length=255), nullable=False),
    sa.Column('event_type', sa.String(length=128), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('error_class', sa.String(length=16), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=False),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('first_failed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_failed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('resolved_by', sa.String(length=255), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution_note', sa.Text(), nullable=True),
    sa.CheckConstraint("error_class IN ('permanent', 'transient', 'not_ready', 'unexpected')", name=op.f('ck_dead_letters_error_class')),
    sa.CheckConstraint("status IN ('open', 'replayed', 'discarded')", name=op.f('ck_dead_letters_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters')),
    sa.UniqueConstraint('provider', 'provider_event_id', name=op.f('uq_dead_letters_provider_provider_event_id'))
    )
    op.create_index(op.f('ix_dead_letters_status_last_failed_at'), 'dead_letters', ['status', 'last_failed_at'], unique=False)
    op.add_column('webhook_events', sa.Column('dead_letter_id', sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f('fk_webhook_events_dead_letter_id_dead_letters'), 'webhook_events', 'dead_letters', ['dead_letter_id'], ['id'])


def downgrade() -> None:
    op.drop_constraint(op.f('fk_webhook_events_dead_letter_id_dead_letters'), 'webhook_events', type_='foreignkey')
    op.drop_column('webhook_events', 'dead_letter_id')
    op.drop_index(op.f('ix_dead_letters_status_last_failed_at'), table_name='dead_letters')
    op.drop_table('dead_letters')
