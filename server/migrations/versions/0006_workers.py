"""workers as they report themselves (heartbeats, clean stops, lost)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'iwf_workers',
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('queue', sa.String(length=255), nullable=False),
        sa.Column('slots', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('running', sa.Integer(), nullable=False),
        sa.Column('held', sa.Integer(), nullable=False),
        sa.Column('served', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.Float(), nullable=True),
        sa.Column('last_heartbeat', sa.Float(), nullable=True),
        sa.Column('stopped_at', sa.Float(), nullable=True),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('iwf_workers')
