"""`telecom-pay demo`: the daemon on the embedded default beside the SMSC
and bank simulators, in one process, for newcomers and testers.

It prints the ports (the FastAGI port of the IVR among them, with a
`handset call` to try; the web interface's URL and development users), the service number and the test MSISDNs, then a line
`ready` once the daemon's SMPP bind is up; Ctrl-C stops everything cleanly.
"""
from __future__ import annotations

import asyncio
import importlib

from twisted.internet import defer

from telecom_pay import config as config_mod
from telecom_pay.aio import as_deferred, wait_deferred
from telecom_pay.daemon import Daemon, _start_logging, install_asyncio_reactor, run_until_stopped


def _port_of(endpoint: str) -> str:
    return endpoint.split(":")[1]


async def _wait_bound(daemon: Daemon, timeout: float = 30.0) -> None:
    sms = daemon.components.get("sms")
    if sms is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not sms.pool.bound:
        if loop.time() > deadline:
            raise RuntimeError("the SMPP bind did not come up")
        await asyncio.sleep(0.05)


def run_demo(args) -> int:
    reactor = install_asyncio_reactor()
    _start_logging(args.log_level)
    settings = config_mod.load(args.config)
    demo = settings.section("demo")
    handsets = [str(h) for h in demo.get("handsets", [])]
    stoppers = []
    daemon = Daemon(settings, reactor)

    async def start():
        from simulators.smsc.config import SmscConfig
        from simulators.smsc.simulator import SmscSimulator
        smsc = SmscSimulator(SmscConfig.from_mapping(settings.section("smsc_sim")), reactor)
        await wait_deferred(smsc.listen(demo.get("smsc_smpp", "tcp:2775:interface=127.0.0.1")))
        await wait_deferred(smsc.listen_http(demo.get("smsc_http", "tcp:8025:interface=127.0.0.1")))
        stoppers.append(smsc.stop)
        for msisdn in handsets:
            smsc.handset(msisdn)
        lines = [f"SMSC simulator: SMPP on port {_port_of(demo.get('smsc_smpp', 'tcp:2775'))}, "
                 f"control and web handset on http://127.0.0.1:{_port_of(demo.get('smsc_http', 'tcp:8025'))}/"]
        bank_sim = await _start_bank_simulator(settings, demo, reactor, handsets, stoppers)
        if bank_sim:
            lines.append(bank_sim)
        ami_demo, ami_sim = await _start_ami_simulator(settings, demo, reactor, stoppers, lines)
        daemon.startService()
        await wait_deferred(daemon.ready)
        await _wait_bound(daemon)
        opened = await _open_demo_accounts(daemon, demo)
        await _bind_demo_cards(daemon, settings, handsets)
        if ami_sim is not None:
            connected = await ami_demo.connect(daemon, settings, ami_sim, reactor)
            if connected:
                lines.append(connected)
        lines += [f"service number: {settings.service_number}",
                  f"test handsets: {', '.join(handsets)}",
                  *opened,
                  f"database: {settings.database_url}",
                  "try, in another terminal:",
                  f"  telecom-pay handset send {handsets[0] if handsets else '13800138000'} KT --expect A",
                  f"  telecom-pay handset dial {handsets[0] if handsets else '13800138000'} '*188#'"]
        lines += await _ivr_lines(daemon, handsets[0] if handsets else "13800138000")
        lines += await _web_lines(daemon, settings)
        lines += await _start_shop(daemon, settings, demo, reactor, stoppers)
        lines += await _start_topup_simulator(settings, demo, reactor, stoppers)
        ivr = daemon.components.get("ivr")
        if ivr is not None:               # the web handset's call keypad dials the daemon's IVR
            try:
                smsc.ivr_endpoint = f"tcp:127.0.0.1:{await asyncio.wait_for(ivr.wait_listening(), 10)}"
            except (OSError, asyncio.TimeoutError):
                pass                      # said by _ivr_lines
        for line in lines:
            print(line, flush=True)
        print("ready", flush=True)

    def stop():
        d = daemon.stopService() if daemon.running else defer.succeed(None)
        for s in reversed(stoppers):
            d.addBoth(lambda _, s=s: s())
        return d

    return run_until_stopped(reactor, lambda: as_deferred(start()), stop)


async def _open_demo_accounts(daemon: Daemon, demo: dict) -> list[str]:
    """`[demo] accounts`: numbers given an active account with the demo PIN
    at start (once; a later start finds them open), so a newcomer can dial
    *188# or call the IVR and hear a balance at once. The other handsets
    stay without an account, to try KT."""
    service = daemon.core.service
    pin = str(demo.get("pin", ""))
    lines = []
    for msisdn in [str(m) for m in demo.get("accounts", [])]:
        account = await service.account_info(msisdn)
        if account is None:
            r = await service.open_account(msisdn, channel="demo")
            if r.outcome.value == "confirm_required":
                r = await service.confirm_open(msisdn, channel="demo")
                if r.ok and pin:
                    r = await service.change_pin(msisdn, r.params["pin"], pin, channel="demo")
            if not r.ok:
                lines.append(f"demo account {msisdn}: not opened ({r.outcome.value})")
                continue
        lines.append(f"demo account: {msisdn} (PIN {pin}; its card is bound by the bank simulator)"
                     if pin else f"demo account: {msisdn}")
    return lines


