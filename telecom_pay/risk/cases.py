"""Risk cases: one row per screened operation that hit a rule, with the
rules and the figures that made them hit. A `hold` case's operation is a
pending ledger transaction (the payer's money reserved) until an operator
releases it (posted) or refuses it (voided); an `alert` case's operation
went through and waits to be closed as reviewed.

A held case nobody decides stays held: nothing expires it, because a
timeout would decide for the operator (either paying a suspicious payment
or refusing a good one without anyone looking). It stays on /ops/risk and
`telecom-pay risk list`, and its pending operation shows in `telecom-pay
db check` once older than `[ledger] pending_alarm_minutes`.
"""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay.ledger.tables import Id, Money, Stamp

metadata = sa.MetaData()

# case kinds and states
HOLD, ALERT = "hold", "alert"
HELD, RELEASED, REFUSED = "held", "released", "refused"          # a hold's states
OPEN_ALERT, REVIEWED = "alert", "reviewed"                        # an alert's states
OPEN_STATES = (HELD, OPEN_ALERT)
DECIDED_STATES = (RELEASED, REFUSED, REVIEWED)

# an operator's decisions, and the state each leads to (for which kind)
RELEASE, REFUSE, REVIEW = "release", "refuse", "review"
DECISIONS = {RELEASE: (HOLD, RELEASED), REFUSE: (HOLD, REFUSED), REVIEW: (ALERT, REVIEWED)}

risk_cases = sa.Table(
    "risk_cases", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("operation_id", Id, nullable=False),               # operations.id (one case per operation)
    sa.Column("operation_key", sa.String(160), nullable=False),
    sa.Column("ref", sa.String(12), nullable=False),
    sa.Column("op_kind", sa.String(24), nullable=False),         # payment | p2p | airtime
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("account_id", Id, nullable=False),                 # the payer's wallet
    sa.Column("counterparty_id", Id),
    sa.Column("amount", Money, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),             # hold | alert
    sa.Column("status", sa.String(10), nullable=False),          # held | released | refused | alert | reviewed
    sa.Column("rules", sa.JSON, nullable=False),                 # the names of the rules that hit
    sa.Column("figures", sa.JSON, nullable=False),               # per rule: what it counted and its thresholds
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("decided_at", Stamp),
    sa.Column("decided_by", sa.String(64)),
    sa.Column("reason", sa.String(200)),
)
sa.Index("uq_risk_cases_operation", risk_cases.c.operation_id, unique=True)
sa.Index("uq_risk_cases_key", risk_cases.c.operation_key, unique=True)
sa.Index("ix_risk_cases_status", risk_cases.c.status, risk_cases.c.created_at)
