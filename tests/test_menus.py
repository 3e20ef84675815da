"""The one menu tree, walked through the engine against a real service and
session store, and rendered by both renderers at every step: the same
definitions drive USSD and the IVR."""
import pytest

from telecom_pay.commands.conversation import Conversation
from telecom_pay.commands.parser import Command
from telecom_pay.menus import tree as menu_tree
from telecom_pay.menus.engine import MenuEngine, result_says
from telecom_pay.menus.ivr import FILE, render_ivr
from telecom_pay.menus.prompts import Prompts
from telecom_pay.menus.screen import Say, Screen
from telecom_pay.menus.ussd import GSM_LIMIT, UCS2_LIMIT, is_gsm, pages, render_ussd
from telecom_pay.outcomes import Outcome, Result
from tests.aio import aio_test
from tests.servicekit import CHOSEN_PIN, MSISDN, OTHER, make_service, open_active, outbox_texts, shutdown

PROMPTS = Prompts.load()


class Told:
    """A notifier, as the SMS channel registers one: what went by SMS."""

    def __init__(self, svc):
        self.results: list[tuple[str, Result]] = []
        svc.add_notifier(self)

    def __call__(self, msisdn, result):
        self.results.append((msisdn, result))

    def last(self, msisdn):
        return [r for m, r in self.results if m == msisdn][-1]


def check_rendered(screen: Screen) -> str:
    """Both renderings of a screen are sound; returns what USSD shows."""
    for page in pages(screen, PROMPTS):
        assert len(page) <= (GSM_LIMIT if is_gsm(page) else UCS2_LIMIT), page
    turn = render_ivr(screen, PROMPTS)
    for play in turn.plays:
        if play.kind == FILE:
            name = play.value.rsplit("/", 1)[1]
            assert PROMPTS.has(name) or name.startswith("merchant_"), name
    if not screen.end and (screen.options or screen.collect):
        assert turn.collect is not None, screen
    return render_ussd(screen, PROMPTS)


async def engine_for(stack, overrides=None):
    svc = await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                             prefix=stack.get("prefix", "tp:"), overrides=overrides)
    conv = Conversation(svc)
    return MenuEngine(conv), conv, svc


def test_prompts_name_everything_the_menus_say():
    missing = sorted(n for n in menu_tree.prompt_names() if not PROMPTS.has(n))
    assert missing == []
    for o in Outcome:
        if o not in (Outcome.OK, Outcome.IN_PROGRESS):
            assert all(PROMPTS.has(s.name) for s in result_says(Result(o))), o
    for action in ("balance", "pay", "send", "topup", "airtime", "change_pin", "freeze", "lang", "confirm_open"):
        assert PROMPTS.has(f"done_{action}")
        assert all(s.kind != "prompt" or PROMPTS.has(s.name)
                   for s in result_says(Result(Outcome.OK, amount=100, balance=5, params={"action": action})))


def test_the_tree_refuses_a_broken_definition():
    broken = dict(menu_tree.TREE)
    broken["main"] = menu_tree.Menu("main", "main_title", (menu_tree.Choice("1", "opt_balance", "nowhere"),))
    with pytest.raises(ValueError, match="unknown node nowhere"):
        menu_tree.check_tree(broken)


def _keys_for(channel, ussd, ivr):
    return ussd if channel == "ussd" else ivr


