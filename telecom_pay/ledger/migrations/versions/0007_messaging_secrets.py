"""Messaging secrets and failures: an inbound message that is not answered
(a sender that is not a mobile number) is recorded failed with its reason;
outbox rows that carry a credential (initial PIN and password, a reset PIN)
are marked, so their text can be blanked once the
SMSC has accepted them; a queue key lets a writer that may run twice (a
redo after an ambiguous COMMIT) queue its messages once.

Revision ID: 0007_messaging_secrets
Revises: 0003_messaging
"""
from alembic import op
import sqlalchemy as sa

revision = "0007_messaging_secrets"
down_revision = "0003_messaging"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.add_column(sa.Column("error", sa.String(200)))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("secret", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("queue_key", sa.String(160)))
        batch.create_unique_constraint("uq_outbox_queue_key", ["queue_key"])


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("uq_outbox_queue_key", type_="unique")
        batch.drop_column("queue_key")
        batch.drop_column("secret")
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_column("error")
