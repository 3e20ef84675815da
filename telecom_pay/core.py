"""Builds the channel-neutral core from settings: database (migrated when
the config says so), ledger, session store, PaymentService, conversation.
The daemon, the CLI console and the agent tool all start here."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from telecom_pay.bank_port import BankPort
from telecom_pay.commands.conversation import Conversation
from telecom_pay.config import Settings
from telecom_pay.ledger import schema
from telecom_pay.ledger.database import open_database
from telecom_pay.ledger.ledger import Ledger
from telecom_pay.menus.engine import MenuEngine
from telecom_pay.service import PaymentService
from telecom_pay.sessions import SessionStore, open_session_store


@dataclass
class Core:
    settings: Settings
    ledger: Ledger
    sessions: SessionStore
    service: PaymentService
    conversation: Conversation
    menus: MenuEngine | None = None           # telecom_pay.menus.engine.MenuEngine: USSD and the IVR share it

    async def close(self) -> None:
        await self.ledger.close()
        await self.ledger.db.dispose()
        await self.sessions.close()


async def open_core(settings: Settings, *, bank: BankPort | None = None, upgrade: bool | None = None,
                    clock: Callable[[], datetime] | None = None) -> Core:
    """`clock`: "now" for the ledger and the service (one clock; UTC by default)."""
    if settings.auto_upgrade if upgrade is None else upgrade:
        # Alembic is blocking: keep it off the event loop's thread.
        await asyncio.get_running_loop().run_in_executor(None, schema.upgrade, settings.database_url)
    ledger = Ledger(open_database(settings.database_url), **({"clock": clock} if clock is not None else {}))
    sessions = open_session_store(settings.sessions_url, prefix=settings.sessions_prefix)
    service = PaymentService(ledger, sessions, settings, bank=bank)
    await service.start()
    await seed_agent_floats(service, settings)
    conversation = Conversation(service, sessions)
    menus = MenuEngine(conversation, sessions, ttl=float(settings.section("menus").get("session_ttl", 600)))
    return Core(settings, ledger, sessions, service, conversation, menus)


async def seed_agent_floats(service: PaymentService, settings: Settings) -> None:
    """Agents with an `initial_float` in config get it once (idempotent key):
    a development convenience so a newcomer's cash-in works at once."""
    for agent in settings.agents:
        amount = agent.get("initial_float")
        if amount:
            await service.fund_agent(agent["code"], int(amount), operator="config",
                                     key=f"float-seed:{agent['code']}")
