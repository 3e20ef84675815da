"""The FastAGI Protocol's own rules, without sockets: the header and command
timeouts on a task.Clock, and a handler started once per complete header."""
from __future__ import annotations

import asyncio

from twisted.internet import task
from twisted.internet.testing import StringTransport

from channels.ivr.server import AgiFactory, CallGone
from tests.aio import aio_test
from tests.test_agi_session import HEADER


def connect(handler):
    clock = task.Clock()
    factory = AgiFactory(handler, clock, header_timeout=10.0, command_timeout=5.0)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return clock, factory, proto, transport


def test_no_header_in_time_drops_the_connection():
    started = []

    async def handler(conn, env):
        started.append(env)
    clock, factory, proto, transport = connect(handler)
    proto.dataReceived(b"agi_network: yes\n")
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting and started == []


@aio_test
async def test_an_unanswered_command_fails_after_its_timeout_plus_its_own_wait():
    outcome = {}

    async def handler(conn, env):
        outcome["env"] = env.uniqueid
        try:
            await conn.send("WAIT FOR DIGIT", 3000, wait=3.0)
        except CallGone as exc:
            outcome["gone"] = str(exc)
    clock, factory, proto, transport = connect(handler)
    proto.dataReceived(HEADER)
    await asyncio.sleep(0)
    assert outcome["env"] == "1733100000.42" and factory.connections == {proto}
    assert transport.value() == b"WAIT FOR DIGIT 3000\n"
    clock.advance(7.9)                          # 5 s command timeout + the command's 3 s
    await asyncio.sleep(0)
    assert "gone" not in outcome
    clock.advance(0.2)
    for _ in range(3):
        await asyncio.sleep(0)
    assert "not answered in time" in outcome["gone"]
    assert transport.disconnecting


@aio_test
async def test_answers_resolve_commands_and_a_close_fails_the_one_in_flight():
    seen = []

    async def handler(conn, env):
        r = await conn.send("ANSWER")
        seen.append(r.result)
        try:
            await conn.send("STREAM FILE", "telecom-pay/en/main_menu", "0123456789*#")
        except CallGone:
            seen.append("gone")
    clock, factory, proto, transport = connect(handler)
    proto.dataReceived(HEADER)
    await asyncio.sleep(0)
    proto.dataReceived(b"200 result=0\n")
    for _ in range(3):
        await asyncio.sleep(0)
    assert transport.value().endswith(b"STREAM FILE telecom-pay/en/main_menu 0123456789*#\n")
    proto.connectionLost(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert seen == ["0", "gone"] and factory.connections == set()
    assert clock.getDelayedCalls() == []        # no timer left behind
