"""A PaymentService on a real database and session store, for tests."""
from __future__ import annotations

from telecom_pay import config
from telecom_pay.security import PasswordHasher
from telecom_pay.service import PaymentService
from telecom_pay.sessions import open_session_store
from tests.bankdouble import InProcessBank
from tests.ledgerkit import make_ledger

MSISDN = "8613800138000"
OTHER = "8613900139000"
PAN_DEBIT = "6222020000001234"
PAN_CREDIT = "6222030000005678"


async def make_service(database_url: str, *, sessions_url: str = "memory://", prefix: str = "tp:",
                       bank: InProcessBank | None = None, overrides: dict | None = None,
                       clock=None) -> PaymentService:
    """`clock` (a tests.clockkit.TestClock): "now" of both the ledger and the
    service, which share it (`svc.clock is svc.ledger.clock`)."""
    settings = config.load(None, overrides)
    ledger = await make_ledger(database_url, **({"clock": clock} if clock is not None else {}))
    sessions = open_session_store(sessions_url, prefix=prefix)
    if bank is None:
        bank = InProcessBank()
        bank.add_card(PAN_DEBIT, card_type="debit")
        bank.add_card(PAN_CREDIT, card_type="credit")
    # cheap argon2 parameters keep tests fast; production uses the defaults
    svc = PaymentService(ledger, sessions, settings, bank=bank, clock=ledger.clock,
                         password_hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    await svc.start()
    return svc


CHOSEN_PIN = "258147"


async def open_active(svc: PaymentService, msisdn: str = MSISDN) -> str:
    """KT, A, then MM from the initial PIN to CHOSEN_PIN (an initial PIN
    moves no money); returns CHOSEN_PIN."""
    r = await svc.open_account(msisdn, channel="test")
    assert r.outcome.value == "confirm_required", r
    r = await svc.confirm_open(msisdn, channel="test")
    assert r.outcome.value == "ok", r
    r = await svc.change_pin(msisdn, r.params["pin"], CHOSEN_PIN, channel="test")
    assert r.outcome.value == "ok", r
    return CHOSEN_PIN


async def funded(svc: PaymentService, msisdn: str = MSISDN, amount: int = 10_000) -> str:
    pin = await open_active(svc, msisdn)
    await svc.fund_agent("AG001", amount, key=f"float-{msisdn}", operator="test")
    r = await svc.cash_in("AG001", msisdn, amount, key=f"cash-{msisdn}")
    assert r.outcome.value == "ok", r
    return pin


async def shutdown(svc: PaymentService) -> None:
    await svc.ledger.close()
    await svc.ledger.db.dispose()
    await svc.sessions.close()


async def outbox_texts(svc: PaymentService, msisdn: str) -> list[str]:
    """What the outbox holds for a number (queued by any process), oldest first."""
    import sqlalchemy as sa
    from telecom_pay.messaging import outbox

    async def q(conn):
        rows = await conn.execute(sa.select(outbox.c.text).where(outbox.c.msisdn == msisdn).order_by(outbox.c.id))
        return [r.text for r in rows]
    return await svc.ledger.read(q)

