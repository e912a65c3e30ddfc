"""schedules: intervals, one-offs, calendars, jitter, catch-up

Every existing task keeps its behaviour exactly: a cron (or dependency-only) task with no
calendar, no jitter and `catchup: latest`; its schedule anchor is its creation time, and
the slot it is due at comes due then (`due_at` = `next_run_at`, no jitter drawn).

Revision ID: 8b2ddc5ef52a
Revises: 43a6f76f4dbf
Create Date: 2026-12-03 17:14:19.497067

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8b2ddc5ef52a'
down_revision = '43a6f76f4dbf'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('calendar',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('exclude_dates', sa.JSON(), nullable=False),
    sa.Column('exclude_weekdays', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_calendar'))
    )
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('interval_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('run_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('schedule_anchor', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('calendar', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('jitter_seconds', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('catchup', sa.String(length=8), server_default='latest', nullable=False))
        batch_op.add_column(sa.Column('due_at', sa.DateTime(), nullable=True))

    task = sa.table('task', sa.column('created_at'), sa.column('schedule_anchor'),
                    sa.column('next_run_at'), sa.column('due_at'))
    op.execute(task.update().values(schedule_anchor=task.c.created_at, due_at=task.c.next_run_at))

    # Only operations SQLite does in place: a NOT NULL change or a foreign key would rebuild
    # the table, and dropping the old one would cascade to every run (models.py, Task.calendar).
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_due'))
        batch_op.create_index('ix_task_due', ['enabled', 'due_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_task_calendar'), ['calendar'], unique=False)


def downgrade():
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_calendar'))
        batch_op.drop_index('ix_task_due')
        batch_op.create_index(batch_op.f('ix_task_due'), ['enabled', 'next_run_at', 'id'], unique=False)
        batch_op.drop_column('due_at')
        batch_op.drop_column('catchup')
        batch_op.drop_column('jitter_seconds')
        batch_op.drop_column('calendar')
        batch_op.drop_column('schedule_anchor')
        batch_op.drop_column('run_at')
        batch_op.drop_column('interval_seconds')

    op.drop_table('calendar')
