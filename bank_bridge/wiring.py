"""How the daemon gets its bank: `[bank] factory = "bank_bridge.wiring:make_bank"`.

Starts the bridge (its own engine on the platform's database, whose schema
the daemon has already upgraded) and returns the running service; the
daemon hands `service.port` to the PaymentService and stops the service
last."""
from __future__ import annotations

import os
from typing import Any

from bank_bridge.service import BankBridgeService
from telecom_pay.aio import wait_deferred


async def make_bank(settings, config: dict[str, Any], reactor) -> BankBridgeService:
    config = dict(config)
    if os.environ.get("TELECOM_PAY_CARD_TOKEN_KEY"):       # production keeps the key out of files
        config["card_token_key"] = os.environ["TELECOM_PAY_CARD_TOKEN_KEY"]
    service = BankBridgeService(config, database_url=settings.database_url, reactor=reactor)
    await wait_deferred(service.startService())
    service.stop = lambda: service.stopService()     # the daemon's contract: stop() when closing
    return service
