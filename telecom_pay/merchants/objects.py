"""What a merchant is shown of a payment request or a refund: one shape
for the API's answers, the callbacks' `data` and the back office, so the
three never disagree (README.md here). The payer's number is masked: the
merchant sent it, and a callback or a log is no place to repeat it."""
from __future__ import annotations

from typing import Any

from telecom_pay.msisdn import mask

from .events import iso


def payment_object(row, *, merchant_code: str, refunded: int = 0) -> dict[str, Any]:
    """`row`: an sp_payments row."""
    return {"id": row.public_id, "order_id": row.order_id, "merchant_code": merchant_code,
            "msisdn": mask(row.msisdn), "amount": row.amount, "description": row.description,
            "status": row.status, "decline_reason": row.decline_reason, "ref": row.ref, "fee": row.fee,
            "refunded": refunded, "confirm_by": row.confirm_by, "created_at": iso(row.created_at),
            "expires_at": iso(row.expires_at), "resolved_at": iso(row.resolved_at)}


def refund_object(row, *, payment_id: str | None, payment_ref: str | None) -> dict[str, Any]:
    """`row`: a merchant_refunds row; `payment_id`: the SP payment's pay_ id
    (None for a refund of a ZF payment), `payment_ref`: its ledger reference."""
    return {"id": row.public_id, "refund_id": row.refund_key, "payment_id": payment_id, "payment_ref": payment_ref,
            "amount": row.amount, "fee_refunded": row.fee_refunded, "status": row.status, "reason": row.reason,
            "decision_reason": row.decision_reason, "requested_by": row.requested_by,
            "decided_by": row.decided_by, "ref": row.ref, "created_at": iso(row.created_at),
            "decided_at": iso(row.decided_at)}
