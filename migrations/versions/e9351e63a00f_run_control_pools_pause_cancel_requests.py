"""run control: pools, pause, cancel requests

Revision ID: e9351e63a00f
Revises: 8b2ddc5ef52a
Create Date: 2026-12-08 00:22:37.883757

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e9351e63a00f'
down_revision = '8b2ddc5ef52a'
branch_labels = None
depends_on = None


def upgrade():
    # Reviewed: columns are added (SQLite needs no table rebuild, which would cascade to runs);
    # every existing task keeps its behaviour: no pool, not paused, never paused automatically.
    op.create_table('pool',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('slots', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('running', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_pool'))
    )
    op.create_table('run_cancel',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=True),
    sa.Column('message', sa.String(length=500), nullable=False),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], name=op.f('fk_run_cancel_run_id_run'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_run_cancel'))
    )
    with op.batch_alter_table('run_cancel', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_cancel_owner'), ['owner'], unique=False)

    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pool', sa.String(length=100), nullable=True))
        # Partial: only pending runs (few next to the history) are in them.
        batch_op.create_index('ix_run_pending_slot', ['pool', 'scheduled_for', 'id'], unique=False,
                              sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
        batch_op.create_index('ix_run_pending_task', ['task_id', 'scheduled_for'], unique=False,
                              sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))

    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pool', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('pause_note', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('paused_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('paused_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('pause_after_failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('consecutive_failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index(batch_op.f('ix_task_paused_until'), ['paused_until'], unique=False)
        batch_op.create_index(batch_op.f('ix_task_pool'), ['pool'], unique=False)

    # (end of the reviewed commands)


def downgrade():
    # Reviewed: columns are added (SQLite needs no table rebuild, which would cascade to runs);
    # every existing task keeps its behaviour: no pool, not paused, never paused automatically.
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_pool'))
        batch_op.drop_index(batch_op.f('ix_task_paused_until'))
        batch_op.drop_column('consecutive_failures')
        batch_op.drop_column('pause_after_failures')
        batch_op.drop_column('paused_by')
        batch_op.drop_column('paused_until')
        batch_op.drop_column('pause_note')
        batch_op.drop_column('pool')

    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.drop_index('ix_run_pending_task')
        batch_op.drop_index('ix_run_pending_slot')
        batch_op.drop_column('pool')

    with op.batch_alter_table('run_cancel', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_cancel_owner'))

    op.drop_table('run_cancel')
    op.drop_table('pool')

