"""Voice: call events from the switch (AMI), call-backs the platform
originates, and IVR hand-offs to an agent (telecom_pay/calls.py).

Revision ID: 0009_calls
Revises: 0008_messaging_claims
"""
from alembic import op
import sqlalchemy as sa

revision = "0009_calls"
down_revision = "0008_messaging_claims"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "call_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(80), nullable=False),
        sa.Column("event", sa.String(24), nullable=False),
        sa.Column("channel", sa.String(80)),
        sa.Column("msisdn", sa.String(20)),
        sa.Column("cause", sa.String(40)),
        sa.Column("duration_s", sa.Integer),
        sa.Column("detail", sa.JSON),
        sa.Column("at", Stamp, nullable=False),
    )
    op.create_index("ix_call_events_at", "call_events", ["at"])
    op.create_index("ix_call_events_call", "call_events", ["call_id"])
    op.create_table(
        "callbacks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("msisdn", sa.String(20), nullable=False),
        sa.Column("requested_via", sa.String(16), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("action_id", sa.String(80)),
        sa.Column("error", sa.String(200)),
        sa.Column("requested_at", Stamp, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_index("ix_callbacks_state", "callbacks", ["state"])
    op.create_table(
        "ivr_handoffs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(80), nullable=False),
        sa.Column("msisdn", sa.String(20)),
        sa.Column("caller_id", sa.String(40)),
        sa.Column("menu_path", sa.String(200), nullable=False),
        sa.Column("pin_verified", sa.Boolean, nullable=False),
        sa.Column("target", sa.String(80), nullable=False),
        sa.Column("state", sa.String(12), nullable=False, server_default="waiting"),
        sa.Column("at", Stamp, nullable=False),
    )
    op.create_index("ix_ivr_handoffs_at", "ivr_handoffs", ["at"])


def downgrade() -> None:
    op.drop_index("ix_ivr_handoffs_at", "ivr_handoffs")
    op.drop_table("ivr_handoffs")
    op.drop_index("ix_callbacks_state", "callbacks")
    op.drop_table("callbacks")
    op.drop_index("ix_call_events_call", "call_events")
    op.drop_index("ix_call_events_at", "call_events")
    op.drop_table("call_events")
