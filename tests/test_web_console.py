"""The agent console over real sockets: an agent opens an account for a
caller and the agreement reaches the handset over SMPP; a PIN reset's SMS
reaches it too (never the agent's page); a cash-in with a receipt number
books once; look-ups and operations are audited with the person behind
the agent code; the IVR's hand-offs are shown and taken once; roles and
CSRF hold; bad input is a clear 4xx."""
from __future__ import annotations

import re

import sqlalchemy as sa

from telecom_pay.aio import wait_deferred
from telecom_pay.calls import CallLog
from telecom_pay.daemon import Daemon
from telecom_pay.ledger.tables import audit_log, operations
from telecom_pay.messaging import outbox
from telecom_pay.security import PasswordHasher
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.e2ekit import PIN_RE, reply, say, settings_for, start_daemon, start_smsc, stop_daemon
from channels.web.console import OPERATIONS, REF_BODY, TAKE_BODY, msisdn_body
from tests.webkit import FAST_HASHER, Browser, add_user, stop_web, web_settings

PASSWORD = "s3cret-enough-pw"
CALLER = "13900139000"
CALLER_E164 = "8613900139000"
PAN = "6222020200112233"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def web_of(daemon) -> str:
    web = daemon.components["web"]
    web.app.users.hasher = PasswordHasher(**FAST_HASHER)
    return f"http://127.0.0.1:{await web.wait_listening()}"


async def start_console(database_url: str | dict, *, bank=None) -> tuple[Daemon, str]:
    """The daemon with its web section only (the bank at its seam, in
    process); `database_url` or a whole `stack`."""
    from twisted.internet import reactor
    stack = database_url if isinstance(database_url, dict) else {"database_url": database_url}
    daemon = Daemon(web_settings(stack), reactor, sections=("web",), bank=bank)
    daemon.startService()
    await wait_deferred(daemon.ready)
    return daemon, await web_of(daemon)


async def agent_browser(daemon, base: str, username: str = "agent1", role: str = "agent",
                        agent_code: str | None = "AG001") -> tuple[Browser, str]:
    await add_user(daemon, username, role, password=PASSWORD, agent_code=agent_code)
    b = Browser(base)
    r = await b.api_login(username, PASSWORD)
    assert r.status == 200, r.text
    return b, r.json()["csrf_token"]


async def active_subscriber(daemon, msisdn: str = CALLER) -> None:
    svc = daemon.core.service
    assert (await svc.open_account(msisdn, channel="sms")).ok
    assert (await svc.confirm_open(msisdn, channel="sms")).ok


async def rows(daemon, query):
    async def read(conn):
        return (await conn.execute(query)).all()
    return await daemon.core.ledger.read(read)


@aio_test
async def test_agent_opens_an_account_and_resets_the_pin_sms_reach_the_handset(tmp_path):
    sim, port = await start_smsc()
    daemon = await start_daemon(settings_for(f"sqlite+aiosqlite:///{tmp_path / 'tp.sqlite3'}", port))
    try:
        base = await web_of(daemon)
        b, token = await agent_browser(daemon, base)
        phone = sim.handset(CALLER)
        r = await b.post("/api/v1/agent/open", headers={"X-CSRF-Token": token}, json_body={
            "msisdn": CALLER, "holder_name": "Li Lei", "id_type": "ID", "id_number": "110101199001011234",
            "language": "en"})
        assert r.status == 200 and r.json()["what"] == "agreement", r.text
        assert not PIN_RE.search(r.text)
        assert "A" in await reply(phone, timeout=20)                        # the agreement, over SMPP
        initial = PIN_RE.search(await say(phone, "A", expect="MM")).group(1)

        # the PIN reset from the page's form: the new PIN goes to the phone, not the page
        page = await b.post("/agent/lookup", form={"csrf_token": csrf_of((await b.get("/agent")).text),
                                                   "msisdn": CALLER})
        assert page.status == 200 and "Li Lei" in page.text and "active" in page.text
        done = await b.post("/agent/operation", form={"csrf_token": csrf_of(page.text), "op": "pin-reset",
                                                      "msisdn": CALLER})
        assert done.status == 200 and "Reset the PIN" in done.text, done.text
        reset = PIN_RE.search(await reply(phone, expect="MM", timeout=20)).group(1)
        assert reset != initial and reset not in done.text
        assert "changed" in await say(phone, f"MM {reset} 258147", expect="changed")

        # who did it, as whom, from where: the console's own audit rows
        acted = await rows(daemon, sa.select(audit_log).where(audit_log.c.action.in_(
            ("web_agent_open", "web_agent_pin_reset"))).order_by(audit_log.c.id))
        assert [a.action for a in acted] == ["web_agent_open", "web_agent_pin_reset"]
        for a in acted:
            assert a.actor == "agent1" and a.details["role"] == "agent" and a.details["address"] == "127.0.0.1"
            assert a.details["agent_code"] == "AG001" and "8613900139000" not in str(a.details)
        assert acted[0].details["before"] is None and acted[0].details["after"]["status"] == "pending"
    finally:
        await stop_daemon(daemon)
        await wait_deferred(sim.stop())


