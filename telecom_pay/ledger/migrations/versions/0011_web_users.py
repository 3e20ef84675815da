"""Web users: the people who log into the web interface (agents,
supervisors, operations admins, subscribers), with their argon2 password
hash and the durable part of login throttling (telecom_pay/webusers.py).

Revision ID: 0011_web_users
Revises: 0010_call_events_once
"""
from alembic import op
import sqlalchemy as sa

revision = "0011_web_users"
down_revision = "0010_call_events_once"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("role", sa.String(24), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("must_change_password", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("msisdn", sa.String(20)),
        sa.Column("agent_code", sa.String(16)),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", Stamp),
        sa.Column("last_login_at", Stamp),
        sa.Column("password_changed_at", Stamp),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_index("uq_web_users_username", "web_users", ["username"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_web_users_username", "web_users")
    op.drop_table("web_users")