async def _ivr_lines(daemon: Daemon, msisdn: str) -> list[str]:
    """The FastAGI port and a call to try with the Asterisk caller simulator."""
    ivr = daemon.components.get("ivr")
    if ivr is None:
        return []
    try:
        port = await asyncio.wait_for(ivr.wait_listening(), 10)
    except (OSError, asyncio.TimeoutError) as exc:
        return [f"IVR: not listening ({exc})"]
    agi = "" if port == 4573 else f" --agi tcp:127.0.0.1:{port}"
    return [f"IVR (FastAGI) on port {port}: the dialplan's AGI(agi://127.0.0.1:{port}/ivr); "
            "call it with the Asterisk caller simulator:",
            f"  telecom-pay handset call {msisdn} --keys 1,0{agi}      (1 balance, 0 goodbye)"]


async def _web_lines(daemon: Daemon, settings) -> list[str]:
    """The web interface's URL and the development users seeded for it."""
    web = daemon.components.get("web")
    if web is None:
        return []
    try:
        port = await asyncio.wait_for(web.wait_listening(), 10)
    except (OSError, asyncio.TimeoutError) as exc:
        return [f"web: not listening ({exc})"]
    users = [f"{u['username']} / {u['password']} ({u['role']})" for u in web.dev_users]
    lines = [f"web: http://127.0.0.1:{port}/"]
    if users:
        lines.append("  DEVELOPMENT DEFAULT web users: " + ", ".join(users))
    return lines


async def _start_bank_simulator(settings, demo, reactor, handsets, stoppers) -> str | None:
    """The bank simulator, when it is installed and configured ([bank_sim])."""
    try:
        bank_demo = importlib.import_module("simulators.bank.demo")
    except ModuleNotFoundError:
        return None
    return await bank_demo.start(settings, demo, reactor, handsets, stoppers)


async def _bind_demo_cards(daemon, settings, handsets) -> None:
    try:
        bank_demo = importlib.import_module("simulators.bank.demo")
    except ModuleNotFoundError:
        return
    await bank_demo.bind_cards(daemon, settings, handsets)


async def _start_ami_simulator(settings, demo, reactor, stoppers, lines):
    """The AMI simulator (simulators.asterisk.ami_demo), when the daemon has [ami]."""
    if not settings.section("ami").get("factory") or not settings.section("ami").get("enabled", True):
        return None, None
    try:
        ami_demo = importlib.import_module("simulators.asterisk.ami_demo")
    except ModuleNotFoundError:
        return None, None
    line, sim = await ami_demo.start(settings, demo, reactor, stoppers)
    lines.append(line)
    return ami_demo, sim


async def _start_shop(daemon, settings, demo, reactor, stoppers) -> list[str]:
    """The sample shop (simulators.merchant.demo), an SP paying through the
    daemon's web API, once that API listens; `[demo.shop]` configures it."""
    web = daemon.components.get("web")
    if web is None or not demo.get("shop"):
        return []
    try:
        shop_demo = importlib.import_module("simulators.merchant.demo")
    except ModuleNotFoundError:
        return []
    try:
        port = await asyncio.wait_for(web.wait_listening(), 10)
    except (OSError, asyncio.TimeoutError) as exc:
        return [f"sample shop: not started (web: {exc})"]
    return await shop_demo.start(settings, demo, reactor, stoppers, f"http://127.0.0.1:{port}")


async def _start_topup_simulator(settings, demo, reactor, stoppers) -> list[str]:
    """The carrier top-up system the airtime SP ([airtime] merchant_code)
    calls back, with that SP's development key (its secret derives from the
    development PIN key: the demo is the embedded default only)."""
    code = str(settings.section("airtime").get("merchant_code") or "").upper()
    entry = next((m for m in settings.merchants if str(m.get("code", "")).upper() == code), None)
    if not code or entry is None or not entry.get("api_key_id") or not demo.get("topup"):
        return []
    from simulators.topup.server import TopUps, listen
    from telecom_pay.merchants.signing import derive_secret
    topups = TopUps(str(entry["api_key_id"]), derive_secret(settings.pin_key, str(entry["api_key_id"])))
    try:
        port = await listen(reactor, str(demo["topup"]), topups)
    except Exception as exc:   # noqa: BLE001 - said, and the rest of the demo runs
        return [f"carrier top-up simulator: not listening ({exc})"]
    stoppers.append(port.stopListening)
    return [f"carrier top-up system (airtime SP {code}): http://127.0.0.1:{port.getHost().port}/"]
