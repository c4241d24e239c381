"""recovery

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('provider_cursors',
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('last_event_created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('provider', name=op.f('pk_provider_cursors'))
    )
    op.add_column('payments', sa.Column('next_check_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('payments', 'next_check_at')
    op.drop_table('provider_cursors')
