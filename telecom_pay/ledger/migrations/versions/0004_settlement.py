"""Merchant settlement batches.

Revision ID: 0004_settlement
Revises: 0001_core
"""
from alembic import op
import sqlalchemy as sa

revision = "0004_settlement"
down_revision = "0001_core"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "settlement_batches",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("merchant_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("business_date", sa.Date, nullable=False),
        sa.Column("payments", sa.Integer, nullable=False),
        sa.Column("gross", sa.BigInteger, nullable=False),
        sa.Column("refunds", sa.BigInteger, nullable=False),
        sa.Column("fees", sa.BigInteger, nullable=False),
        sa.Column("net", sa.BigInteger, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("operation_key", sa.String(160)),
        sa.Column("payout_ref", sa.String(12)),
        sa.Column("error", sa.String(200)),
        sa.Column("statement", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("merchant_id", "business_date", name="uq_settlement_merchant_day"),
    )


def downgrade() -> None:
    op.drop_table("settlement_batches")
