"""artifact catalog: names (with the last version taken), immutable versions with lineage, movable tags

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'iwf_artifact_names',
        sa.Column('name', sa.String(128), primary_key=True),
        sa.Column('last_version', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
    )
    op.create_table(
        'iwf_artifact_versions',
        sa.Column('name', sa.String(128), sa.ForeignKey('iwf_artifact_names.name'), primary_key=True),
        sa.Column('version', sa.Integer(), primary_key=True),
        sa.Column('digest', sa.String(64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('filename', sa.String(255), nullable=False),
        sa.Column('meta', sa.Text(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('workflow_id', sa.String(64), nullable=True),
        sa.Column('work_id', sa.String(64), nullable=True),
        sa.Column('work_name', sa.String(255), nullable=False),
        sa.Column('job_key', sa.String(255), nullable=True),
        sa.Column('attempt', sa.Integer(), nullable=True),
        sa.Column('call_identity', sa.String(64), nullable=True),
        sa.Column('func_digest', sa.String(64), nullable=True),
        sa.Column('source_digest', sa.String(64), nullable=True),
        sa.Column('args_digest', sa.String(64), nullable=True),
        sa.Column('executor', sa.String(255), nullable=False),
        sa.Column('worker', sa.String(255), nullable=False),
    )
    op.create_index('ix_iwf_artifact_versions_digest', 'iwf_artifact_versions', ['digest'])
    op.create_index('ix_iwf_artifact_versions_workflow', 'iwf_artifact_versions', ['workflow_id'])
    op.create_table(
        'iwf_artifact_tags',
        sa.Column('name', sa.String(128), sa.ForeignKey('iwf_artifact_names.name'), primary_key=True),
        sa.Column('tag', sa.String(64), primary_key=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('iwf_artifact_tags')
    op.drop_index('ix_iwf_artifact_versions_workflow', table_name='iwf_artifact_versions')
    op.drop_index('ix_iwf_artifact_versions_digest', table_name='iwf_artifact_versions')
    op.drop_table('iwf_artifact_versions')
    op.drop_table('iwf_artifact_names')
