"""manual payments: who moved a payment's status, and why

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

Every history row names its actor: the provider for its own events (rows
written before this revision get their payment's provider), an operator for
a manual mark, with the reason given.
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('payment_status_history', sa.Column('actor', sa.String(length=255), nullable=True))
    op.add_column('payment_status_history', sa.Column('reason', sa.Text(), nullable=True))
    op.execute(
        "UPDATE payment_status_history h SET actor = p.provider FROM payments p WHERE p.id = h.payment_id"
    )


def downgrade() -> None:
    op.drop_column('payment_status_history', 'reason')
    op.drop_column('payment_status_history', 'actor')
