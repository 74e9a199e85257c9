"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('iwf_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('workflow_id', sa.String(length=64), nullable=True),
    sa.Column('work_id', sa.String(length=64), nullable=True),
    sa.Column('job_key', sa.String(length=255), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest')
    )
    with op.batch_alter_table('iwf_events', schema=None) as batch_op:
        batch_op.create_index('ix_iwf_events_job', ['work_id', 'job_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_iwf_events_workflow_id'), ['workflow_id'], unique=False)

    op.create_table('iwf_work_edges',
    sa.Column('parent_id', sa.String(length=64), nullable=False),
    sa.Column('child_id', sa.String(length=64), nullable=False),
    sa.Column('workflow_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('parent_id', 'child_id')
    )
    with op.batch_alter_table('iwf_work_edges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_iwf_work_edges_workflow_id'), ['workflow_id'], unique=False)

    op.create_table('iwf_workflows',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('parent_id', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('submitted_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('iwf_workflows', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_iwf_workflows_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_iwf_workflows_submitted_at'), ['submitted_at'], unique=False)

    op.create_table('iwf_works',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('workflow_id', sa.String(length=64), nullable=True),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('executor', sa.String(length=255), nullable=False),
    sa.Column('queue', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('n_jobs', sa.Integer(), nullable=False),
    sa.Column('max_walltime', sa.Float(), nullable=True),
    sa.Column('submitted_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['workflow_id'], ['iwf_workflows.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('iwf_works', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_iwf_works_workflow_id'), ['workflow_id'], unique=False)

    op.create_table('iwf_jobs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('work_id', sa.String(length=64), nullable=False),
    sa.Column('workflow_id', sa.String(length=64), nullable=True),
    sa.Column('job_key', sa.String(length=255), nullable=False),
    sa.Column('args', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('lost_workers', sa.Text(), nullable=True),
    sa.Column('submitted_at', sa.Float(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('last_seen', sa.Float(), nullable=True),
    sa.Column('heartbeats', sa.Boolean(), nullable=False),
    sa.Column('requeued', sa.Boolean(), nullable=False),
    sa.Column('retry_at', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('result_ref', sa.String(length=1024), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['work_id'], ['iwf_works.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('work_id', 'job_key', name='uq_iwf_jobs_work_key')
    )
    with op.batch_alter_table('iwf_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_iwf_jobs_status', ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_iwf_jobs_work_id'), ['work_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_iwf_jobs_workflow_id'), ['workflow_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('iwf_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_iwf_jobs_workflow_id'))
        batch_op.drop_index(batch_op.f('ix_iwf_jobs_work_id'))
        batch_op.drop_index('ix_iwf_jobs_status')

    op.drop_table('iwf_jobs')
    with op.batch_alter_table('iwf_works', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_iwf_works_workflow_id'))

    op.drop_table('iwf_works')
    with op.batch_alter_table('iwf_workflows', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_iwf_workflows_submitted_at'))
        batch_op.drop_index(batch_op.f('ix_iwf_workflows_status'))

    op.drop_table('iwf_workflows')
    with op.batch_alter_table('iwf_work_edges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_iwf_work_edges_workflow_id'))

    op.drop_table('iwf_work_edges')
    with op.batch_alter_table('iwf_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_iwf_events_workflow_id'))
        batch_op.drop_index('ix_iwf_events_job')

    op.drop_table('iwf_events')
