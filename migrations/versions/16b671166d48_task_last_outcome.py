"""task last outcome: the result of each task's last finished run

Revision ID: 16b671166d48
Revises: 287bf6700e63
Create Date: 2026-11-28 01:42:35.547155

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '16b671166d48'
down_revision = '287bf6700e63'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_outcome', sa.String(length=16), nullable=True))
    # Existing tasks: the status says how the last finished run ended, except while
    # running (then the run history is the only witness, and it may have been pruned).
    op.execute("UPDATE task SET last_outcome = 'success' WHERE status = 'success'")
    op.execute("UPDATE task SET last_outcome = 'failed' WHERE status IN ('failed', 'retrying')")


def downgrade():
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_column('last_outcome')


