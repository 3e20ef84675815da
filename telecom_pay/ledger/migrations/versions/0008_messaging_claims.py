"""Messaging claims: several daemon instances share one database, so the
right to answer an inbound message or to send an outbox row is a lease
held in the row (the instance's id and an expiry), not a set in one
process's memory. A dead instance's leases run out and a live one takes
the rows over.

Revision ID: 0008_messaging_claims
Revises: 0007_messaging_secrets
"""
from alembic import op
import sqlalchemy as sa

revision = "0008_messaging_claims"
down_revision = "0007_messaging_secrets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("inbound_messages", "outbox"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claimed_by", sa.String(64)))
            batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    for table in ("outbox", "inbound_messages"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("claimed_until")
            batch.drop_column("claimed_by")