@pytest.mark.parametrize("channel", ["ussd", "ivr"])
@aio_test
async def test_walk_the_whole_tree(stack, channel):
    engine, conv, svc = await engine_for(stack)
    told = Told(svc)
    sid = f"{channel}:walk"
    try:
        # a number without an account: the "new" home; open
        s = await engine.start(sid, MSISDN, channel=channel, lang="en")
        assert s.node == menu_tree.NEW
        assert "1 Open an account" in check_rendered(s)
        s = await engine.answer(sid, "1")
        if channel == "ussd":
            assert s.node == "confirm_open"
            assert "Accept" in check_rendered(s)
            s = await engine.answer(sid, "1")
            assert "PIN and password come by SMS" in check_rendered(s)
            assert "PIN" not in (s.text or "").replace("PIN and password", "")
            initial = told.last(MSISDN).params["pin"]
        else:
            # a caller id proves nothing: the agreement goes by SMS, A comes from the phone
            assert told.last(MSISDN).outcome is Outcome.CONFIRM_REQUIRED
            assert any(p.value.endswith("/open_sms_sent") for p in render_ivr(s, PROMPTS).plays)
            r = await svc.confirm_open(MSISDN, channel="sms")
            initial = r.params["pin"]
        assert len(initial) == 6
        # change the PIN through the menu: 7 My account, 1 Change PIN
        s = await engine.start(sid, MSISDN, channel=channel, lang="en")
        assert s.node == menu_tree.HOME
        check_rendered(s)
        assert (await engine.answer(sid, "7")).node == "account"
        s = await engine.answer(sid, "1")
        assert s.collect.kind == "pin_change" and s.collect.secret
        s = await engine.answer(sid, "12345")                     # not 12 digits: asked again
        assert s.says[0] == Say.prompt("invalid_pin_change")
        s = await engine.answer(sid, initial + CHOSEN_PIN)
        assert s.result.outcome is Outcome.OK, s.result
        assert "PIN" in check_rendered(s)
        # cash at a counter, then balance
        await svc.fund_agent("AG001", 20_000, key="f", operator="test")
        await svc.cash_in("AG001", MSISDN, 20_000, key="c")
        s = await engine.start(sid, MSISDN, channel=channel, lang="en")
        s = await engine.answer(sid, "1")
        assert s.result.outcome is Outcome.OK and s.result.balance == 20_000
        shown = check_rendered(s)
        if channel == "ussd":
            assert "200.00" in shown
            s = await engine.answer(sid, "00")
        else:
            plays = render_ivr(s, PROMPTS).plays
            assert [p.value for p in plays[:4]][-2:] == ["200", "telecom-pay/en/currency_major"]
            assert s.node == menu_tree.HOME        # the IVR goes on with the home menu
        # pay a merchant: 4, the first merchant, an amount, the PIN
        s = await engine.answer(sid, "4")
        assert s.node == "pay_merchant"
        assert "Lottery Centre" in check_rendered(s)
        s = await engine.answer(sid, "1")
        assert s.collect.kind == "amount"
        s = await engine.answer(sid, "abc")
        assert s.says[0] == Say.prompt("invalid_amount")
        s = await engine.answer(sid, _keys_for(channel, "12.50", "12"))
        assert s.node == "pin" and s.collect.secret
        assert "Lottery Centre" in check_rendered(s)
        s = await engine.answer(sid, CHOSEN_PIN)
        assert s.result.outcome is Outcome.OK, s.result
        paid = 1250 if channel == "ussd" else 1200
        assert s.result.balance == 20_000 - paid
        assert s.meta["pin_verified"] is True
        check_rendered(s)
        # the SMS receipt was queued with the money itself (the result may never be heard or seen)
        receipts = [t for t in await outbox_texts(svc, MSISDN) if s.result.ref in t]
        assert len(receipts) == 1, await outbox_texts(svc, MSISDN)
        assert s.result.params["receipt"] == "sms"
        if channel == "ussd":
            s = await engine.answer(sid, "0")           # back from a result: the menu before
            assert s.node in ("pay_amount", "pay_merchant", "main")
            s = await engine.answer(sid, "00")
        # top up from the card: 3, amount, PIN (the test bank has no card bound: a clear refusal)
        s = await engine.answer(sid, "3")
        s = await engine.answer(sid, "10")
        check_rendered(s)
        if s.node == "pin":
            s = await engine.answer(sid, CHOSEN_PIN)
        assert s.result is not None and s.result.outcome in (Outcome.OK, Outcome.NO_CARD, Outcome.IN_PROGRESS)
        check_rendered(s)
        if channel == "ussd":
            s = await engine.answer(sid, "00")
        # send money: 5, a number, an amount, the PIN
        await open_active(svc, OTHER)
        s = await engine.answer(sid, "5")
        s = await engine.answer(sid, "12")                        # not a number
        assert s.says[0] == Say.prompt("invalid_number")
        s = await engine.answer(sid, OTHER[2:])
        s = await engine.answer(sid, "5")
        assert s.node == "pin"
        check_rendered(s)
        s = await engine.answer(sid, CHOSEN_PIN)
        assert s.result.outcome is Outcome.OK, s.result
        if channel == "ussd":
            s = await engine.answer(sid, "00")
        # airtime: 6, amount, PIN
        s = await engine.answer(sid, "6")
        s = await engine.answer(sid, "5")
        s = await engine.answer(sid, CHOSEN_PIN)
        assert s.result.outcome is Outcome.OK, s.result
        if channel == "ussd":
            s = await engine.answer(sid, "00")
        # statement: 2 (USSD pages it)
        s = await engine.answer(sid, "2")
        assert s.result.outcome is Outcome.OK
        check_rendered(s)
        if channel == "ussd":
            s = await engine.answer(sid, "00")
        # a wrong key: said so, the same menu again
        s = await engine.answer(sid, "7")
        s = await engine.answer(sid, "8")
        assert s.says[0] == Say.prompt("invalid_choice") and s.node == "account"
        # language: 3, 2 Chinese-English switch to zh then back
        s = await engine.answer(sid, "3")
        s = await engine.answer(sid, "1")
        assert s.lang == "zh"
        check_rendered(s)
        if channel == "ussd":
            s = await engine.answer(sid, "00")
        # freeze: 7, 2, 1 yes
        s = await engine.answer(sid, "7")
        s = await engine.answer(sid, "2")
        assert s.node == "freeze_confirm"
        s = await engine.answer(sid, "2")                         # no: back to the account menu
        assert s.node == "account"
        s = await engine.answer(sid, "2")
        s = await engine.answer(sid, "1")
        assert s.result.outcome is Outcome.OK and (await svc.account_info(MSISDN)).status == "frozen"
        check_rendered(s)
        # talk to an agent: 9 from home, a transfer that knows the PIN was checked
        s = await engine.start(sid, MSISDN, channel=channel)
        s = await engine.answer(sid, "9")
        assert s.transfer == "agents" and s.end
        assert s.meta["pin_verified"] is False and s.meta["path"].endswith("agent")
        check_rendered(s)
        # the transfer ended the dialogue: the session is gone
        assert (await engine.answer(sid, "1")).node == "expired"
    finally:
        await shutdown(svc)


