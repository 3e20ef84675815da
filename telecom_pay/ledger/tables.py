"""The ledger's tables (SQLAlchemy Core). The schema itself is created only
by the Alembic migrations in `migrations/`; these definitions are how code
refers to it and must match the latest revision (a test checks that).

Balances are signed integers in minor units: a transfer subtracts its amount
from the debit account and adds it to the credit account, so the sum over all
accounts is always zero. Subscriber wallets are never below zero; system
accounts (bank settlement, fee income, ...) may be.
"""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

metadata = sa.MetaData()


class UtcStamp(sa.TypeDecorator):
    """An instant, stored and compared as UTC on every database.

    SQLite has no timestamp type: SQLAlchemy writes the wall-clock digits
    ("YYYY-MM-DD HH:MM:SS.ffffff") and drops the offset, so an aware local
    bound compared with a UTC value is off by the zone's offset. Every value
    bound to such a column, or compared with one in SQL, is therefore turned
    into UTC first (that one fixed-width form sorts as time does), and every
    value read back is an aware UTC datetime. A naive datetime is refused:
    its zone would be a guess. The DDL is the plain DateTime(timezone=True)
    the migrations create (TIMESTAMP WITH TIME ZONE on PostgreSQL)."""
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"an instant must be a datetime, not {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} for a UTC column: give it a zone")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:              # SQLite: the stored digits are UTC
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Money = sa.BigInteger
Stamp = UtcStamp()

# account kinds
WALLET, MERCHANT, SYSTEM, AGENT = "wallet", "merchant", "system", "agent"
# account states
PENDING, ACTIVE, FROZEN, CLOSED = "pending", "active", "frozen", "closed"
# transfer / operation states
T_PENDING, T_POSTED, T_VOIDED = "pending", "posted", "voided"

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("code", sa.String(32)),            # merchant_code, system or agent code
    sa.Column("msisdn", sa.String(20)),          # wallets: E.164 digits
    sa.Column("name", sa.String(100), nullable=False, server_default=""),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("language", sa.String(2), nullable=False, server_default="zh"),
    sa.Column("kyc_tier", sa.Integer, nullable=False, server_default="1"),
    sa.Column("holder_name", sa.String(100)),
    sa.Column("id_type", sa.String(16)),
    sa.Column("id_number", sa.String(64)),
    sa.Column("balance", Money, nullable=False, server_default="0"),
    sa.Column("pending_out", Money, nullable=False, server_default="0"),
    sa.Column("pending_in", Money, nullable=False, server_default="0"),
    sa.Column("consumption", Money, nullable=False, server_default="0"),
    sa.Column("allow_negative", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("updated_at", Stamp, nullable=False),
    sa.Column("expires_at", Stamp),              # pending wallets: confirm before this
    sa.Column("closed_at", Stamp),
    sa.CheckConstraint("pending_out >= 0 AND pending_in >= 0 AND consumption >= 0",
                       name="ck_accounts_nonneg_parts"),
    sa.CheckConstraint("allow_negative OR balance - pending_out >= 0", name="ck_accounts_no_overdraft"),
)
sa.Index("ux_accounts_live_msisdn", accounts.c.msisdn, unique=True,
         sqlite_where=sa.text("kind = 'wallet' AND status != 'closed'"),
         postgresql_where=sa.text("kind = 'wallet' AND status != 'closed'"))
sa.Index("ux_accounts_kind_code", accounts.c.kind, accounts.c.code, unique=True)
sa.Index("ix_accounts_msisdn", accounts.c.msisdn)          # closed wallets too (the audit search)

operations = sa.Table(
    "operations", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("ref", sa.String(12), nullable=False, unique=True),
    sa.Column("idempotency_key", sa.String(160), nullable=False, unique=True),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id")),   # the subscriber side, for statements
    sa.Column("counterparty_id", Id, sa.ForeignKey("accounts.id")),
    sa.Column("amount", Money, nullable=False),
    sa.Column("fee", Money, nullable=False, server_default="0"),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("request", sa.JSON, nullable=False),   # what the key was used for (idempotency check)
    sa.Column("memo", sa.String(100)),
    sa.Column("parent_id", Id, sa.ForeignKey("operations.id")),  # refund/correction of
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("resolved_at", Stamp),
)
sa.Index("ix_operations_account_created", operations.c.account_id, operations.c.created_at)
sa.Index("ix_operations_counterparty_created", operations.c.counterparty_id, operations.c.created_at)
sa.Index("ix_operations_state", operations.c.state)

transfers = sa.Table(
    "transfers", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("operation_id", Id, sa.ForeignKey("operations.id"), nullable=False),
    sa.Column("leg", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("debit_account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("credit_account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("consumption_part", Money, nullable=False, server_default="0"),
    sa.Column("consumption_credit", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("resolved_at", Stamp),
    sa.CheckConstraint("amount > 0", name="ck_transfers_positive"),
    sa.CheckConstraint("debit_account_id != credit_account_id", name="ck_transfers_two_accounts"),
    sa.UniqueConstraint("operation_id", "leg", name="uq_transfers_operation_leg"),
)
sa.Index("ix_transfers_debit", transfers.c.debit_account_id)
sa.Index("ix_transfers_credit", transfers.c.credit_account_id)

# One row per committed group-commit batch (kept for a while): after a COMMIT
# whose answer was lost, the writer looks its batch up instead of redoing it.
ledger_batches = sa.Table(
    "ledger_batches", metadata,
    sa.Column("token", sa.String(32), primary_key=True),
    sa.Column("committed_at", Stamp, nullable=False),
)
sa.Index("ix_ledger_batches_committed", ledger_batches.c.committed_at)

credentials = sa.Table(
    "credentials", metadata,
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("pin_hash", sa.String(128)),
    sa.Column("password_hash", sa.String(256)),
    sa.Column("pin_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pin_locked_until", Stamp),
    sa.Column("must_change", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("updated_at", Stamp, nullable=False),
)

cards = sa.Table(
    "cards", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("token", sa.String(128), nullable=False),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("bin", sa.String(8), nullable=False),
    sa.Column("card_type", sa.String(8), nullable=False),   # debit | credit
    sa.Column("bank_code", sa.String(16), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),     # active | unbound
    sa.Column("bound_at", Stamp, nullable=False),
    sa.Column("unbound_at", Stamp),
)
sa.Index("ux_cards_active_per_account", cards.c.account_id, unique=True,
         sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("at", Stamp, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id")),
    sa.Column("details", sa.JSON, nullable=False),
)
sa.Index("ix_audit_account", audit_log.c.account_id, audit_log.c.at)
# the operators' audit search (telecom_pay/audit_search.py): by day, by actor, by action
sa.Index("ix_audit_at", audit_log.c.at)
sa.Index("ix_audit_actor_at", audit_log.c.actor, audit_log.c.at)
sa.Index("ix_audit_action_at", audit_log.c.action, audit_log.c.at)
