"""Messaging: durable inbound record (dedup) and the outbox of replies.

Revision ID: 0003_messaging
Revises: 0001_core
"""
from alembic import op
import sqlalchemy as sa

revision = "0003_messaging"
down_revision = "0001_core"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inbound_messages",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("msisdn", sa.String(20), nullable=False),
        sa.Column("dedup_key", sa.String(160), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("dedup_key", name="uq_inbound_dedup"),
    )
    op.create_index("ix_inbound_state", "inbound_messages", ["state"])
    op.create_table(
        "outbox",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("msisdn", sa.String(20), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("inbound_id", Id, sa.ForeignKey("inbound_messages.id")),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_ids", sa.JSON),
        sa.Column("delivery", sa.String(16)),
        sa.Column("error", sa.String(200)),
        sa.Column("meta", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])
    op.create_table(
        "outbox_parts",
        sa.Column("message_id", sa.String(80), primary_key=True),
        sa.Column("outbox_id", Id, sa.ForeignKey("outbox.id"), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outbox_parts")
    op.drop_index("ix_outbox_due", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_inbound_state", table_name="inbound_messages")
    op.drop_table("inbound_messages")