@aio_test
async def test_a_withheld_caller_can_open_for_a_number_and_reach_an_agent(stack):
    engine, conv, svc = await engine_for(stack)
    told = Told(svc)
    try:
        s = await engine.start("ivr:anon", None, channel="ivr", lang="en")
        assert s.node == menu_tree.GUEST
        check_rendered(s)
        s = await engine.answer("ivr:anon", "1")
        s = await engine.answer("ivr:anon", MSISDN[2:])
        assert any(p.value.endswith("/open_sms_sent") for p in render_ivr(s, PROMPTS).plays)
        assert told.last(MSISDN).outcome is Outcome.CONFIRM_REQUIRED
        # the phone confirms by SMS
        replies = await conv.handle(MSISDN, "A")
        assert (await svc.account_info(MSISDN)).status == "active", replies
        s = await engine.answer("ivr:anon", "9")
        assert s.transfer == "agents" and s.meta["pin_verified"] is False
    finally:
        await shutdown(svc)


@aio_test
async def test_a_dialogue_ended_before_its_pin_moves_no_money(stack):
    engine, conv, svc = await engine_for(stack)
    try:
        await open_active(svc)
        await svc.fund_agent("AG001", 5_000, key="f", operator="test")
        await svc.cash_in("AG001", MSISDN, 5_000, key="c")
        s = await engine.start("ussd:x", MSISDN, channel="ussd")
        for key in ("4", "1", "20"):
            s = await engine.answer("ussd:x", key)
        assert s.node == "pin"
        assert await conv.pending(MSISDN) is not None
        await engine.end("ussd:x", "timeout")
        assert await conv.pending(MSISDN) is None
        # the PIN arriving afterwards (by SMS, or a late USSD answer) pays nothing
        late = await conv.handle(MSISDN, CHOSEN_PIN)
        assert (await svc.balance(MSISDN, channel="test")).balance == 5_000, late
        assert (await engine.answer("ussd:x", CHOSEN_PIN)).node == "expired"
    finally:
        await shutdown(svc)


