"""Call events once: every daemon instance logged into one switch hears the
same AMI events; the first to write one records it, the others' inserts
are ignored (telecom_pay/calls.py).

Revision ID: 0010_call_events_once
Revises: 0009_calls
"""
from alembic import op

revision = "0010_call_events_once"
down_revision = "0009_calls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("uq_call_events_once", "call_events", ["call_id", "event", "channel"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_call_events_once", "call_events")
