"""works remember their driver's results queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('iwf_works', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reply_to', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('iwf_works', schema=None) as batch_op:
        batch_op.drop_column('reply_to')
