"""Risk and AML cases: operations held or alerted by a risk rule, and the
operator's decision on each (telecom_pay/risk/cases.py).

Revision ID: 0012_risk
Revises: 0011_web_users
"""
from alembic import op
import sqlalchemy as sa

revision = "0012_risk"
down_revision = "0011_web_users"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "risk_cases",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("operation_id", Id, nullable=False),
        sa.Column("operation_key", sa.String(160), nullable=False),
        sa.Column("ref", sa.String(12), nullable=False),
        sa.Column("op_kind", sa.String(24), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("counterparty_id", Id),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.Column("figures", sa.JSON, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("decided_at", Stamp),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("reason", sa.String(200)),
    )
    op.create_index("uq_risk_cases_operation", "risk_cases", ["operation_id"], unique=True)
    op.create_index("uq_risk_cases_key", "risk_cases", ["operation_key"], unique=True)
    op.create_index("ix_risk_cases_status", "risk_cases", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_risk_cases_status", "risk_cases")
    op.drop_index("uq_risk_cases_key", "risk_cases")
    op.drop_index("uq_risk_cases_operation", "risk_cases")
    op.drop_table("risk_cases")
