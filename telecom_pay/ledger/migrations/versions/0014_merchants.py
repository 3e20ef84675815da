"""Merchants and SPs: profiles (category, fee plan, refund policy, API key
id), SP payment requests, refunds with their review, callbacks owed to
merchants and each delivery attempt (telecom_pay/merchants/tables.py);
merchant staff on web_users; settlement carrying a negative balance forward;
merchant accounts may go below zero (a refund after the payout is taken from
the next settlement).

Revision ID: 0014_merchants
Revises: 0013_audit_search, 0004_settlement
"""
from alembic import op
import sqlalchemy as sa

revision = "0014_merchants"
down_revision = ("0013_audit_search", "0004_settlement")   # settlement_batches gains columns
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Money = sa.BigInteger
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "merchant_profiles",
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("name_en", sa.String(100), nullable=False, server_default=""),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("fee_plan", sa.JSON),
        sa.Column("refund_policy", sa.String(10), nullable=False),
        sa.Column("api_key_id", sa.String(48)),
        sa.Column("key_created_at", Stamp),
        sa.Column("notify_url", sa.String(500)),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_index("uq_merchant_profiles_key", "merchant_profiles", ["api_key_id"], unique=True)

    op.create_table(
        "sp_payments",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("public_id", sa.String(32), nullable=False),
        sa.Column("merchant_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("msisdn", sa.String(20), nullable=False),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id")),
        sa.Column("amount", Money, nullable=False),
        sa.Column("fee", Money, nullable=False, server_default="0"),
        sa.Column("description", sa.String(100), nullable=False),
        sa.Column("notify_url", sa.String(500)),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("decline_reason", sa.String(32)),
        sa.Column("tag", sa.String(4), nullable=False),
        sa.Column("pin_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("confirm_by", sa.String(8), nullable=False),
        sa.Column("operation_key", sa.String(160), nullable=False),
        sa.Column("ref", sa.String(12)),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("expires_at", Stamp, nullable=False),
        sa.Column("resolved_at", Stamp),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_index("uq_sp_payments_public", "sp_payments", ["public_id"], unique=True)
    op.create_index("uq_sp_payments_order", "sp_payments", ["merchant_id", "order_id"], unique=True)
    op.create_index("ix_sp_payments_msisdn_status", "sp_payments", ["msisdn", "status"])
    op.create_index("ix_sp_payments_status_expires", "sp_payments", ["status", "expires_at"])
    op.create_index("ix_sp_payments_merchant_created", "sp_payments", ["merchant_id", "created_at"])

    op.create_table(
        "merchant_refunds",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("public_id", sa.String(32), nullable=False),
        sa.Column("merchant_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("payment_operation_id", Id, sa.ForeignKey("operations.id"), nullable=False),
        sa.Column("sp_payment_id", Id, sa.ForeignKey("sp_payments.id")),
        sa.Column("refund_key", sa.String(64), nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("fee_refunded", Money, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("requested_via", sa.String(8), nullable=False),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decision_reason", sa.String(200)),
        sa.Column("decided_at", Stamp),
        sa.Column("operation_key", sa.String(160), nullable=False),
        sa.Column("ref", sa.String(12)),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_index("uq_merchant_refunds_public", "merchant_refunds", ["public_id"], unique=True)
    op.create_index("uq_merchant_refunds_key", "merchant_refunds", ["merchant_id", "refund_key"], unique=True)
    op.create_index("ix_merchant_refunds_payment", "merchant_refunds", ["payment_operation_id"])
    op.create_index("ix_merchant_refunds_merchant_status", "merchant_refunds",
                    ["merchant_id", "status", "created_at"])

    op.create_table(
        "merchant_notifications",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("merchant_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", Stamp),
        sa.Column("claimed_until", Stamp),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.String(200)),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("delivered_at", Stamp),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_index("uq_merchant_notifications_event", "merchant_notifications", ["event_id"], unique=True)
    op.create_index("ix_merchant_notifications_due", "merchant_notifications", ["status", "next_attempt_at"])
    op.create_index("ix_merchant_notifications_merchant", "merchant_notifications", ["merchant_id", "created_at"])

    op.create_table(
        "notification_attempts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("notification_id", Id, sa.ForeignKey("merchant_notifications.id"), nullable=False),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.String(200)),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("manual", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_notification_attempts_notification", "notification_attempts", ["notification_id", "at"])

    with op.batch_alter_table("web_users") as batch:
        batch.add_column(sa.Column("merchant_id", Id, sa.ForeignKey("accounts.id", name="fk_web_users_merchant")))
    with op.batch_alter_table("settlement_batches") as batch:
        batch.add_column(sa.Column("fee_refunds", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("carried_in", sa.BigInteger, nullable=False, server_default="0"))
    op.execute("UPDATE accounts SET allow_negative = true WHERE kind = 'merchant'")


def downgrade() -> None:
    op.execute("UPDATE accounts SET allow_negative = false WHERE kind = 'merchant'")
    with op.batch_alter_table("settlement_batches") as batch:
        batch.drop_column("carried_in")
        batch.drop_column("fee_refunds")
    with op.batch_alter_table("web_users") as batch:
        batch.drop_column("merchant_id")
    for table in ("notification_attempts", "merchant_notifications", "merchant_refunds", "sp_payments",
                  "merchant_profiles"):
        op.drop_table(table)
