"""Indexes for the operators' audit search (/ops/audit): by business day,
by actor and by action, newest first, and wallets by number whatever their
status (a closed wallet's trail is still searched by its number).

Revision ID: 0013_audit_search
Revises: 0012_risk
"""
from alembic import op

revision = "0013_audit_search"
down_revision = "0012_risk"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_audit_at", "audit_log", ["at"]),
    ("ix_audit_actor_at", "audit_log", ["actor", "at"]),
    ("ix_audit_action_at", "audit_log", ["action", "at"]),
    ("ix_accounts_msisdn", "accounts", ["msisdn"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table)
