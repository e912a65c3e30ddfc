"""task due index with id: tasks sharing a slot come out of the index in (next_run_at, id) order

The tick and /api/stats/ order due tasks by (next_run_at, id). With only (enabled, next_run_at)
indexed, PostgreSQL sorted every task of a shared slot (all hourly tasks at :00) to find the
first few: 19 ms at 100,000 tasks. SQLite's indexes end with the rowid already.

Revision ID: 84ccb9b673a8
Revises: bb455a3bf17b
Create Date: 2026-11-28 05:10:32.454140

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '84ccb9b673a8'
down_revision = 'bb455a3bf17b'
branch_labels = None
depends_on = None


def upgrade():
    # Index changes alone: no table copy needed on SQLite, so no batch mode.
    op.drop_index('ix_task_due', table_name='task')
    op.create_index('ix_task_due', 'task', ['enabled', 'next_run_at', 'id'], unique=False)


def downgrade():
    op.drop_index('ix_task_due', table_name='task')
    op.create_index('ix_task_due', 'task', ['enabled', 'next_run_at'], unique=False)
