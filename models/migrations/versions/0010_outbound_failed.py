"""outbound: an index of failed deliveries, so /metrics and replays read them without scanning the table

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # CONCURRENTLY: the deliveries table may be large by now, and workers keep writing it.
    with op.get_context().autocommit_block():
        op.create_index('ix_outbound_deliveries_failed', 'outbound_deliveries', ['endpoint_id', 'id'], unique=False,
                        postgresql_where=sa.text("status = 'failed'"), postgresql_concurrently=True,
                        if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_outbound_deliveries_failed', table_name='outbound_deliveries',
                      postgresql_where=sa.text("status = 'failed'"), postgresql_concurrently=True, if_exists=True)
