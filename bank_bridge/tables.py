"""The bridge's durable state (SQLAlchemy Core). Created by the Alembic
revision `0002_bank` (telecom_pay/ledger/migrations/versions/0002_bank.py),
which must create exactly these tables.

- bank_sequences: counters handed out in blocks (STAN per terminal, RRN), so
  a restart skips ahead and never reuses a number.
- bank_operations: one row per money operation_key: the idempotency record
  and its outcome; the same key never sends a second 0200.
- bank_reversals: the durable reversal queue (0420, repeated as 0421 until a
  0430 arrives), resumed on start.
- bank_journal: every message out and in and what became of it, for audit
  and reconciliation. Cards appear only as token and last 4 digits.
- bank_reviews (revision `0005_bank_review`): one row per manual decision on
  an operation whose reversal the bank never acknowledged: who, when, why,
  the outcome, and the operation and reversal before and after.
"""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay.ledger.tables import Stamp

metadata = sa.MetaData()

bank_sequences = sa.Table(
    "bank_sequences", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

bank_operations = sa.Table(
    "bank_operations", metadata,
    sa.Column("operation_key", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),            # debit | credit
    sa.Column("bank_code", sa.String(32), nullable=False),
    sa.Column("terminal_id", sa.String(8), nullable=False),
    sa.Column("mti", sa.String(4), nullable=False),
    sa.Column("stan", sa.String(6), nullable=False),
    sa.Column("rrn", sa.String(12), nullable=False, unique=True),
    sa.Column("transmitted_at", sa.String(10), nullable=False),  # field 7 of the request
    sa.Column("processing_code", sa.String(6), nullable=False),
    sa.Column("pan_token", sa.String(64), nullable=False),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    # sent -> approved | declined | reversing -> reversed | review -> approved | reversed (an operator)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("response_code", sa.String(2)),
    sa.Column("decline", sa.String(32)),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("updated_at", Stamp, nullable=False),
)

bank_reversals = sa.Table(
    "bank_reversals", metadata,
    sa.Column("operation_key", sa.String(128), primary_key=True),
    sa.Column("bank_code", sa.String(32), nullable=False),
    sa.Column("terminal_id", sa.String(8), nullable=False),
    sa.Column("stan", sa.String(6), nullable=False),            # the reversal's own STAN
    sa.Column("rrn", sa.String(12), nullable=False),            # the original's RRN
    sa.Column("original_data", sa.String(42), nullable=False),  # field 90
    sa.Column("processing_code", sa.String(6), nullable=False),
    sa.Column("pan_token", sa.String(64), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    # pending (send 0420/0421) -> acknowledged (a final 0430 in, or an operator's
    # decision; resolver not yet told) -> resolved. pending -> review after
    # `reversal_max_attempts` without a final answer: no more repeats, an operator decides.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),     # epoch seconds
    sa.Column("response_code", sa.String(2)),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("updated_at", Stamp, nullable=False),
    # what the resolver is told: "declined" (reversed, or nothing to reverse) unless
    # an operator found the original approved ("approved"); 0005_bank_review
    sa.Column("resolution", sa.String(8)),
)
sa.Index("ix_bank_reversals_state", bank_reversals.c.state)

bank_journal = sa.Table(
    "bank_journal", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("at", Stamp, nullable=False),
    sa.Column("bank_code", sa.String(32), nullable=False),
    sa.Column("direction", sa.String(3), nullable=False),        # out | in
    sa.Column("event", sa.String(32), nullable=False),           # sent, response, timeout, late_response ...
    sa.Column("operation_key", sa.String(128)),
    sa.Column("mti", sa.String(4)),
    sa.Column("stan", sa.String(6)),
    sa.Column("rrn", sa.String(12)),
    sa.Column("terminal_id", sa.String(8)),
    sa.Column("pan_token", sa.String(64)),
    sa.Column("last4", sa.String(4)),
    sa.Column("amount", sa.BigInteger),
    sa.Column("processing_code", sa.String(6)),
    sa.Column("response_code", sa.String(2)),
    sa.Column("detail", sa.String(200)),
)
sa.Index("ix_bank_journal_operation_key", bank_journal.c.operation_key)
sa.Index("ix_bank_journal_rrn", bank_journal.c.rrn)

bank_reviews = sa.Table(
    "bank_reviews", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("at", Stamp, nullable=False),
    sa.Column("operation_key", sa.String(128), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(8), nullable=False),          # approved | declined
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("before", sa.JSON, nullable=False),                # operation and reversal states
    sa.Column("after", sa.JSON, nullable=False),
)
sa.Index("ix_bank_reviews_operation_key", bank_reviews.c.operation_key)
