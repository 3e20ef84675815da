"""Core ledger: accounts, operations, transfers, credentials, cards, audit log.

Revision ID: 0001_core
Revises:
"""
from alembic import op
import sqlalchemy as sa

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=True),
    sa.Column('msisdn', sa.String(length=20), nullable=True),
    sa.Column('name', sa.String(length=100), server_default='', nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('language', sa.String(length=2), server_default='zh', nullable=False),
    sa.Column('kyc_tier', sa.Integer(), server_default='1', nullable=False),
    sa.Column('holder_name', sa.String(length=100), nullable=True),
    sa.Column('id_type', sa.String(length=16), nullable=True),
    sa.Column('id_number', sa.String(length=64), nullable=True),
    sa.Column('balance', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('pending_out', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('pending_in', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('consumption', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('allow_negative', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('allow_negative OR balance - pending_out >= 0', name='ck_accounts_no_overdraft'),
    sa.CheckConstraint('pending_out >= 0 AND pending_in >= 0 AND consumption >= 0', name='ck_accounts_nonneg_parts'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ux_accounts_kind_code', 'accounts', ['kind', 'code'], unique=True)
    op.create_index('ux_accounts_live_msisdn', 'accounts', ['msisdn'], unique=True, sqlite_where=sa.text("kind = 'wallet' AND status != 'closed'"), postgresql_where=sa.text("kind = 'wallet' AND status != 'closed'"))
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_account', 'audit_log', ['account_id', 'at'], unique=False)
    op.create_table('cards',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('token', sa.String(length=128), nullable=False),
    sa.Column('last4', sa.String(length=4), nullable=False),
    sa.Column('bin', sa.String(length=8), nullable=False),
    sa.Column('card_type', sa.String(length=8), nullable=False),
    sa.Column('bank_code', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('bound_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('unbound_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ux_cards_active_per_account', 'cards', ['account_id'], unique=True, sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))
    op.create_table('credentials',
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('pin_hash', sa.String(length=128), nullable=True),
    sa.Column('password_hash', sa.String(length=256), nullable=True),
    sa.Column('pin_failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('pin_locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('must_change', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('account_id')
    )
    op.create_table('operations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('ref', sa.String(length=12), nullable=False),
    sa.Column('idempotency_key', sa.String(length=160), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('counterparty_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('fee', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('memo', sa.String(length=100), nullable=True),
    sa.Column('parent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.ForeignKeyConstraint(['counterparty_id'], ['accounts.id'], ),
    sa.ForeignKeyConstraint(['parent_id'], ['operations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key'),
    sa.UniqueConstraint('ref')
    )
    op.create_index('ix_operations_account_created', 'operations', ['account_id', 'created_at'], unique=False)
    op.create_index('ix_operations_counterparty_created', 'operations', ['counterparty_id', 'created_at'], unique=False)
    op.create_index('ix_operations_state', 'operations', ['state'], unique=False)
    op.create_table('transfers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('operation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('leg', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('debit_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('credit_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('consumption_part', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('consumption_credit', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('amount > 0', name='ck_transfers_positive'),
    sa.CheckConstraint('debit_account_id != credit_account_id', name='ck_transfers_two_accounts'),
    sa.ForeignKeyConstraint(['credit_account_id'], ['accounts.id'], ),
    sa.ForeignKeyConstraint(['debit_account_id'], ['accounts.id'], ),
    sa.ForeignKeyConstraint(['operation_id'], ['operations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('operation_id', 'leg', name='uq_transfers_operation_leg')
    )
    op.create_index('ix_transfers_credit', 'transfers', ['credit_account_id'], unique=False)
    op.create_index('ix_transfers_debit', 'transfers', ['debit_account_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_transfers_debit', table_name='transfers')
    op.drop_index('ix_transfers_credit', table_name='transfers')
    op.drop_table('transfers')
    op.drop_index('ix_operations_state', table_name='operations')
    op.drop_index('ix_operations_counterparty_created', table_name='operations')
    op.drop_index('ix_operations_account_created', table_name='operations')
    op.drop_table('operations')
    op.drop_table('credentials')
    op.drop_index('ux_cards_active_per_account', table_name='cards', sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))
    op.drop_table('cards')
    op.drop_index('ix_audit_account', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ux_accounts_live_msisdn', table_name='accounts', sqlite_where=sa.text("kind = 'wallet' AND status != 'closed'"), postgresql_where=sa.text("kind = 'wallet' AND status != 'closed'"))
    op.drop_index('ux_accounts_kind_code', table_name='accounts')
    op.drop_table('accounts')