@aio_test
async def test_cash_in_with_a_receipt_books_once_and_bad_amounts_are_4xx(stack):
    daemon, base = await start_console(stack)
    try:
        await active_subscriber(daemon)
        b, token = await agent_browser(daemon, base)
        h = {"X-CSRF-Token": token}
        body = {"msisdn": CALLER, "amount": "20.50", "receipt": "R-0001"}
        first = await b.post("/api/v1/agent/cash-in", headers=h, json_body=body)
        again = await b.post("/api/v1/agent/cash-in", headers=h, json_body=body)
        assert first.status == again.status == 200, (first.text, again.text)
        assert first.json()["ref"] == again.json()["ref"] and first.json()["amount"] == 2050
        booked = await rows(daemon, sa.select(operations).where(operations.c.kind == "cash_in"))
        assert len(booked) == 1 and booked[0].amount == 2050
        other = await b.post("/api/v1/agent/cash-in", headers=h, json_body={**body, "amount": "30"})
        assert other.status == 409 and other.json()["outcome"] == "idempotency_conflict"
        # the form does the same: the receipt already used books nothing more
        page = await b.get("/agent")
        form = {"csrf_token": csrf_of(page.text), "op": "cash-in", "msisdn": CALLER, "amount": "20.50",
                "receipt": "R-0001"}
        assert (await b.post("/agent/operation", form=form)).status == 200
        assert len(await rows(daemon, sa.select(operations).where(operations.c.kind == "cash_in"))) == 1

        for amount in ("-5", "1.234", "0", "abc", "1e3"):
            r = await b.post("/api/v1/agent/cash-in", headers=h, json_body={**body, "amount": amount,
                                                                              "receipt": f"R-{amount}"})
            assert r.status == 400 and r.json()["field"] == "amount", (amount, r.text)
        for bad, field in (({**body, "amount": 20}, "amount"), ({"msisdn": CALLER, "amount": "1"}, "receipt"),
                           ({**body, "msisdn": "12"}, "msisdn"), ({**body, "extra": 1}, "extra"),
                           ({**body, "receipt": "R\x00-1"}, "receipt")):
            r = await b.post("/api/v1/agent/cash-in", headers=h, json_body=bad)
            assert r.status == 400 and r.json()["field"] == field, (bad, r.text)
        r = await b.post("/api/v1/agent/cash-in", headers=h, json_body={**body, "msisdn": "13700137000"})
        assert r.status == 404 and r.json()["outcome"] == "no_account"
        assert len(await rows(daemon, sa.select(operations).where(operations.c.kind == "cash_in"))) == 1

        exists = await b.post("/api/v1/agent/open", headers=h, json_body={
            "msisdn": CALLER, "holder_name": "Han Meimei", "id_type": "passport", "id_number": "E1234"})
        assert exists.status == 409 and exists.json()["account_status"] == "active", exists.text

        view = (await b.post("/api/v1/agent/lookup", headers=h, json_body={"msisdn": CALLER})).json()
        assert view["balance"] == 2050 and [o["kind"] for o in view["operations"]] == ["cash_in"]
    finally:
        await stop_web(daemon)


