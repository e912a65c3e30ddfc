"""admin users: accounts for the /admin/ web interface

Revision ID: 287bf6700e63
Revises: 5d1ded215f19
Create Date: 2026-11-28 01:18:39.350724

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '287bf6700e63'
down_revision = '5d1ded215f19'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('admin_user',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_admin_user')),
    sa.UniqueConstraint('name', name=op.f('uq_admin_user_name'))
    )


def downgrade():
    op.drop_table('admin_user')
