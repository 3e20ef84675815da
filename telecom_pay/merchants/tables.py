"""The merchant tables (migration 0014_merchants; README.md here says what
each row means to a merchant).

A merchant is still a ledger account of kind `merchant`; these tables hold
what the ledger does not: its profile (names, category, fee plan, refund
policy, API key id), the SP payment requests it made, the refunds it gave
or was asked for, and the callbacks owed to it. Money never lives here:
every amount in these rows is booked (or not yet) in `operations`, under
the key the row names, so the ledger stays the one source of truth.
"""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay.ledger.tables import Id, Money, Stamp, accounts, operations

metadata = sa.MetaData()

CATEGORIES = ("lottery", "airtime", "games", "goods")
AUTOMATIC, REVIEWED = "automatic", "reviewed"
REFUND_POLICIES = (AUTOMATIC, REVIEWED)

# SP payment request states
P_PENDING, P_CONFIRMED, P_DECLINED, P_EXPIRED = "pending", "confirmed", "declined", "expired"
PAYMENT_STATES = (P_PENDING, P_CONFIRMED, P_DECLINED, P_EXPIRED)
# refund states
R_REVIEW, R_SUCCEEDED, R_REJECTED = "pending_review", "succeeded", "rejected"
REFUND_STATES = (R_REVIEW, R_SUCCEEDED, R_REJECTED)
# notification states
N_PENDING, N_DELIVERED, N_FAILED = "pending", "delivered", "failed"

merchant_profiles = sa.Table(
    "merchant_profiles", metadata,
    sa.Column("account_id", Id, primary_key=True),               # accounts.id (kind merchant)
    sa.Column("name_en", sa.String(100), nullable=False, server_default=""),
    sa.Column("category", sa.String(16), nullable=False),        # lottery | airtime | games | goods
    sa.Column("fee_plan", sa.JSON),                              # FeeRule fields; null: [fees.payment]
    sa.Column("refund_policy", sa.String(10), nullable=False),   # automatic | reviewed
    sa.Column("api_key_id", sa.String(48)),                      # mk_...; the secret is derived, never stored
    sa.Column("key_created_at", Stamp),
    sa.Column("notify_url", sa.String(500)),                     # default callback URL
    sa.Column("source", sa.String(8), nullable=False),           # config | onboard
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("updated_at", Stamp, nullable=False),
)
merchant_profiles.c.account_id.append_foreign_key(sa.ForeignKey(accounts.c.id))
sa.Index("uq_merchant_profiles_key", merchant_profiles.c.api_key_id, unique=True)