@aio_test
async def test_three_wrong_pins_in_a_menu_lock_every_channel(stack):
    engine, conv, svc = await engine_for(stack)
    try:
        await open_active(svc)
        await svc.fund_agent("AG001", 5_000, key="f", operator="test")
        await svc.cash_in("AG001", MSISDN, 5_000, key="c")
        s = await engine.start("ivr:w", MSISDN, channel="ivr")
        for key in ("4", "1", "20"):
            s = await engine.answer("ivr:w", key)
        outcomes = []
        for _ in range(3):
            s = await engine.answer("ivr:w", "999111")
            outcomes.append(s.result.outcome if s.result else "again")
        assert outcomes[-1] is Outcome.PIN_LOCKED, outcomes
        assert s.meta["pin_verified"] is False
        r = await conv.run(MSISDN, Command(name="pay", amount=100, merchant_code="M001"), channel="sms", lang="en")
        assert r.outcome is Outcome.PIN_REQUIRED
        r = await conv.answer_pin(MSISDN, CHOSEN_PIN, channel="sms", lang="en")
        assert r.outcome is Outcome.PIN_LOCKED
        assert (await svc.balance(MSISDN, channel="test")).balance == 5_000
    finally:
        await shutdown(svc)


@aio_test
async def test_typed_commands_work_inside_a_ussd_session(stack):
    engine, conv, svc = await engine_for(stack)
    try:
        await open_active(svc)
        s = await engine.start("ussd:t", MSISDN, channel="ussd")
        s = await engine.answer("ussd:t", "BAL")
        assert s.node == "result" and "0.00" in render_ussd(s, PROMPTS)
        s = await engine.answer("ussd:t", "ZF M001 1")
        assert "余额不足" in render_ussd(s, PROMPTS)          # the subscriber's language, as by SMS
        s = await engine.answer("ussd:t", "00")
        assert s.node == menu_tree.HOME
    finally:
        await shutdown(svc)


def test_a_long_screen_is_paged_within_the_limit():
    lines = tuple(f"12-0{i % 9 + 1} Pay -{i}.00 Lottery Centre" for i in range(30))
    s = Screen(node="result", text="Last transactions\n" + "\n".join(lines), lang="en")
    got = pages(s, PROMPTS)
    assert len(got) > 3
    assert all(len(p) <= GSM_LIMIT for p in got)
    assert all(p.endswith("0 Back 00 Home") for p in got)
    assert all("99 More" in p for p in got[:-1]) and "99 More" not in got[-1]
    # every line shows once, in order
    shown = [line for p in got for line in p.split("\n") if line.startswith("12-")]
    assert shown == list(lines)
    zh = Screen(node="result", text="最近交易\n" + "\n".join(f"12-01 支付 -{i}.00 福彩中心" for i in range(20)),
                lang="zh")
    zpages = pages(zh, PROMPTS)
    assert all(len(p) <= UCS2_LIMIT for p in zpages) and len(zpages) > 2
    assert render_ussd(Screen(**{**zh.__dict__, "page": 99}), PROMPTS) == zpages[-1]


@aio_test
async def test_a_spend_by_sms_gets_its_reply_and_no_second_receipt(stack):
    engine, conv, svc = await engine_for(stack)
    try:
        await open_active(svc)
        await svc.fund_agent("AG001", 5_000, key="f", operator="test")
        await svc.cash_in("AG001", MSISDN, 5_000, key="c")
        before = len(await outbox_texts(svc, MSISDN))
        await conv.handle(MSISDN, "ZF M001 10")
        replies = await conv.handle(MSISDN, CHOSEN_PIN)
        assert "福彩中心" in " ".join(replies)
        assert len(await outbox_texts(svc, MSISDN)) == before       # the reply is the receipt
    finally:
        await shutdown(svc)


