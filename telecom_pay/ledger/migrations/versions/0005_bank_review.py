"""Bank manual review: the resolution a reversal reports, and the audit of
operators' decisions. Mirrors bank_bridge/tables.py.

Revision ID: 0005_bank_review
Revises: 0002_bank
"""
from alembic import op
import sqlalchemy as sa

revision = "0005_bank_review"
down_revision = "0002_bank"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bank_reversals", sa.Column("resolution", sa.String(8)))
    op.create_table(
        "bank_reviews",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operation_key", sa.String(128), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("before", sa.JSON, nullable=False),
        sa.Column("after", sa.JSON, nullable=False),
    )
    op.create_index("ix_bank_reviews_operation_key", "bank_reviews", ["operation_key"])


def downgrade() -> None:
    op.drop_index("ix_bank_reviews_operation_key", table_name="bank_reviews")
    op.drop_table("bank_reviews")
    with op.batch_alter_table("bank_reversals") as batch:
        batch.drop_column("resolution")
