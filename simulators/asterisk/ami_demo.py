"""The AMI simulator's part in `telecom-pay demo`: a switch the daemon logs
into, so `HJ` from a demo handset is originated and, once the IVR is up,
the call-back is answered into it by the caller simulator (pressing
`[ami_sim] answer_keys`), what the subscriber heard printed."""
from __future__ import annotations

import asyncio

from simulators.asterisk.ami_server import AmiSimulator, agi_dialer
from telecom_pay.aio import wait_deferred


async def start(settings, demo, reactor, stoppers) -> tuple[str, AmiSimulator]:
    cfg = settings.section("ami_sim")
    ami = settings.section("ami")
    accounts = dict(cfg.get("accounts") or {ami.get("username", "telecom-pay"): ami.get("secret", "secret")})
    sim = AmiSimulator(reactor, accounts=accounts)
    endpoint = demo.get("ami", "tcp:5038:interface=127.0.0.1")
    await wait_deferred(sim.listen(endpoint))
    stoppers.append(sim.stop)
    return f"AMI simulator on port {endpoint.split(':')[1]} (call-backs: text HJ)", sim


async def connect(daemon, settings, sim: AmiSimulator, reactor) -> str | None:
    """Answered call-backs go into the daemon's FastAGI server, when it has one."""
    ivr = daemon.components.get("ivr")
    if ivr is None or not hasattr(ivr, "wait_listening"):
        return None
    try:
        port = await asyncio.wait_for(ivr.wait_listening(), 10)
        keys = [str(k) for k in settings.section("ami_sim").get("answer_keys", ["1", "0"])]
        sim.dial = agi_dialer(reactor, f"tcp:127.0.0.1:{port}", keys, on_call=_print_heard)
    except Exception as exc:           # no IVR: the call-back rings and ends without a menu
        return f"AMI simulator: call-backs not connected to the IVR ({exc})"
    return f"call-backs are answered into the IVR on port {port}, pressing {','.join(keys)}"


def _print_heard(call) -> None:
    print(f"call-back to {call.msisdn}: " + " | ".join(h.text for h in call.heard), flush=True)
