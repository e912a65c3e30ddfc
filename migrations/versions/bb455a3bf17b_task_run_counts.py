"""task run counts: runs per task by status and their summed durations, for /api/stats/

Revision ID: bb455a3bf17b
Revises: f29b84058cde
Create Date: 2026-11-28 03:56:23.400341

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'bb455a3bf17b'
down_revision = 'f29b84058cde'
branch_labels = None
depends_on = None

# The counts of the runs already there, counted the way scheduler_service/run_counts.py
# counts: a duration counts once its run has finished, in whole microseconds.
BACKFILL = """
INSERT INTO task_run_counts (task_id, pending, running, success, failed, skipped, timed_runs, timed_microseconds)
SELECT task_id,
       COUNT(CASE WHEN status = 'pending' THEN 1 END),
       COUNT(CASE WHEN status = 'running' THEN 1 END),
       COUNT(CASE WHEN status = 'success' THEN 1 END),
       COUNT(CASE WHEN status = 'failed' THEN 1 END),
       COUNT(CASE WHEN status = 'skipped' THEN 1 END),
       COUNT(CASE WHEN finished_at IS NOT NULL THEN duration_seconds END),
       COALESCE(SUM(CASE WHEN finished_at IS NOT NULL THEN CAST(ROUND(duration_seconds * 1000000) AS BIGINT) END), 0)
FROM run
GROUP BY task_id
"""


def upgrade():
    op.create_table('task_run_counts',
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('pending', sa.Integer(), nullable=False),
    sa.Column('running', sa.Integer(), nullable=False),
    sa.Column('success', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.Column('timed_runs', sa.Integer(), nullable=False),
    sa.Column('timed_microseconds', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], name=op.f('fk_task_run_counts_task_id_task'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('task_id', name=op.f('pk_task_run_counts'))
    )
    # The counts start from the runs there are now: upgrade with the schedulers stopped (as for
    # any schema change), or the runs an older process writes meanwhile go uncounted.
    op.execute(BACKFILL)


def downgrade():
    op.drop_table('task_run_counts')
