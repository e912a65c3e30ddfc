"""governance: token scopes, audit trail, admin sessions and login throttling

Existing tokens could do everything: they become `admin` (the column's server default).
Existing admin cookies name no server-side session, so their holders log in once more.

Revision ID: 43a6f76f4dbf
Revises: 84ccb9b673a8
Create Date: 2026-12-03 08:04:12.386328

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '43a6f76f4dbf'
down_revision = '84ccb9b673a8'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('admin_login_failure',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_admin_login_failure'))
    )
    with op.batch_alter_table('admin_login_failure', schema=None) as batch_op:
        batch_op.create_index('ix_admin_login_failure_key_at', ['key', 'at'], unique=False)

    op.create_table('audit_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entry'))
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entry_actor', ['actor', 'id'], unique=False)
        batch_op.create_index('ix_audit_entry_task_id', ['task_id', 'id'], unique=False)

    op.create_table('admin_session',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['admin_user.id'], name=op.f('fk_admin_session_user_id_admin_user'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_admin_session'))
    )
    with op.batch_alter_table('admin_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_admin_session_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.String(length=16), server_default='admin', nullable=False))
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(), nullable=True))



def downgrade():
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('scope')

    with op.batch_alter_table('admin_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_admin_session_user_id'))

    op.drop_table('admin_session')
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_task_id')
        batch_op.drop_index('ix_audit_entry_actor')

    op.drop_table('audit_entry')
    with op.batch_alter_table('admin_login_failure', schema=None) as batch_op:
        batch_op.drop_index('ix_admin_login_failure_key_at')

    op.drop_table('admin_login_failure')