@pytest.mark.parametrize("channel", ["ussd", "ivr"])
@aio_test
async def test_a_random_walk_of_any_input_never_breaks_the_dialogue_or_the_books(stack, channel):
    """Keys, navigation, PIN-shaped and malformed input in random order: every
    answer is a screen that renders within the limits, no PIN is ever kept
    in the menu state, and the ledger's invariants hold afterwards."""
    import json
    import random

    from telecom_pay.ledger.invariants import check_invariants
    engine, conv, svc = await engine_for(stack, {"security.velocity_payments_per_minute": 0})
    rng = random.Random(20261202)
    vocabulary = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "00", "99", "*", "#", "", " ", CHOSEN_PIN,
                  "999111", CHOSEN_PIN + "147369", "12.5", "10", "100000", "13900139000", "M001", "ZF M001 1",
                  "KT", "A", "N", "YE", "x" * 300, "１２", "💸", "\x00", "-5", "0.001"]
    try:
        await open_active(svc)
        await open_active(svc, OTHER)
        await svc.fund_agent("AG001", 50_000, key="f", operator="test")
        await svc.cash_in("AG001", MSISDN, 50_000, key="c")
        sid = f"{channel}:random"
        seen = set()
        s = await engine.start(sid, MSISDN, channel=channel)
        scripts = [["00", "4", "1", "10", CHOSEN_PIN], ["00", "5", OTHER[2:], "3", CHOSEN_PIN],
                   ["00", "6", "2", "999111"], ["00", "1"], ["00", "2", "99"]]
        todo: list[str] = []
        for _ in range(400):
            if s.end:
                s = await engine.start(sid, MSISDN, channel=channel)
            if not todo and rng.random() < 0.15:
                todo = list(rng.choice(scripts))          # now and then a whole errand
            text = todo.pop(0) if todo else rng.choice(vocabulary)
            asked_secret = s.collect is not None and s.collect.secret
            s = await engine.answer(sid, text)
            if s.result is not None and s.result.outcome is Outcome.ACCOUNT_FROZEN:
                await svc.unfreeze(MSISDN, CHOSEN_PIN, channel="test")   # the walk froze it: go on
            assert isinstance(s, Screen)
            check_rendered(s)
            if s.result is not None:
                seen.add(s.result.outcome)
            state = await svc.sessions.get(f"menu:{sid}")
            if state is not None and asked_secret and text.strip().isdigit() and len(text.strip()) >= 6:
                # what answered a PIN step is in no form in the menu state
                dumped = json.dumps(state, ensure_ascii=False)
                assert text.strip() not in dumped, (text, dumped)
        problems = await svc.ledger.read(check_invariants)
        assert problems == []
        # the walk went deep: money moved, and a wrong PIN was refused on the way
        assert Outcome.OK in seen and (Outcome.PIN_WRONG in seen or Outcome.PIN_LOCKED in seen), seen
    finally:
        await shutdown(svc)


@aio_test
async def test_a_pin_page_pays_only_what_it_showed(stack):
    """A menu asks for the PIN of 10.00 to M001; meanwhile the same
    subscriber's SMS asks for 50.00 to M002 (the pending action is
    replaced). The menu's PIN pays neither; the SMS request is still
    there for its own PIN."""
    engine, conv, svc = await engine_for(stack)
    try:
        await open_active(svc)
        await svc.fund_agent("AG001", 20_000, key="f", operator="test")
        await svc.cash_in("AG001", MSISDN, 20_000, key="c")
        s = await engine.start("ussd:race", MSISDN, channel="ussd")
        for key in ("4", "1", "10"):
            s = await engine.answer("ussd:race", key)
        assert s.node == "pin"
        await conv.handle(MSISDN, "ZF M002 50")
        s = await engine.answer("ussd:race", CHOSEN_PIN, message_id=None)
        assert s.result.outcome is Outcome.CONFIRMATION_EXPIRED
        assert (await svc.balance(MSISDN, channel="test")).balance == 20_000
        replies = await conv.handle(MSISDN, CHOSEN_PIN)
        assert "50.00" in " ".join(replies)
        assert (await svc.balance(MSISDN, channel="test")).balance == 15_000
    finally:
        await shutdown(svc)
