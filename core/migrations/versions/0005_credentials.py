"""credentials: token expiry and hints, single-use auth tickets, OIDC subjects

Revision ID: 0005_credentials
Revises: 0003
Create Date: 2026-11-26 23:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005_credentials'
down_revision: str | None = '0004_audit_keyed'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hint', sa.String(length=16), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('oidc_subject', sa.String(length=512), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_users_oidc_subject'), ['oidc_subject'])

    op.create_table('auth_tickets',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_auth_tickets_token_id_api_tokens'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_tickets'))
    )
    with op.batch_alter_table('auth_tickets', schema=None) as batch_op:
        batch_op.create_index('ix_auth_tickets_expires_at', ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_auth_tickets_token_id'), ['token_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('auth_tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_tickets_token_id'))
        batch_op.drop_index('ix_auth_tickets_expires_at')
    op.drop_table('auth_tickets')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_users_oidc_subject'), type_='unique')
        batch_op.drop_column('oidc_subject')

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
        batch_op.drop_column('hint')