sp_payments = sa.Table(
    "sp_payments", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("public_id", sa.String(32), nullable=False),       # pay_...
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("order_id", sa.String(64), nullable=False),        # the merchant's; its idempotency key
    sa.Column("msisdn", sa.String(20), nullable=False),          # E.164 digits
    sa.Column("account_id", Id),                                 # the payer's wallet
    sa.Column("amount", Money, nullable=False),
    sa.Column("fee", Money, nullable=False, server_default="0"),
    sa.Column("description", sa.String(100), nullable=False),
    sa.Column("notify_url", sa.String(500)),
    sa.Column("request", sa.JSON, nullable=False),               # what the order id was used for
    sa.Column("status", sa.String(12), nullable=False),          # pending | confirmed | declined | expired
    sa.Column("decline_reason", sa.String(32)),
    sa.Column("tag", sa.String(4), nullable=False),              # names the order to the subscriber
    sa.Column("pin_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("confirm_by", sa.String(8), nullable=False),       # sms | ussd
    sa.Column("operation_key", sa.String(160), nullable=False),  # sp:<public_id>
    sa.Column("ref", sa.String(12)),                             # the payment's ledger reference
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("expires_at", Stamp, nullable=False),
    sa.Column("resolved_at", Stamp),
    sa.Column("updated_at", Stamp, nullable=False),
)
sp_payments.c.merchant_id.append_foreign_key(sa.ForeignKey(accounts.c.id))
sp_payments.c.account_id.append_foreign_key(sa.ForeignKey(accounts.c.id))
sa.Index("uq_sp_payments_public", sp_payments.c.public_id, unique=True)
sa.Index("uq_sp_payments_order", sp_payments.c.merchant_id, sp_payments.c.order_id, unique=True)
sa.Index("ix_sp_payments_msisdn_status", sp_payments.c.msisdn, sp_payments.c.status)
sa.Index("ix_sp_payments_status_expires", sp_payments.c.status, sp_payments.c.expires_at)
sa.Index("ix_sp_payments_merchant_created", sp_payments.c.merchant_id, sp_payments.c.created_at)

merchant_refunds = sa.Table(
    "merchant_refunds", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("public_id", sa.String(32), nullable=False),       # rf_...
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("payment_operation_id", Id, nullable=False),       # the payment refunded (SP or ZF)
    sa.Column("sp_payment_id", Id),                              # when it came through the SP API
    sa.Column("refund_key", sa.String(64), nullable=False),      # the merchant's refund_id (idempotency)
    sa.Column("amount", Money, nullable=False),
    sa.Column("fee_refunded", Money, nullable=False, server_default="0"),
    sa.Column("status", sa.String(16), nullable=False),          # pending_review | succeeded | rejected
    sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("requested_by", sa.String(64), nullable=False),    # a web user, or api:<key id>
    sa.Column("requested_via", sa.String(8), nullable=False),    # api | web
    sa.Column("decided_by", sa.String(64)),
    sa.Column("decision_reason", sa.String(200)),
    sa.Column("decided_at", Stamp),
    sa.Column("operation_key", sa.String(160), nullable=False),  # the refund's ledger key
    sa.Column("ref", sa.String(12)),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("updated_at", Stamp, nullable=False),
)
merchant_refunds.c.merchant_id.append_foreign_key(sa.ForeignKey(accounts.c.id))
merchant_refunds.c.payment_operation_id.append_foreign_key(sa.ForeignKey(operations.c.id))
merchant_refunds.c.sp_payment_id.append_foreign_key(sa.ForeignKey(sp_payments.c.id))
sa.Index("uq_merchant_refunds_public", merchant_refunds.c.public_id, unique=True)
sa.Index("uq_merchant_refunds_key", merchant_refunds.c.merchant_id, merchant_refunds.c.refund_key, unique=True)
sa.Index("ix_merchant_refunds_payment", merchant_refunds.c.payment_operation_id)
sa.Index("ix_merchant_refunds_merchant_status", merchant_refunds.c.merchant_id, merchant_refunds.c.status,
         merchant_refunds.c.created_at)

merchant_notifications = sa.Table(
    "merchant_notifications", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(40), nullable=False),        # evt_...: the merchant deduplicates by it
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),      # payment.confirmed, refund.succeeded, ...
    sa.Column("subject_id", sa.String(32), nullable=False),      # the pay_ or rf_ id
    sa.Column("url", sa.String(500), nullable=False),
    sa.Column("body", sa.Text, nullable=False),                  # the exact bytes sent (signed as such)
    sa.Column("status", sa.String(10), nullable=False),          # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", Stamp),
    sa.Column("claimed_until", Stamp),                           # an instance is sending it
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.String(200)),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("delivered_at", Stamp),
    sa.Column("updated_at", Stamp, nullable=False),
)
merchant_notifications.c.merchant_id.append_foreign_key(sa.ForeignKey(accounts.c.id))
sa.Index("uq_merchant_notifications_event", merchant_notifications.c.event_id, unique=True)
sa.Index("ix_merchant_notifications_due", merchant_notifications.c.status, merchant_notifications.c.next_attempt_at)
sa.Index("ix_merchant_notifications_merchant", merchant_notifications.c.merchant_id,
         merchant_notifications.c.created_at)

notification_attempts = sa.Table(
    "notification_attempts", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("notification_id", Id, nullable=False),
    sa.Column("at", Stamp, nullable=False),
    sa.Column("http_status", sa.Integer),
    sa.Column("error", sa.String(200)),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("manual", sa.Boolean, nullable=False, server_default=sa.false()),   # a resend from the back office
)
notification_attempts.c.notification_id.append_foreign_key(sa.ForeignKey(merchant_notifications.c.id))
sa.Index("ix_notification_attempts_notification", notification_attempts.c.notification_id, notification_attempts.c.at)
