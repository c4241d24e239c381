"""outbox: what the host application must hear of, written with the change

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outbox_messages',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('message_id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages')),
    sa.UniqueConstraint('message_id', name=op.f('uq_outbox_messages_message_id'))
    )
    op.create_index('ix_outbox_messages_undispatched', 'outbox_messages', ['id'], unique=False,
                    postgresql_where=sa.text('dispatched_at IS NULL'))
    op.create_index(op.f('ix_outbox_messages_user_id_id'), 'outbox_messages', ['user_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_outbox_messages_user_id_id'), table_name='outbox_messages')
    op.drop_index('ix_outbox_messages_undispatched', table_name='outbox_messages', postgresql_where=sa.text('dispatched_at IS NULL'))
    op.drop_table('outbox_messages')