@aio_test
async def test_a_look_up_is_audited_and_csrf_is_refused(sqlite_url):
    daemon, base = await start_console(sqlite_url)
    try:
        await active_subscriber(daemon)
        b, token = await agent_browser(daemon, base)
        # without the token (or with a wrong one) nothing is looked up, nothing changes
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            assert (await b.post("/api/v1/agent/lookup", json_body={"msisdn": CALLER}, headers=headers)).status == 403
            assert (await b.post("/api/v1/agent/freeze", json_body={"msisdn": CALLER}, headers=headers)).status == 403
        for form in ({"msisdn": CALLER}, {"msisdn": CALLER, "csrf_token": "forged"}):
            assert (await b.post("/agent/lookup", form=form)).status == 403
            assert (await b.post("/agent/operation", form={**form, "op": "freeze"})).status == 403
        assert (await daemon.core.service.account_info(CALLER)).status == "active"
        assert not await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "agent_lookup"))

        r = await b.post("/api/v1/agent/lookup", json_body={"msisdn": CALLER}, headers={"X-CSRF-Token": token})
        assert r.status == 200 and r.json()["status"] == "active" and r.json()["card"] is None
        assert "confirm" in [a["action"] for a in r.json()["audit"]]          # the account's trail
        missing = await b.post("/api/v1/agent/lookup", json_body={"msisdn": "13700137000"},
                               headers={"X-CSRF-Token": token})
        assert missing.status == 404
        looked = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "agent_lookup")
                            .order_by(audit_log.c.id))
        assert [(a.actor, a.details["found"]) for a in looked] == [("agent:AG001", True), ("agent:AG001", False)]
        assert looked[0].details["username"] == "agent1" and looked[0].details["address"] == "127.0.0.1"
        assert looked[0].details["role"] == "agent" and looked[0].details["msisdn"] == "86139****9000"

        # an operation from the page with its token: done, audited
        page = await b.post("/agent/lookup", form={"msisdn": CALLER, "csrf_token": token})
        frozen = await b.post("/agent/operation", form={"msisdn": CALLER, "csrf_token": csrf_of(page.text),
                                                        "op": "freeze"})
        assert frozen.status == 200 and 'id="status">frozen' in frozen.text
        again = await b.post("/agent/operation", form={"msisdn": CALLER, "csrf_token": token, "op": "freeze"})
        assert again.status == 409 and "frozen" in again.text
    finally:
        await stop_web(daemon)


@aio_test
async def test_roles_agents_stay_out_of_operator_pages_and_operators_cannot_act_as_agents(sqlite_url):
    daemon, base = await start_console(sqlite_url)
    try:
        await active_subscriber(daemon)
        agent, _ = await agent_browser(daemon, base)
        assert (await agent.get("/admin/users")).status == 403
        assert (await agent.get("/api/v1/users")).status == 403
        assert (await agent.get("/agent")).status == 200

        ops, ops_token = await agent_browser(daemon, base, "ops1", "ops_admin", agent_code=None)
        assert (await ops.get("/agent")).status == 403
        for path in ("/api/v1/agent/lookup", "/api/v1/agent/freeze", "/api/v1/agent/pin-reset"):
            r = await ops.post(path, json_body={"msisdn": CALLER}, headers={"X-CSRF-Token": ops_token})
            assert r.status == 403 and "role" in r.json()["error"], (path, r.text)
        assert (await ops.get("/api/v1/agent/handoffs")).status == 403

        # a supervisor without an agent code reaches the console but cannot act
        sup, sup_token = await agent_browser(daemon, base, "super1", "agent_supervisor", agent_code=None)
        r = await sup.post("/api/v1/agent/freeze", json_body={"msisdn": CALLER}, headers={"X-CSRF-Token": sup_token})
        assert r.status == 403 and "agent code" in r.json()["error"]
        assert (await daemon.core.service.account_info(CALLER)).status == "active"
    finally:
        await stop_web(daemon)


