"""PaymentService: the one API every channel calls (SMS, USSD, IVR, web,
the agent console). Channel-neutral: it takes MSISDNs, amounts in minor
units and idempotency keys, and returns typed `Result`s; channels render.

Every money operation is booked through the ledger's group commit, with its
checks (PIN, limits, account state) inside the same write job, so a check
and the booking it guards are one atomic step. Results are returned only
after the commit.

The class is composed by audience (DESIGN.md section 2), each part in its own
module over the one unit of work in `base`: `subscriber`, `agent`, `merchant`
and `operator`. A channel still calls one object; an operation is found, and
reviewed, beside the others its audience runs.
"""
from __future__ import annotations

from telecom_pay.ledger.chart import ensure_system_accounts

from .agent import AgentOperations
from .base import Notifier, RECEIPTED_KINDS, RECEIPT_BY_SMS, ServiceCore
from .merchant import MerchantOperations
from .operator import OperatorOperations
from .risk_review import RiskReview
from .subscriber import MERCHANT_PREVIEW_TTL, SubscriberOperations
from .selfservice import SelfServiceOperations
from .suspense import SuspenseOperations

__all__ = ["PaymentService", "RECEIPT_BY_SMS", "RECEIPTED_KINDS", "Notifier", "MERCHANT_PREVIEW_TTL"]


class PaymentService(SubscriberOperations, AgentOperations, MerchantOperations, OperatorOperations,
                     SuspenseOperations, SelfServiceOperations, RiskReview, ServiceCore):
    """The one object every channel holds. The parts are mixins over one
    ServiceCore rather than separate objects: they share its state (ledger,
    sessions, notifiers, the merchant names) and call one another through
    `self` (an agent reads a balance as the subscriber would; an in-doubt
    resolution finishes a subscriber's close), so moving an operation from one
    part to another never changes what it does."""

    async def start(self) -> None:
        """Create the system accounts and the merchants/agents from config."""
        self.system = await ensure_system_accounts(self.ledger)
        for m in self.settings.merchants:
            await self.register_merchant(m["code"], m.get("name", m["code"]), name_en=m.get("name_en"), entry=m)
        for a in self.settings.agents:
            await self.register_agent(a["code"], a.get("name", a["code"]))
        await self.recover_bank_operations()
