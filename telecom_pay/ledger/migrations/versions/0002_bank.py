"""Bank bridge: sequences (STAN, RRN), operations, reversal queue, journal.
Mirrors bank_bridge/tables.py exactly.

Revision ID: 0002_bank
Revises: 0001_core
"""
from alembic import op
import sqlalchemy as sa

revision = "0002_bank"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bank_sequences",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "bank_operations",
        sa.Column("operation_key", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("bank_code", sa.String(32), nullable=False),
        sa.Column("terminal_id", sa.String(8), nullable=False),
        sa.Column("mti", sa.String(4), nullable=False),
        sa.Column("stan", sa.String(6), nullable=False),
        sa.Column("rrn", sa.String(12), nullable=False, unique=True),
        sa.Column("transmitted_at", sa.String(10), nullable=False),
        sa.Column("processing_code", sa.String(6), nullable=False),
        sa.Column("pan_token", sa.String(64), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("response_code", sa.String(2)),
        sa.Column("decline", sa.String(32)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "bank_reversals",
        sa.Column("operation_key", sa.String(128), primary_key=True),
        sa.Column("bank_code", sa.String(32), nullable=False),
        sa.Column("terminal_id", sa.String(8), nullable=False),
        sa.Column("stan", sa.String(6), nullable=False),
        sa.Column("rrn", sa.String(12), nullable=False),
        sa.Column("original_data", sa.String(42), nullable=False),
        sa.Column("processing_code", sa.String(6), nullable=False),
        sa.Column("pan_token", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("response_code", sa.String(2)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_bank_reversals_state", "bank_reversals", ["state"])
    op.create_table(
        "bank_journal",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bank_code", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("operation_key", sa.String(128)),
        sa.Column("mti", sa.String(4)),
        sa.Column("stan", sa.String(6)),
        sa.Column("rrn", sa.String(12)),
        sa.Column("terminal_id", sa.String(8)),
        sa.Column("pan_token", sa.String(64)),
        sa.Column("last4", sa.String(4)),
        sa.Column("amount", sa.BigInteger),
        sa.Column("processing_code", sa.String(6)),
        sa.Column("response_code", sa.String(2)),
        sa.Column("detail", sa.String(200)),
    )
    op.create_index("ix_bank_journal_operation_key", "bank_journal", ["operation_key"])
    op.create_index("ix_bank_journal_rrn", "bank_journal", ["rrn"])


def downgrade() -> None:
    op.drop_table("bank_journal")
    op.drop_table("bank_reversals")
    op.drop_table("bank_operations")
    op.drop_table("bank_sequences")