@aio_test
async def test_an_ivr_hand_off_is_shown_and_taken_once(stack):
    daemon, base = await start_console(stack)
    try:
        await active_subscriber(daemon)
        calls = CallLog(daemon.core.ledger)
        hid = await calls.record_handoff(call_id="1733.42", msisdn=CALLER_E164, caller_id=CALLER,
                                         menu_path="root>account>agent", pin_verified=True,
                                         target="telecom-pay-agents,s,1")
        await calls.record_handoff(call_id="1733.43", msisdn=None, caller_id=None, menu_path="root>agent",
                                   pin_verified=False, target="telecom-pay-agents,s,1")
        b, token = await agent_browser(daemon, base)
        page = await b.get("/agent")
        assert page.status == 200 and CALLER in page.text and "root&gt;account&gt;agent" in page.text
        assert "PIN checked" in page.text and "PIN not checked" in page.text and "withheld" in page.text
        listed = (await b.get("/api/v1/agent/handoffs")).json()["handoffs"]
        assert [(h["id"], h["pin_verified"]) for h in listed][-1] == (hid, True)

        taken = await b.post("/agent/handoffs/take", form={"csrf_token": csrf_of(page.text), "handoff_id": str(hid)})
        assert taken.status == 200 and 'id="handoff"' in taken.text and "PIN checked" in taken.text
        assert 'id="status">active' in taken.text                           # that subscriber's page
        withheld = [h["id"] for h in listed if h["msisdn"] is None]
        page = await b.get("/agent")
        r = await b.post("/agent/handoffs/take",
                         form={"csrf_token": csrf_of(page.text), "handoff_id": str(withheld[0])})
        assert r.status == 200 and "withheld" in r.text and "Find a subscriber" in r.text
        other, other_token = await agent_browser(daemon, base, "agent2")
        r = await other.post("/api/v1/agent/handoffs/take", json_body={"handoff_id": hid},
                             headers={"X-CSRF-Token": other_token})
        assert r.status == 409
        assert (await other.post("/api/v1/agent/handoffs/take", json_body={"handoff_id": 999_999},
                                 headers={"X-CSRF-Token": other_token})).status == 404
        assert hid not in [h["id"] for h in (await b.get("/api/v1/agent/handoffs")).json()["handoffs"]]
        assert [h["state"] for h in await calls.handoffs() if h["id"] == hid] == ["taken"]
        audited = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "handoff_taken"))
        assert [(a.actor, a.details["username"], a.details["handoff_id"]) for a in audited] == \
            [("agent:AG001", "agent1", hid), ("agent:AG001", "agent1", withheld[0])]
    finally:
        await stop_web(daemon)


