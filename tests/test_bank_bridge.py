"""The bank bridge against the bank simulator over real TCP on 127.0.0.1:
approvals, declines, time-outs and reversals, idempotency, restarts and card
verification. Durable state runs on SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from twisted.internet import reactor
from twisted.internet.protocol import Protocol

from bank_bridge import spec
from bank_bridge.framing import FrameDecoder, encode_frame

from bank_bridge.cards import card_token
from bank_bridge.service import BankBridgeService
from simulators.bank import BankSimulator
from telecom_pay.aio import wait_deferred
from telecom_pay.bank_port import BankStatus, CardRef
from telecom_pay.ledger.schema import async_url, upgrade
from telecom_pay.outcomes import BankDecline
from tests.aio import aio_test

KEY = b"test-card-key"
DEBIT_PAN = "6222020000001234"
CREDIT_PAN = "6222080000005678"


class RecordingResolver:
    """The resolver seam: records what the port tells the ledger."""

    def __init__(self):
        self.calls: list[tuple[str, bool]] = []

    async def resolve_in_doubt(self, operation_key: str, approved: bool) -> None:
        self.calls.append((operation_key, approved))


async def eventually(predicate, timeout: float = 10.0):
    """Wait until predicate() is true (a bound, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def eventually_async(predicate, timeout: float = 10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


class Harness:
    def __init__(self, database_url: str, *, timeout: float = 0.5, **config):
        self.database_url = database_url
        self.timeout = timeout
        self.extra_config = config
        self.sim = BankSimulator({"bank_code": "icbc"}, reactor)
        self.sim.add_card(DEBIT_PAN, "3012", "debit", balance=100_00)
        self.sim.add_card(CREDIT_PAN, "3012", "credit", balance=0, limit=500_00)
        self.sim.add_card("6222020000009999", "3012", "debit", balance=100_00, status="blocked")
        self.sim.add_card("6222020000008888", "2001", "debit", balance=100_00)
        self.opening = {pan: card.balance for pan, card in self.sim.issuer.cards.items()}
        self.listening = None
        self.services: list[BankBridgeService] = []
        self.resolver = RecordingResolver()

    async def start_sim(self):
        self.listening = await wait_deferred(self.sim.listen("tcp:0:interface=127.0.0.1"))
        return self

    def config(self) -> dict:
        return {"card_token_key": KEY.decode(), "reversal_retry_initial": 0.1, "reversal_retry_max": 0.5,
                "reconnect_initial": 0.05, "reconnect_max": 0.5,
                "banks": [{"code": "icbc", "endpoint": f"tcp:host=127.0.0.1:port={self.listening.getHost().port}",
                           "bins": ["622202", "622208"], "terminal_id": "TP000001", "acquirer_id": "48020000",
                           "timeout": self.timeout, "echo_interval": 30}], **self.extra_config}

    async def start_bridge(self) -> BankBridgeService:
        service = BankBridgeService(self.config(), database_url=self.database_url, reactor=reactor)
        service.port.set_resolver(self.resolver)
        await wait_deferred(service.startService())
        await service.port.wait_ready()
        self.services.append(service)
        return service

    async def stop_bridge(self, service):
        await wait_deferred(service.stopService())
        self.services.remove(service)

    async def close(self):
        for service in list(self.services):
            await self.stop_bridge(service)
        self.sim.drop_connections()
        if self.listening is not None:
            await wait_deferred(self.listening.stopListening())

    async def verified(self, port, pan=DEBIT_PAN, expiry="3012") -> CardRef:
        result = await port.verify_card(pan=pan, expiry=expiry, holder_msisdn="8613800000000")
        assert result.status is BankStatus.APPROVED, result
        return result.card

    async def assert_books_agree(self):
        """The issuer's standing movements are exactly the approved operations
        the port recorded, and every card balance is its opening balance plus
        its movements (reversals included)."""
        await self.assert_books_agree_except(set())

    async def assert_books_agree_except(self, forged: set[str]):
        ops = [o for o in await self.rows("bank_operations") if o["operation_key"] not in forged]
        assert not [o for o in ops if o["status"] in ("sent", "reversing", "review")], "operations left in doubt"
        approved = {o["rrn"]: (o["kind"], o["amount"]) for o in ops if o["status"] == "approved"}
        standing = {}
        for pan, card in self.sim.issuer.cards.items():
            standing.update({m.rrn: (m.kind, abs(m.amount)) for m in card.movements
                             if m.kind in ("debit", "credit") and not m.reversed})
            assert card.balance == self.opening[pan] + sum(m.amount for m in card.movements)
        assert standing == approved

    async def rows(self, table: str) -> list[dict]:
        engine = create_async_engine(async_url(self.database_url))
        try:
            async with engine.connect() as conn:
                order = " ORDER BY id" if table == "bank_journal" else ""
                rows = (await conn.execute(sa.text(f"SELECT * FROM {table}{order}"))).mappings().all()
            return [dict(r) for r in rows]
        finally:
            await engine.dispose()


@pytest.fixture
def bank_db(database_url):
    upgrade(database_url)
    return database_url


def harness_test(timeout: float = 0.5):
    """Run an async test with a started simulator and bridge; always clean up."""
    def decorate(fn):
        @aio_test
        async def wrapper(bank_db):
            h = await Harness(bank_db, timeout=timeout).start_sim()
            try:
                service = await h.start_bridge()
                await fn(h, service.port)
                await h.assert_books_agree()
            finally:
                await h.close()
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper
    return decorate


def assert_consistent(sim_card, outcomes: dict[str, BankStatus], amounts: dict[str, int], opening: int,
                      kinds: dict[str, str]):
    """The card's balance equals its opening balance plus every approved outcome."""
    expected = opening
    for key, status in outcomes.items():
        if status is BankStatus.APPROVED:
            expected += -amounts[key] if kinds[key] == "debit" else amounts[key]
    assert sim_card.balance == expected


@harness_test()
async def test_verify_card_gives_a_card_ref_without_the_pan(h, port):
    card = await h.verified(port)
    assert card == CardRef(token=card_token(DEBIT_PAN, KEY), last4="1234", bin="622202",
                           card_type="debit", bank_code="icbc")
    credit = await h.verified(port, CREDIT_PAN)
    assert credit.card_type == "credit"
    for row in await h.rows("bank_journal"):
        assert DEBIT_PAN not in " ".join(str(v) for v in row.values())
    assert h.sim.card(DEBIT_PAN).tokens == {card.token}


@harness_test()
async def test_verify_card_declines(h, port):
    blocked = await port.verify_card(pan="6222020000009999", expiry="3012", holder_msisdn="8613800000000")
    assert (blocked.status, blocked.decline, blocked.response_code) == (BankStatus.DECLINED, BankDecline.RESTRICTED, "62")
    expired = await port.verify_card(pan="6222020000008888", expiry="2001", holder_msisdn="8613800000000")
    assert (expired.status, expired.decline) == (BankStatus.DECLINED, BankDecline.EXPIRED_CARD)
    unknown = await port.verify_card(pan="6222020000007777", expiry="3012", holder_msisdn="8613800000000")
    assert (unknown.status, unknown.decline) == (BankStatus.DECLINED, BankDecline.INVALID_CARD)
    no_bank = await port.verify_card(pan="4111111111111111", expiry="3012", holder_msisdn="8613800000000")
    assert (no_bank.status, no_bank.decline) == (BankStatus.DECLINED, BankDecline.INVALID_CARD)
    assert "4111111111111111" not in str([m for m in h.sim.messages])


@harness_test()
async def test_debit_and_credit_approved_and_recorded(h, port):
    card = await h.verified(port)
    debit = await port.debit_card(operation_key="op-1", card=card, amount=30_00)
    assert debit.status is BankStatus.APPROVED and debit.response_code == "00"
    assert len(debit.stan) == 6 and len(debit.rrn) == 12
    credit = await port.credit_card(operation_key="op-2", card=card, amount=5_00)
    assert credit.status is BankStatus.APPROVED
    assert credit.stan != debit.stan and credit.rrn != debit.rrn
    sim_card = h.sim.card(DEBIT_PAN)
    assert [(m.kind, m.amount) for m in sim_card.movements] == [("debit", -30_00), ("credit", 5_00)]
    assert_consistent(sim_card, {"op-1": debit.status, "op-2": credit.status}, {"op-1": 30_00, "op-2": 5_00},
                      100_00, {"op-1": "debit", "op-2": "credit"})
    ops = {r["operation_key"]: r for r in await h.rows("bank_operations")}
    assert ops["op-1"]["status"] == "approved" and ops["op-1"]["processing_code"] == "000000"
    assert ops["op-2"]["processing_code"] == "200000" and ops["op-2"]["last4"] == "1234"
    journal = [r for r in await h.rows("bank_journal") if r["operation_key"] == "op-1"]
    assert [(r["direction"], r["mti"], r["event"]) for r in journal] == [("out", "0200", "sent"),
                                                                          ("in", "0210", "response")]
    assert journal[1]["response_code"] == "00" and journal[0]["rrn"] == debit.rrn


@harness_test()
async def test_same_operation_key_never_sends_a_second_0200(h, port):
    card = await h.verified(port)
    first, second = await asyncio.gather(
        port.debit_card(operation_key="op-dup", card=card, amount=10_00),
        port.debit_card(operation_key="op-dup", card=card, amount=10_00))
    third = await port.debit_card(operation_key="op-dup", card=card, amount=10_00)
    statuses = {first.status, second.status}
    assert BankStatus.APPROVED in statuses and third.status is BankStatus.APPROVED
    assert third.stan == first.stan if first.status is BankStatus.APPROVED else third.stan == second.stan
    assert len([m for m in h.sim.messages if m["mti"] == "0200" and not m["note"]]) == 1
    assert h.sim.card(DEBIT_PAN).balance == 90_00


DECLINES = [
    ("insufficient", BankDecline.INSUFFICIENT_FUNDS, "51"),
    ("unknown_token", BankDecline.INVALID_CARD, "14"),
    ("expired", BankDecline.EXPIRED_CARD, "54"),
    ("blocked", BankDecline.RESTRICTED, "62"),
    ("issuer_down", BankDecline.ISSUER_UNAVAILABLE, "91"),
    ("odd_code", BankDecline.OTHER, "05"),
]


@harness_test()
async def test_declines_map_to_bank_declines(h, port):
    card = await h.verified(port)
    sim_card = h.sim.card(DEBIT_PAN)
    for setup, decline, code in DECLINES:
        used, amount = card, 10_00
        sim_card.expiry, sim_card.status = "3012", "active"
        h.sim.faults.clear()
        if setup == "insufficient":
            amount = 100_01
        elif setup == "unknown_token":
            used = CardRef(token="f" * 64, last4="0000", bin="622202", card_type="debit", bank_code="icbc")
        elif setup == "expired":
            sim_card.expiry = "2001"
        elif setup == "blocked":
            sim_card.status = "blocked"
        elif setup == "issuer_down":
            h.sim.faults.update({"decline_all": "91"})
        elif setup == "odd_code":
            h.sim.faults.update({"decline_all": "05"})
        result = await port.debit_card(operation_key=f"op-{setup}", card=used, amount=amount)
        assert (result.status, result.decline, result.response_code) == (BankStatus.DECLINED, decline, code), setup
        again = await port.debit_card(operation_key=f"op-{setup}", card=used, amount=amount)
        assert (again.status, again.decline) == (BankStatus.DECLINED, decline)
    assert sim_card.balance == 100_00 and sim_card.movements == []
    assert len([m for m in h.sim.messages if m["mti"] == "0200" and not m["note"]]) == len(DECLINES)


@harness_test()
async def test_credit_card_spends_down_to_its_limit(h, port):
    card = await h.verified(port, CREDIT_PAN)
    ok = await port.debit_card(operation_key="c-1", card=card, amount=500_00)
    over = await port.debit_card(operation_key="c-2", card=card, amount=1)
    assert ok.status is BankStatus.APPROVED
    assert over.decline is BankDecline.INSUFFICIENT_FUNDS
    assert h.sim.card(CREDIT_PAN).balance == -500_00


@harness_test(timeout=0.3)
async def test_timeout_gives_unknown_then_reversal_repeats_until_acknowledged(h, port):
    card = await h.verified(port)
    h.sim.faults.update({"no_answer": True, "mtis": ["0200", "0420", "0421"]})
    result = await port.debit_card(operation_key="op-t", card=card, amount=20_00)
    assert result.status is BankStatus.UNKNOWN
    assert h.resolver.calls == []
    again = await port.debit_card(operation_key="op-t", card=card, amount=20_00)
    assert again.status is BankStatus.UNKNOWN                      # in progress, nothing re-sent
    await eventually(lambda: any(m["mti"] == "0421" for m in h.sim.messages))
    assert h.resolver.calls == []
    assert [m["mti"] for m in h.sim.messages if m["direction"] == "in" and m["mti"] == "0420" and not m["note"]] == ["0420"]
    h.sim.faults.clear()
    await eventually(lambda: h.resolver.calls == [("op-t", False)])
    assert h.sim.card(DEBIT_PAN).balance == 100_00                 # the 0200 was never processed
    assert len([m for m in h.sim.messages if m["mti"] == "0200" and not m["note"]]) == 1
    ops = {r["operation_key"]: r for r in await h.rows("bank_operations")}
    assert ops["op-t"]["status"] == "reversed"
    final = await port.debit_card(operation_key="op-t", card=card, amount=20_00)
    assert final.status is BankStatus.DECLINED
    revs = await h.rows("bank_reversals")
    assert revs[0]["state"] == "resolved" and revs[0]["attempts"] >= 2


@harness_test(timeout=0.3)
async def test_late_approval_after_reversal_never_approves(h, port):
    card = await h.verified(port)
    h.sim.faults.update({"answer_after": 1.0, "mtis": ["0200"]})
    result = await port.debit_card(operation_key="op-late", card=card, amount=40_00)
    assert result.status is BankStatus.UNKNOWN
    await eventually(lambda: h.resolver.calls == [("op-late", False)])
    # the issuer had debited the card; the reversal put the money back
    await eventually(lambda: any(m["mti"] == "0210" and m["direction"] == "out" for m in h.sim.messages))
    await eventually(lambda: h.sim.card(DEBIT_PAN).balance == 100_00)
    kinds = [(m.kind, m.amount, m.reversed) for m in h.sim.card(DEBIT_PAN).movements]
    assert kinds == [("debit", -40_00, True), ("reversal", 40_00, False)]
    await eventually_async(lambda: _late_journalled(h, "op-late"))
    h.sim.faults.clear()
    final = await port.debit_card(operation_key="op-late", card=card, amount=40_00)
    assert final.status is not BankStatus.APPROVED
    assert h.resolver.calls == [("op-late", False)]


async def _late_journalled(h, key) -> bool:
    return any(r["event"] == "late_response" and r["operation_key"] == key and r["response_code"] == "00"
               for r in await h.rows("bank_journal"))


@harness_test(timeout=5.0)
async def test_connection_drop_mid_request_reverses(h, port):
    card = await h.verified(port)
    h.sim.faults.update({"drop_connection": True, "mtis": ["0200"]})
    result = await port.debit_card(operation_key="op-drop", card=card, amount=10_00)
    assert result.status is BankStatus.UNKNOWN
    h.sim.faults.clear()
    await eventually(lambda: h.resolver.calls == [("op-drop", False)])
    assert h.sim.card(DEBIT_PAN).balance == 100_00
    # the link came back by itself: new money moves
    await port.wait_ready()
    ok = await port.debit_card(operation_key="op-after", card=card, amount=10_00)
    assert ok.status is BankStatus.APPROVED and h.sim.card(DEBIT_PAN).balance == 90_00


@aio_test
async def test_reversal_queue_survives_a_restart(bank_db):
    h = await Harness(bank_db, timeout=0.3).start_sim()
    try:
        service = await h.start_bridge()
        card = await h.verified(service.port)
        h.sim.faults.update({"answer_after": 0.6, "mtis": ["0200", "0420", "0421"]})
        # the 0200 is processed (money taken) but answered late; reversals too
        result = await service.port.debit_card(operation_key="op-restart", card=card, amount=25_00)
        assert result.status is BankStatus.UNKNOWN
        await h.stop_bridge(service)
        revs = await h.rows("bank_reversals")
        assert [r["state"] for r in revs] == ["pending"]
        h.sim.faults.clear()
        h.resolver = RecordingResolver()
        service2 = await h.start_bridge()
        await eventually(lambda: h.resolver.calls == [("op-restart", False)])
        assert h.sim.card(DEBIT_PAN).balance == 100_00
        # the resolver is told before the reversal is marked resolved (a crash
        # between tells it again): that last write may still be on its way
        await eventually_async(lambda: _reversal_state(h, "op-restart", "resolved"))
        # STANs and RRNs are never reused after the restart
        ok = await service2.port.debit_card(operation_key="op-next", card=card, amount=1_00)
        ops = await h.rows("bank_operations")
        assert len({o["stan"] for o in ops}) == len(ops) and len({o["rrn"] for o in ops}) == len(ops)
        assert ok.status is BankStatus.APPROVED
        await h.assert_books_agree()
    finally:
        await h.close()


@harness_test()
async def test_money_not_sent_while_the_bank_is_unreachable(h, port):
    card = await h.verified(port)
    await wait_deferred(h.listening.stopListening())
    h.listening = None
    h.sim.drop_connections()
    await eventually(lambda: not port.connections["icbc"].ready)
    result = await port.debit_card(operation_key="op-down", card=card, amount=10_00)
    assert (result.status, result.decline) == (BankStatus.DECLINED, BankDecline.ISSUER_UNAVAILABLE)
    assert h.sim.card(DEBIT_PAN).balance == 100_00


@aio_test
async def test_sign_on_first_then_echo_keeps_the_link(bank_db):
    h = await Harness(bank_db).start_sim()
    try:
        config = h.config()
        config["banks"][0]["echo_interval"] = 0.1
        service = BankBridgeService(config, database_url=bank_db, reactor=reactor)
        await wait_deferred(service.startService())
        h.services.append(service)
        await service.port.wait_ready()
        await eventually(lambda: len([m for m in h.sim.messages if m.get("fields", {}).get("70") == "301"
                                      and m["direction"] == "in"]) >= 2)
        inbound = [m for m in h.sim.messages if m["direction"] == "in"]
        assert (inbound[0]["mti"], inbound[0]["fields"]["70"]) == ("0800", "001")
        assert service.port.link_status() == {"icbc": True}
        journal = await service.port.store.journal_entries()
        # link events are journaled as they happen, each in its own write: their ids
        # need not follow the wire's order (the wire's order is checked above)
        recorded = {(r["event"], r["mti"], r["response_code"]) for r in journal}
        assert {("sign_on", "0800", "00"), ("echo", "0800", "00")} <= recorded
        card = await h.verified(service.port)
        assert (await service.port.debit_card(operation_key="e-1", card=card, amount=1)).status is BankStatus.APPROVED
        await h.assert_books_agree()
    finally:
        await h.close()


class MisbehavingHost(Protocol):
    """An issuer at the seam that signs on, then sends malformed messages
    before the real answer to each 0200, and a malformed request of its own."""

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.decoder = FrameDecoder()
        self.factory.received.append(self)
        self.answers = []

    def dataReceived(self, data):
        for raw in self.decoder.feed(data):
            message = spec.decode_message(raw)
            self.answers.append(message)
            base = {"11": message["11"], "41": message["41"]}
            if message["t"] == "0800":
                self.write({"t": "0810", **base, "70": message["70"], "39": "00"})
            elif message["t"] == "0200":
                good = spec.encode_message({"t": "0210", **base, "39": "00", "37": message["37"]})
                self.transport.write(encode_frame(good[:4] + b"ZZZZ" + good[8:]))       # bad bitmap
                self.transport.write(encode_frame(good[:-3]))                          # truncated
                self.transport.write(encode_frame(b"\x01\x02garbage"))                  # garbage
                self.transport.write(encode_frame(spec.encode_message(
                    {"t": "0800", "11": "777777", "41": message["41"], "70": "3X1"})))  # non-numeric
                self.write({"t": "0210", **base, "39": "00", "37": message["37"]})

    def write(self, message):
        self.transport.write(encode_frame(spec.encode_message(message)))


@aio_test
async def test_malformed_messages_from_the_host_do_not_lose_the_request(bank_db):
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.protocol import Factory
    factory = Factory.forProtocol(MisbehavingHost)
    factory.received = []
    listening = await wait_deferred(serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory))
    config = {"card_token_key": "k", "banks": [{
        "code": "odd", "endpoint": f"tcp:host=127.0.0.1:port={listening.getHost().port}", "bins": ["999999"],
        "terminal_id": "TP000002", "acquirer_id": "1", "timeout": 5}]}
    service = BankBridgeService(config, database_url=bank_db, reactor=reactor)
    try:
        await wait_deferred(service.startService())
        await service.port.wait_ready()
        card = CardRef(token="a" * 64, last4="0001", bin="999999", card_type="debit", bank_code="odd")
        result = await service.port.debit_card(operation_key="m-1", card=card, amount=1_00)
        assert result.status is BankStatus.APPROVED
        host = factory.received[0]
        await eventually(lambda: any(m["t"] == "0810" and m["11"] == "777777" for m in host.answers))
        refused = [m for m in host.answers if m["11"] == "777777"]
        assert refused[0]["39"] == "30"
        assert service.port.connections["odd"].ready
        store = service.port.store
        await eventually_async(lambda: _count_refused(store, 3))
    finally:
        await wait_deferred(service.stopService())
        await wait_deferred(listening.stopListening())


async def _count_refused(store, n) -> bool:
    return len(await store.journal_entries(event="refused")) >= n


@harness_test(timeout=0.3)
async def test_settlement_file_reconciles_with_the_bridge_records(h, port):
    from datetime import datetime, timezone

    from bank_bridge.reconciliation import SettlementFileError, parse_settlement_file, reconcile
    from telecom_pay.business_time import business_day
    card = await h.verified(port)
    assert (await port.debit_card(operation_key="r-1", card=card, amount=10_00)).status is BankStatus.APPROVED
    assert (await port.credit_card(operation_key="r-2", card=card, amount=3_00)).status is BankStatus.APPROVED
    assert (await port.debit_card(operation_key="r-3", card=card, amount=999_00)).status is BankStatus.DECLINED
    h.sim.faults.update({"answer_after": 0.6, "mtis": ["0200"]})
    assert (await port.debit_card(operation_key="r-4", card=card, amount=7_00)).status is BankStatus.UNKNOWN
    await eventually(lambda: h.resolver.calls == [("r-4", False)])
    h.sim.faults.clear()
    today = business_day(datetime.now(timezone.utc), None)     # the simulator's (the process's) local day
    rows = parse_settlement_file(h.sim.settlement_csv(today.isoformat()))
    report = await reconcile(port.store, rows, bank_code="icbc", business_date=today)
    assert report.ok and len(report.matched) == 2
    # a row the bank lost and a row we never approved both show up
    tampered = parse_settlement_file(h.sim.settlement_csv(today.isoformat()))[1:]
    stranger = tampered[0].__class__(**{**tampered[0].__dict__, "rrn": "000000000000"})
    report = await reconcile(port.store, tampered + [stranger], bank_code="icbc", business_date=today)
    assert [op["operation_key"] for op in report.missing_at_bank] == ["r-1"]
    assert report.unknown_to_us == [stranger] and not report.ok
    with pytest.raises(SettlementFileError):
        parse_settlement_file("date,stan\n1,2\n")


class FlakyResolver(RecordingResolver):
    """Fails the first call, as a ledger briefly unavailable would."""

    def __init__(self):
        super().__init__()
        self.failures = 0

    async def resolve_in_doubt(self, operation_key: str, approved: bool) -> None:
        if self.failures == 0:
            self.failures += 1
            raise RuntimeError("ledger briefly unavailable")
        await super().resolve_in_doubt(operation_key, approved)


@harness_test(timeout=0.3)
async def test_resolver_failure_is_retried_until_it_succeeds(h, port):
    h.resolver = FlakyResolver()
    port.set_resolver(h.resolver)
    card = await h.verified(port)
    h.sim.faults.update({"no_answer": True, "mtis": ["0200"]})
    assert (await port.debit_card(operation_key="f-1", card=card, amount=1_00)).status is BankStatus.UNKNOWN
    await eventually(lambda: h.resolver.calls == [("f-1", False)])
    assert h.resolver.failures == 1
    await eventually_async(lambda: _reversal_state(h, "f-1", "resolved"))
    h.sim.faults.clear()


async def _reversal_state(h, key, state) -> bool:
    return [r["state"] for r in await h.rows("bank_reversals") if r["operation_key"] == key] == [state]


@aio_test
async def test_operation_in_flight_at_a_crash_is_reversed_on_start(bank_db):
    """A row left 'sent' (the process died between sending and recording the
    answer) may have moved money: the next start reverses it."""
    from bank_bridge.tables import bank_operations
    from bank_bridge.store import utcnow
    h = await Harness(bank_db).start_sim()
    try:
        service = await h.start_bridge()
        card = await h.verified(service.port)
        assert (await service.port.debit_card(operation_key="c-ok", card=card, amount=2_00)).status \
            is BankStatus.APPROVED
        await h.stop_bridge(service)
        # Forge the crash: the issuer approved a debit whose answer we never recorded.
        client_sim_card = h.sim.card(DEBIT_PAN)
        engine = create_async_engine(async_url(bank_db))
        async with engine.begin() as conn:
            op = dict((await conn.execute(sa.select(bank_operations))).first()._mapping)
            op.update(operation_key="c-crash", stan="900001", rrn="900000000001", status="sent",
                      response_code=None, created_at=utcnow(), updated_at=utcnow())
            await conn.execute(sa.insert(bank_operations).values(**op))
        await engine.dispose()
        h.sim.issuer.handle({"t": "0200", "11": "900001", "41": "TP000001", "48": card.token, "3": "000000",
                             "4": "000000000500", "37": "900000000001", "7": op["transmitted_at"]},
                            reactor.seconds())
        assert client_sim_card.balance == 100_00 - 2_00 - 5_00
        h.opening[DEBIT_PAN] = 100_00
        await h.start_bridge()
        await eventually(lambda: h.resolver.calls == [("c-crash", False)])
        assert client_sim_card.balance == 100_00 - 2_00
        await h.assert_books_agree_except({"c-crash"})
    finally:
        await h.close()


@aio_test
async def test_cards_are_routed_to_their_bank_by_bin(bank_db):
    h = await Harness(bank_db).start_sim()
    other = BankSimulator({"bank_code": "abc"}, reactor)
    other.add_card("6228480000004321", "3012", "debit", balance=50_00)
    other_port = await wait_deferred(other.listen("tcp:0:interface=127.0.0.1"))
    try:
        config = h.config()
        config["banks"].append({"code": "abc", "endpoint": f"tcp:host=127.0.0.1:port={other_port.getHost().port}",
                                "bins": ["622848"], "terminal_id": "TP000077", "acquirer_id": "1030000",
                                "timeout": 2})
        service = BankBridgeService(config, database_url=bank_db, reactor=reactor)
        service.port.set_resolver(h.resolver)
        h.services.append(service)
        await wait_deferred(service.startService())
        await service.port.wait_ready()
        card_a = await h.verified(service.port)
        card_b = await h.verified(service.port, "6228480000004321")
        assert (card_a.bank_code, card_b.bank_code) == ("icbc", "abc")
        assert (await service.port.debit_card(operation_key="b-1", card=card_b, amount=5_00)).status \
            is BankStatus.APPROVED
        assert other.card("6228480000004321").balance == 45_00 and h.sim.card(DEBIT_PAN).balance == 100_00
        assert {m["fields"].get("41") for m in other.messages if m["direction"] == "in"} == {"TP000077"}
    finally:
        other.drop_connections()
        await wait_deferred(other_port.stopListening())
        await h.close()


@pytest.mark.parametrize("change, message", [
    ({"card_token_key": ""}, "card_token_key"),
    ({"banks": []}, "at least one bank"),
    ({"banks": [{"code": "x", "endpoint": "tcp:host=h:port=1", "bins": ["6222"], "terminal_id": "SHORT",
                 "acquirer_id": "1"}]}, "terminal_id"),
    ({"banks": [{"code": "x", "endpoint": "tcp:host=h:port=1", "bins": ["6222"], "terminal_id": "TP000001",
                 "acquirer_id": "ABC"}]}, "acquirer_id"),
    ({"banks": [{"code": "x", "endpoint": "tcp:host=h:port=1", "bins": [], "terminal_id": "TP000001",
                 "acquirer_id": "1"}]}, "bins"),
])
def test_bad_config_is_refused_with_a_clear_error(change, message):
    from bank_bridge.service import port_from_config
    config = {"card_token_key": "k", "banks": [{"code": "x", "endpoint": "tcp:host=h:port=1", "bins": ["6222"],
                                                "terminal_id": "TP000001", "acquirer_id": "1"}]}
    config.update(change)
    engine = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(ValueError, match=message):
        port_from_config(config, engine, reactor)


@harness_test(timeout=0.3)
async def test_many_concurrent_operations_some_in_doubt(h, port):
    card = await h.verified(port)
    approved = await asyncio.gather(*(port.debit_card(operation_key=f"ok-{i}", card=card, amount=1_00)
                                      for i in range(10)))
    assert {r.status for r in approved} == {BankStatus.APPROVED}
    assert len({r.stan for r in approved}) == 10
    h.sim.faults.update({"answer_after": 0.5, "mtis": ["0200"]})
    in_doubt = await asyncio.gather(*(port.debit_card(operation_key=f"late-{i}", card=card, amount=2_00)
                                      for i in range(6)))
    assert {r.status for r in in_doubt} == {BankStatus.UNKNOWN}
    await eventually(lambda: sorted(h.resolver.calls) == [(f"late-{i}", False) for i in range(6)])
    h.sim.faults.clear()
    await eventually(lambda: h.sim.card(DEBIT_PAN).balance == 100_00 - 10 * 1_00)


async def _answers(h, key, code) -> int:
    return sum(1 for r in await h.rows("bank_journal")
               if r["operation_key"] == key and r["mti"] == "0430" and r["response_code"] == code)


@pytest.mark.parametrize("code", ["96", "30"])
@aio_test
async def test_a_0430_that_is_not_final_keeps_the_0421_repeats(bank_db, code):
    """A reversal answered "96" or "30" has not happened: the card stays
    debited and the operation in doubt until a final answer arrives."""
    h = await Harness(bank_db, timeout=0.3).start_sim()
    try:
        port = (await h.start_bridge()).port
        card = await h.verified(port)
        h.sim.faults.update({"answer_after": 1.0, "mtis": ["0200"], "reversal_answer": code})
        result = await port.debit_card(operation_key="nf-1", card=card, amount=20_00)
        assert result.status is BankStatus.UNKNOWN
        await eventually_async(lambda: _answers(h, "nf-1", code), timeout=10)
        await eventually_async(lambda: _count(_answers(h, "nf-1", code), 3), timeout=10)
        assert h.resolver.calls == []                                # never "reversed" on such an answer
        assert h.sim.card(DEBIT_PAN).balance == 80_00                # the bank still holds the debit
        ops = {r["operation_key"]: r for r in await h.rows("bank_operations")}
        assert ops["nf-1"]["status"] == "reversing"
        assert (await port.debit_card(operation_key="nf-1", card=card, amount=20_00)).status is BankStatus.UNKNOWN
        h.sim.faults.clear()                                         # the bank recovers: "00"
        await eventually(lambda: h.resolver.calls == [("nf-1", False)])
        assert h.sim.card(DEBIT_PAN).balance == 100_00
        await h.assert_books_agree()
    finally:
        await h.close()


async def _count(awaitable, n) -> bool:
    return await awaitable >= n


@aio_test
async def test_unsettled_reversal_goes_to_manual_review_and_an_operator_resolves_it(bank_db):
    from bank_bridge import review
    from bank_bridge.store import BankStore, ReviewError
    h = await Harness(bank_db, timeout=0.3, reversal_max_attempts=3).start_sim()
    try:
        service = await h.start_bridge()
        port = service.port
        card = await h.verified(port)
        h.sim.faults.update({"answer_after": 1.0, "mtis": ["0200"], "reversal_answer": "96"})
        assert (await port.debit_card(operation_key="rv-1", card=card, amount=30_00)).status is BankStatus.UNKNOWN
        await eventually_async(lambda: _reversal_state(h, "rv-1", "review"))
        sent = [m for m in h.sim.messages if m["direction"] == "in" and m["mti"] in ("0420", "0421")]
        assert len(sent) == 3                                        # the configured attempts, then no more
        assert h.resolver.calls == [] and h.sim.card(DEBIT_PAN).balance == 70_00
        store = BankStore(service.engine)
        (listed,) = await review.in_doubt(store)
        assert (listed["operation_key"], listed["state"], listed["response_code"], listed["amount"]) == \
            ("rv-1", "review", "96", 30_00)
        with pytest.raises(ReviewError):
            await review.resolve(store, h.resolver, "rv-1", outcome="approved", actor="", reason="x")
        with pytest.raises(ReviewError):
            await review.resolve(store, h.resolver, "no-such", outcome="approved", actor="ops", reason="x")
        # the bank says the debit stands: the operator records it, the ledger posts
        row = await review.resolve(store, h.resolver, "rv-1", outcome="approved", actor="ops-li",
                                   reason="bank call ref 4411: debit settled")
        assert h.resolver.calls == [("rv-1", True)]
        (audit,) = await store.reviews_for("rv-1")
        assert (audit["actor"], audit["outcome"], audit["reason"]) == ("ops-li", "approved",
                                                                        "bank call ref 4411: debit settled")
        assert audit["before"]["reversal"] == "review" and audit["after"]["operation"] == "approved"
        assert audit["at"] is not None and row["outcome"] == "approved"
        assert await _reversal_state(h, "rv-1", "resolved")
        assert (await port.debit_card(operation_key="rv-1", card=card, amount=30_00)).status is BankStatus.APPROVED
        with pytest.raises(ReviewError):                             # decided once
            await review.resolve(store, h.resolver, "rv-1", outcome="declined", actor="ops", reason="x")
        assert await review.in_doubt(store) == []
        await h.assert_books_agree()
    finally:
        await h.close()
