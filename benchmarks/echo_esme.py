"""A trivial ESME that answers like the platform and does nothing else.

    python -m benchmarks.echo_esme --port P [--port P2 ...] [--window W] [--binds B]

It binds (transceiver) to load-generator workers (every port in one
process, replies spread round robin over the binds as the platform does)
and answers every
deliver_sm with a deliver_sm_resp; an MO also gets a submit_sm back (with
a delivery receipt requested, as the platform asks): `ZF <merchant>
<amount>` a PIN prompt, a 6-digit PIN a confirmation with a reference
shaped like the platform's, `YE`/`BAL` a balance. No database, no
sessions: whatever rate the load generator reaches against it is the
harness's own ceiling, the figure every daemon result is read against
(a daemon result near it says the harness, not the daemon, was the limit).

Its submit_sm are windowed (``--window``, 100 by default: wide, so that the
window is never what limits it); one bind per port unless told otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import re
import socket
import struct
import sys
from collections import deque

from channels.smpp import pdu as P
from channels.smpp.text import decode_short_message, split_message

_HEADER = struct.Struct(">LLLL")
_DELIVER_SM = 0x00000005
_SUBMIT_SM_RESP = 0x80000004
_BIND_TRANSCEIVER_RESP = 0x80000009
_ENQUIRE_LINK = 0x00000015

_ZF = re.compile(r"^\s*(?:ZF|PAY)\s+(\S+)\s+(\d+(?:\.\d{1,2})?)", re.IGNORECASE)
_PIN = re.compile(r"^\s*\d{6}\s*$")
_BALANCE = re.compile(r"^\s*(?:YE|BAL|BALANCE)\s*$", re.IGNORECASE)
_REF_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


class EchoBind(asyncio.Protocol):
    def __init__(self, esme: "EchoEsme"):
        self.esme = esme
        self.reader = P.PduReader()
        self.transport = None
        self.sequence = 0
        self.bound = asyncio.get_running_loop().create_future()
        self.outstanding = 0
        self.queue: deque[tuple[str, str]] = deque()   # (destination, text) waiting for window room
        self.out: list[bytes] = []
        self.flush_due = False

    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.write(P.encode_pdu("bind_transceiver", self.next_sequence(), system_id=self.esme.system_id,
                                password=self.esme.password, system_type="", interface_version=0x34))

    def connection_lost(self, exc):
        if not self.bound.done():
            self.bound.set_exception(ConnectionError(f"connection lost before bind: {exc}"))

    def next_sequence(self) -> int:
        self.sequence = self.sequence + 1 if self.sequence < 0x7FFFFFFF else 1
        return self.sequence

    def write(self, raw: bytes) -> None:
        self.out.append(raw)
        if not self.flush_due:
            self.flush_due = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_due = False
        if self.out and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        for raw in self.reader.feed(data):
            _length, command_id, status, sequence = _HEADER.unpack_from(raw, 0)
            if command_id == _DELIVER_SM:
                self.on_deliver(raw, sequence)
            elif command_id == _SUBMIT_SM_RESP:
                self.outstanding -= 1
            elif command_id == _BIND_TRANSCEIVER_RESP:
                if status == P.ESME_ROK:
                    self.bound.set_result(self)
                else:
                    self.bound.set_exception(ConnectionError(f"bind refused: status 0x{status:02x}"))
            elif command_id == _ENQUIRE_LINK:
                self.write(P.encode_pdu("enquire_link_resp", sequence))
        self.pump()

    def on_deliver(self, raw: bytes, sequence: int) -> None:
        self.write(P.encode_pdu("deliver_sm_resp", sequence))
        source_addr, esm_class, data_coding, short_message = read_deliver_sm(raw)
        if esm_class & P.ESM_CLASS_TYPE_MASK:
            return      # a delivery receipt: nothing to answer
        text = decode_short_message(short_message or b"", data_coding, esm_class).text
        self.esme.reply(source_addr, self.answer(source_addr, text))

    def answer(self, msisdn: str, text: str) -> str:
        m = _ZF.match(text)
        if m:
            self.esme.pending[msisdn] = m.group(2)
            return f"支付 {m.group(2)} 元给 压测商户, 请回复6位支付密码确认, 回复 N 取消."
        if _PIN.match(text):
            amount = self.esme.pending.pop(msisdn, "0.00")
            ref = "T" + "".join(random.choices(_REF_ALPHABET, k=7))
            return f"{ref} 已支付 {amount} 元给 压测商户, 余额 100.00 元."
        if _BALANCE.match(text):
            return "余额 100.00 元."
        return "手机支付指令: YE 余额, ZF 商户 金额 支付"

    def pump(self) -> None:
        window = self.esme.window
        while self.queue and self.outstanding < window:
            destination, text = self.queue.popleft()
            for part in split_message(text, self.sequence & 0xFF):
                self.outstanding += 1
                self.write(submit_sm(self.next_sequence(), self.esme.source_addr, destination, part))


def read_deliver_sm(raw: bytes) -> tuple[str, int, int, bytes]:
    """source_addr, esm_class, data_coding and short_message of a deliver_sm
    (the codec's fast path: a few microseconds, well under the load
    generator's own cost per PDU)."""
    pdu = P.decode_pdu(raw)
    return pdu.source_addr, pdu.esm_class, pdu.data_coding, pdu.short_message


def submit_sm(sequence: int, source_addr: str, destination_addr: str, part) -> bytes:
    """A submit_sm with a delivery receipt requested, the platform's way."""
    return P.encode_pdu("submit_sm", sequence, source_addr=source_addr, source_addr_ton=0, source_addr_npi=1,
                        dest_addr_ton=1, dest_addr_npi=1, destination_addr=destination_addr,
                        esm_class=part.esm_class, registered_delivery=1, data_coding=part.data_coding,
                        short_message=part.short_message)


class EchoEsme:
    def __init__(self, args):
        self.system_id = args.system_id
        self.password = args.password
        self.window = args.window
        self.source_addr = args.source_addr
        self.binds: list[EchoBind] = []
        self.pending: dict[str, str] = {}      # msisdn -> amount text of its open payment
        self._next = 0

    def reply(self, destination: str, text: str) -> None:
        """Round robin over the binds, whatever bind the MO came in on, as
        the platform's pool does: the load generator's forwarding between
        its workers is then part of the ceiling too."""
        bind = self.binds[self._next % len(self.binds)]
        self._next += 1
        bind.queue.append((destination, text))
        bind.pump()


async def main_async(args) -> None:
    esme = EchoEsme(args)
    loop = asyncio.get_running_loop()
    binds = []
    for port in args.port:
        for _ in range(args.binds):
            _, proto = await loop.create_connection(lambda: EchoBind(esme), "127.0.0.1", port)
            binds.append(proto)
    esme.binds = binds
    await asyncio.gather(*(b.bound for b in binds))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    # runs until stdin closes or it is terminated
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        pass
    for b in binds:
        b.transport.abort()


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.echo_esme", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, action="append", required=True, help="a load-generator port (repeatable)")
    p.add_argument("--binds", type=int, default=1, help="binds per port (default 1)")
    p.add_argument("--window", type=int, default=100, help="outstanding submit_sm per bind (default 100)")
    p.add_argument("--system-id", default="telecom-pay")
    p.add_argument("--password", default="secret")
    p.add_argument("--source-addr", default="10658888")
    p.add_argument("--uvloop", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.uvloop:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