@aio_test
async def test_card_binding_and_close_refunded_to_the_card(sqlite_url):
    bank = InProcessBank()
    bank.add_card(PAN)
    daemon, base = await start_console(sqlite_url, bank=bank)
    try:
        await active_subscriber(daemon)
        b, token = await agent_browser(daemon, base)
        h = {"X-CSRF-Token": token}
        r = await b.post("/api/v1/agent/card", headers=h, json_body={"msisdn": CALLER, "pan": PAN, "expiry": "2912"})
        assert r.status == 200 and r.json()["last4"] == "2233", r.text
        declined = await b.post("/api/v1/agent/card", headers=h,
                                json_body={"msisdn": CALLER, "pan": "6222020200999999", "expiry": "2912"})
        assert declined.status == 422 and declined.json()["outcome"] == "bank_declined"
        assert (await b.post("/api/v1/agent/card", headers=h,
                             json_body={"msisdn": CALLER, "pan": "12ab", "expiry": "2912"})).status == 400
        view = (await b.post("/api/v1/agent/lookup", headers=h, json_body={"msisdn": CALLER})).json()
        assert view["card"]["last4"] == "2233"
        audited = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "web_agent_card"))
        assert PAN not in str([a.details for a in audited]) and audited[0].details["request"]["pan_last4"] == "2233"

        assert (await b.post("/api/v1/agent/cash-in", headers=h,
                             json_body={"msisdn": CALLER, "amount": "12", "receipt": "R-9"})).status == 200
        # the close needs the holder's PIN; the initial PIN must be changed first
        pin = "258147"
        svc = daemon.core.service
        await svc.reset_pin("AG001", CALLER)
        last = (await rows(daemon, sa.select(outbox.c.text).order_by(outbox.c.id.desc()).limit(1)))[0].text
        assert (await svc.change_pin(CALLER, PIN_RE.search(last).group(1), pin, channel="sms")).ok
        wrong = await b.post("/api/v1/agent/close", headers=h, json_body={"msisdn": CALLER, "pin": "000000"})
        assert wrong.status in (400, 403) and (await svc.account_info(CALLER)) is not None
        closed = await b.post("/api/v1/agent/close", headers=h, json_body={"msisdn": CALLER, "pin": pin})
        assert closed.status == 200 and closed.json()["amount"] == 1200, closed.text
        assert bank.movements[-1][1:] == (PAN, 1200) and await svc.account_info(CALLER) is None
        acted = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "web_agent_close"))
        assert pin not in str([a.details for a in acted]) and acted[-1].details["after"] is None
    finally:
        await stop_web(daemon)


NASTY_TEXT = ["", " ", "\x00", "١٣٩٠٠١٣٩٠٠٠", "9" * 40, "' or 1=1", "😀", "-5", "1.999", "99999999999999"]
NASTY_INT = [-1, 0, 7, 2 ** 70]          # 7: in range, but no hand-off has it (404)
GOOD = {"msisdn": CALLER, "holder_name": "Wang Fang", "id_type": "ID", "id_number": "1101", "tier": 2,
        "amount": "1", "receipt": "R-1", "pan": PAN, "expiry": "2912", "new_msisdn": "13700137000",
        "pin": "123456", "language": "en", "handoff_id": 1}


@aio_test
async def test_bad_input_on_every_console_endpoint_is_a_4xx(sqlite_url):
    """Each field of each console route given odd values, the others good:
    never a 5xx (a refused open of an existing account once was one)."""
    bank = InProcessBank()
    bank.add_card(PAN)
    daemon, base = await start_console(sqlite_url, bank=bank)
    try:
        await active_subscriber(daemon)
        b, token = await agent_browser(daemon, base)
        routes = [(f"/api/v1/agent/{op.name}", op.body) for op in OPERATIONS]
        routes += [("/api/v1/agent/lookup", msisdn_body()), ("/api/v1/agent/handoffs/take", TAKE_BODY)]
        sup, sup_token = await agent_browser(daemon, base, "super1", "agent_supervisor")
        for path, body in (("/api/v1/agent/suspense", msisdn_body()), ("/api/v1/agent/suspense/request", REF_BODY),
                           ("/api/v1/agent/suspense/approve", REF_BODY)):
            for value in NASTY_TEXT:
                r = await sup.post(path, headers={"X-CSRF-Token": sup_token},
                                   json_body={name: value for name in body.fields})
                assert r.status < 500 and (r.status < 400 or "error" in r.json()), (path, value, r.text)
        served = []
        for path, body in routes:
            good = {name: GOOD[name] for name in body.fields}
            for name, f in body.fields.items():
                for value in NASTY_INT if f.type == "integer" else NASTY_TEXT:
                    r = await b.post(path, headers={"X-CSRF-Token": token}, json_body={**good, name: value})
                    served.append((path, name, value, r.status))
                    assert r.status < 500, (path, name, value, r.text)
                    assert r.status < 400 or "error" in r.json(), (path, name, value, r.text)
        assert {s for *_, s in served} >= {200, 400, 404, 409}
    finally:
        await stop_web(daemon)


