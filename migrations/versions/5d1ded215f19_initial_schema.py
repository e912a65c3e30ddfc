"""initial schema: tasks, dependencies, runs, api tokens, scheduler state

Revision ID: 5d1ded215f19
Revises: 
Create Date: 2026-11-28 01:04:26.979245

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5d1ded215f19'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():

    op.create_table('api_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('name', name=op.f('uq_api_token_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_token_token_hash'))
    )
    op.create_table('scheduler_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_tick_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scheduler_state'))
    )
    op.create_table('task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('cron_expression', sa.String(length=200), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('action', sa.JSON(), nullable=False),
    sa.Column('timeout_seconds', sa.Integer(), nullable=True),
    sa.Column('max_retries', sa.Integer(), nullable=False),
    sa.Column('retry_delay_seconds', sa.Integer(), nullable=False),
    sa.Column('retry_max_delay_seconds', sa.Integer(), nullable=False),
    sa.Column('concurrency_policy', sa.String(length=16), nullable=False),
    sa.Column('misfire_grace_seconds', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('active_runs', sa.Integer(), nullable=False),
    sa.Column('last_run_at', sa.DateTime(), nullable=True),
    sa.Column('next_run_at', sa.DateTime(), nullable=True),
    sa.Column('next_retry_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task')),
    sa.UniqueConstraint('name', name=op.f('uq_task_name'))
    )
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.create_index('ix_task_due', ['enabled', 'next_run_at'], unique=False)
        batch_op.create_index('ix_task_retry_due', ['status', 'next_retry_at'], unique=False)

    op.create_table('run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('scheduled_for', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('duration_seconds', sa.Float(), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('output', sa.Text(), nullable=False),
    sa.Column('message', sa.String(length=500), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], name=op.f('fk_run_task_id_task'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run')),
    sa.UniqueConstraint('task_id', 'scheduled_for', 'attempt', name='uq_run_task_slot_attempt')
    )
    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.create_index('ix_run_status_heartbeat', ['status', 'heartbeat_at'], unique=False)
        batch_op.create_index('ix_run_status_started', ['status', 'started_at'], unique=False)
        batch_op.create_index('ix_run_task_started', ['task_id', 'started_at'], unique=False)

    op.create_table('task_dependency',
    sa.Column('child_id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['child_id'], ['task.id'], name=op.f('fk_task_dependency_child_id_task'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['task.id'], name=op.f('fk_task_dependency_parent_id_task'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('child_id', 'parent_id', name=op.f('pk_task_dependency'))
    )
    with op.batch_alter_table('task_dependency', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_dependency_parent_id'), ['parent_id'], unique=False)




def downgrade():

    with op.batch_alter_table('task_dependency', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_dependency_parent_id'))

    op.drop_table('task_dependency')
    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.drop_index('ix_run_task_started')
        batch_op.drop_index('ix_run_status_started')
        batch_op.drop_index('ix_run_status_heartbeat')

    op.drop_table('run')
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index('ix_task_retry_due')
        batch_op.drop_index('ix_task_due')

    op.drop_table('task')
    op.drop_table('scheduler_state')
    op.drop_table('api_token')

