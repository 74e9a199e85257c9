"""jobs remember whether their result was reused (resume or cache=True) instead of run

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('iwf_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cached', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('iwf_jobs', schema=None) as batch_op:
        batch_op.drop_column('cached')