@aio_test
async def test_suspense_after_an_ownership_transfer_is_paid_back_with_a_second_approval(stack):
    from telecom_pay import accounts as acct

    async def float_of(daemon) -> int:
        return (await daemon.core.ledger.read(lambda conn: acct.find_agent(conn, "AG001"))).balance

    daemon, base = await start_console(stack)
    try:
        await active_subscriber(daemon)
        agent, token = await agent_browser(daemon, base)
        h = {"X-CSRF-Token": token}
        assert (await agent.post("/api/v1/agent/cash-in", headers=h,
                                 json_body={"msisdn": CALLER, "amount": "35", "receipt": "R-35"})).status == 200
        moved = await agent.post("/api/v1/agent/ownership", headers=h, json_body={
            "msisdn": CALLER, "holder_name": "Zhao Lei", "id_type": "ID", "id_number": "3201"})
        assert moved.status == 200 and moved.json()["held"] == 3500, moved.text
        assert (await agent.post("/api/v1/agent/suspense", headers=h, json_body={"msisdn": CALLER})).status == 403

        first, first_token = await agent_browser(daemon, base, "super1", "agent_supervisor")
        second, second_token = await agent_browser(daemon, base, "super2", "agent_supervisor")
        nocode, nocode_token = await agent_browser(daemon, base, "super3", "agent_supervisor", agent_code=None)
        holds = (await first.post("/api/v1/agent/suspense", headers={"X-CSRF-Token": first_token},
                                  json_body={"msisdn": CALLER})).json()["holds"]
        assert [(x["amount"], x["state"]) for x in holds] == [(3500, "held")]
        ref = holds[0]["ref"]
        r = await second.post("/api/v1/agent/suspense/approve", headers={"X-CSRF-Token": second_token},
                              json_body={"ref": ref})
        assert r.status == 409                                           # nothing asked yet
        before = await float_of(daemon)
        r = await first.post("/api/v1/agent/suspense/request", headers={"X-CSRF-Token": first_token},
                             json_body={"ref": ref})
        assert r.status == 200 and r.json()["state"] == "requested", r.text
        assert (await first.post("/api/v1/agent/suspense/request", headers={"X-CSRF-Token": first_token},
                                 json_body={"ref": ref})).status == 409
        own = await first.post("/api/v1/agent/suspense/approve", headers={"X-CSRF-Token": first_token},
                               json_body={"ref": ref})
        assert own.status == 403 and await float_of(daemon) == before    # four eyes: not the one who asked
        for step in ("request", "approve"):                               # a supervisor without a counter
            r = await nocode.post(f"/api/v1/agent/suspense/{step}", headers={"X-CSRF-Token": nocode_token},
                                  json_body={"ref": ref})
            assert r.status == 403 and "agent code" in r.json()["error"]
        assert await float_of(daemon) == before

        # the second person approves from the subscriber's page: paid out once, at the asker's counter
        page = await second.post("/agent/lookup", form={"csrf_token": second_token, "msisdn": CALLER})
        assert page.status == 200 and "Approve and pay out" in page.text
        r = await second.post("/agent/suspense", form={"csrf_token": csrf_of(page.text), "msisdn": CALLER,
                                                       "ref": ref, "step": "approve"})
        assert r.status == 200 and "Paid back" in r.text, r.text
        assert await float_of(daemon) == before + 3500
        again = await second.post("/api/v1/agent/suspense/approve", headers={"X-CSRF-Token": second_token},
                                  json_body={"ref": ref})
        assert again.status == 409 and await float_of(daemon) == before + 3500
        paid = await rows(daemon, sa.select(operations).where(operations.c.kind == "suspense_payback"))
        assert len(paid) == 1 and paid[0].amount == 3500
        approved = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "suspense_payback_approved"))
        assert [(a.actor, a.details["requested_by"]) for a in approved] == [("super2", "super1")]
        shown = await first.post("/agent/lookup", form={"csrf_token": first_token, "msisdn": CALLER})
        assert shown.status == 200 and "Zhao Lei" in shown.text and f'data-hold="{ref}"' in shown.text
        assert "paid" in shown.text
    finally:
        await stop_web(daemon)
