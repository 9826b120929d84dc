"""keyed audit chain: key ids, a signed head with an archive base, access log, sink cursors

Revision ID: 0004_audit_keyed
Revises: 0003
Create Date: 2026-11-26 23:20:00

Events written before this revision carry no key id; the first process that writes with a
key re-signs them (only if their old SHA-256 chain still verifies).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004_audit_keyed'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_id', sa.String(length=16), nullable=True))
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.add_column(sa.Column('base_seq', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('base_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('key_id', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('mac', sa.String(length=64), nullable=True))
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.alter_column('base_seq', server_default=None)
    op.create_table('audit_access_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('on_behalf_of', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('tool', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=True),
    sa.Column('args', sa.String(length=2000), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_access_log'))
    )
    with op.batch_alter_table('audit_access_log', schema=None) as batch_op:
        batch_op.create_index('ix_access_actor_at', ['actor', 'at'], unique=False)
    op.create_table('audit_sinks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('delivered_seq', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_audit_sinks'))
    )


def downgrade() -> None:
    op.drop_table('audit_sinks')
    with op.batch_alter_table('audit_access_log', schema=None) as batch_op:
        batch_op.drop_index('ix_access_actor_at')
    op.drop_table('audit_access_log')
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.drop_column('mac')
        batch_op.drop_column('key_id')
        batch_op.drop_column('base_hash')
        batch_op.drop_column('base_seq')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_column('key_id')
