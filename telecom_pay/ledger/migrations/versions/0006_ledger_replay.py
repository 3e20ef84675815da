"""Group-commit markers: one row per committed batch, so a COMMIT whose
answer was lost can be told apart from one that did not happen.

Revision ID: 0006_ledger_replay
Revises: 0001_core
"""
from alembic import op
import sqlalchemy as sa

revision = "0006_ledger_replay"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_batches",
        sa.Column("token", sa.String(32), primary_key=True),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ledger_batches_committed", "ledger_batches", ["committed_at"])


def downgrade() -> None:
    op.drop_index("ix_ledger_batches_committed", table_name="ledger_batches")
    op.drop_table("ledger_batches")
