"""One load-generator worker: a lean SMSC in its own process.

    python -m benchmarks.smsc_load --index I --procs N --handsets FILE --workdir DIR [--port P] ...

It listens on one port for the platform's ``bind_transceiver`` and plays
the handsets it owns (every N-th of the handsets file, starting at I): it
sends their MOs as ``deliver_sm`` (windowed), answers every ``submit_sm``
with a ``submit_sm_resp`` and, when asked for one, a delivery receipt, and
keeps per-conversation timings. The parent (`benchmarks.loadgen`) drives it
with one JSON command a line on stdin and reads one JSON event a line on
stdout; a run's records go to a file (too many for a line).

Why its own process, and why not the simulator: the in-process simulator
(smpplib PDU objects, a traffic record, a Handset object per MO) cost the
benchmark about 4 ms of CPU per payment, so the harness, not the daemon,
set the ceiling. Here an MO costs one `encode_pdu`, a reply one
`decode_pdu` and one `encode_pdu`; responses to our own requests are read
from their 16-octet header alone (their body carries nothing we use).

Replies can arrive on any worker: the platform spreads its submit_sm over
its binds round robin, whatever bind the MO came in on. The worker that
receives a reply for a handset it does not own forwards it (one datagram a
loop turn, on a Unix socket per worker) to the owner, which keeps the
conversation; timestamps are CLOCK_MONOTONIC, shared by every process.

TP-MR: the platform takes the same sender, text and TP-MR within its dedup
window for an SMSC re-delivery. A handset here numbers each distinct text's
messages on its own (256 values per text), so the PIN, which repeats, gets
256 uses per handset, and keyword runs rotate case variants of their
keyword (the platform folds case). A handset out of TP-MRs for the text it
needs is rested (`rested` in the counters).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import struct
import sys
import time
from collections import deque

from channels.smpp import pdu as P
from channels.smpp.text import decode_message, split_message
from telecom_pay.money import format_amount

PROMPT = re.compile(r"6位支付密码|6-digit PIN")
REFERENCE = re.compile(r"\bT[2-9A-HJ-NP-Z]{7}\b")
BALANCE = re.compile(r"余额|[Bb]alance")
MIN_AMOUNT, MAX_AMOUNT = 100, 2000
TPMR_VALUES = 256
#: Spellings of the balance keyword the platform reads alike (it folds case):
#: each has its own 256 TP-MRs, so a handset can ask 12 x 256 times in a window.
KEYWORD_VARIANTS = ("YE", "ye", "Ye", "yE", "BAL", "bal", "Bal", "bAL", "baL", "bAl", "BaL", "BAl")
SERVICE_NUMBER = "10658888"

_HEADER = struct.Struct(">LLLL")
_DELIVER_SM_RESP = 0x80000005
_SUBMIT_SM = 0x00000004
_ENQUIRE_LINK = 0x00000015
_UNBIND = 0x00000006
_BIND_TRANSCEIVER = 0x00000009
_GENERIC_NACK = 0x80000000
#: deliver_sm_resp statuses not worth a retry (as the SMSC simulator reads them)
_PERMANENT = frozenset({P.ESME_RX_P_APPN, P.ESME_RX_R_APPN, P.ESME_RINVCMDID, P.ESME_RINVBNDSTS})

clock = time.monotonic   # CLOCK_MONOTONIC: comparable across the workers and the parent


def amount_of(index: int) -> int:
    """Varied amounts from 1.00 to 20.00 (minor units), reproducible."""
    return MIN_AMOUNT + (index * 7919) % (MAX_AMOUNT - MIN_AMOUNT + 1)


def e164(msisdn: str) -> str:
    """The form the SMSC passes on (as the simulator does): China's 86 prefix."""
    return msisdn if msisdn.startswith("86") and len(msisdn) == 13 else "86" + msisdn


# ---------------------------------------------------------------- conversations

class Conversation:
    """One payment (ZF, prompt, PIN, receipt) or one keyword round trip.

    Times are monotonic seconds; 0.0 where the step did not happen."""

    __slots__ = ("kind", "index", "msisdn", "amount", "scheduled", "t1", "r1", "t2", "r2", "ref", "error",
                 "detail", "step")

    def __init__(self, kind: str, index: int, scheduled: float):
        self.kind = kind
        self.index = index
        self.msisdn = ""
        self.amount = amount_of(index) if kind == "payment" else 0
        self.scheduled = scheduled
        self.t1 = self.r1 = self.t2 = self.r2 = 0.0   # first MO sent / reply; second MO sent / reply
        self.ref = None
        self.error = None
        self.detail = None
        self.step = 0

    def record(self) -> list:
        return [self.kind, self.index, self.msisdn, self.amount, round(self.scheduled, 6), round(self.t1, 6),
                round(self.r1, 6), round(self.t2, 6), round(self.r2, 6), self.ref, self.error, self.detail]


class Handset:
    __slots__ = ("msisdn", "e164", "pin", "used", "conv", "deadline", "retired", "awaiting")

    def __init__(self, msisdn: str, pin: str):
        self.msisdn = msisdn
        self.e164 = e164(msisdn)
        self.pin = pin
        self.used: dict[str, int] = {}     # text -> TP-MRs used with it
        self.conv: Conversation | None = None
        self.deadline = 0.0
        self.retired = False
        self.awaiting: Conversation | None = None   # its confirmation timed out; a late one is still money

    def room(self, text: str, n: int = 1) -> bool:
        return self.used.get(text, 0) + n <= TPMR_VALUES

    def take_mr(self, text: str) -> int:
        n = self.used.get(text, 0)
        self.used[text] = n + 1
        return n


# ---------------------------------------------------------------- the SMSC side

class SmscConnection(asyncio.Protocol):
    """One bind of the platform: framing, bind, window of our deliver_sm."""

    def __init__(self, worker: "Worker"):
        self.worker = worker
        self.reader = P.PduReader()
        self.transport = None
        self.bound = False
        self.pending: dict[int, dict] = {}     # our deliver_sm awaiting a response: sequence -> fields
        self.sequence = 0
        self.out: list[bytes] = []

    @property
    def outstanding(self) -> int:
        return len(self.pending)

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.worker.connections.append(self)

    def connection_lost(self, exc):
        self.bound = False
        if self in self.worker.connections:
            self.worker.connections.remove(self)
        self.worker.counters["connections_lost"] += 1
        # unacknowledged: delivered again over another bind, as an SMSC does
        # (the TP-MR lets the platform recognise what it had already recorded)
        self.worker.redeliver(list(self.pending.values()))
        self.pending.clear()

    def next_sequence(self) -> int:
        self.sequence = self.sequence + 1 if self.sequence < 0x7FFFFFFF else 1
        return self.sequence

    def write(self, raw: bytes) -> None:
        self.out.append(raw)
        self.worker.schedule_flush()

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except P.FramingError:
            self.transport.abort()
            return
        w = self.worker
        for raw in frames:
            _length, command_id, status, sequence = _HEADER.unpack_from(raw, 0)
            if command_id == _DELIVER_SM_RESP:
                fields = self.pending.pop(sequence, None)
                if status != P.ESME_ROK and fields is not None:
                    w.refused(fields, status)
                continue
            if command_id == _SUBMIT_SM:
                w.on_submit(self, raw, sequence)
            elif command_id == _ENQUIRE_LINK:
                self.write(P.encode_pdu("enquire_link_resp", sequence))
            elif command_id == _BIND_TRANSCEIVER:
                self.on_bind(raw, sequence)
            elif command_id == _UNBIND:
                self.write(P.encode_pdu("unbind_resp", sequence))
                self.flush()
                self.bound = False
                self.transport.close()
            elif command_id == _GENERIC_NACK:
                w.counters["generic_nacks"] += 1
                self.pending.pop(sequence, None)
            elif command_id & 0x80000000:
                pass     # enquire_link_resp and the like
            else:
                self.write(P.generic_nack(sequence, P.ESME_RINVCMDID))
        if w.queue and self.bound and self.outstanding < w.window:
            w.pump()

    def on_bind(self, raw: bytes, sequence: int) -> None:
        pdu = P.decode_pdu(raw)
        if self.bound:
            self.write(P.encode_pdu("bind_transceiver_resp", sequence, P.ESME_RALYBND))
            return
        if (pdu.system_id or "") != self.worker.system_id or (pdu.password or "") != self.worker.password:
            self.write(P.encode_pdu("bind_transceiver_resp", sequence, P.ESME_RBINDFAIL))
            return
        self.write(P.encode_pdu("bind_transceiver_resp", sequence, system_id="LOADGEN",
                                sc_interface_version=0x34))
        self.bound = True
        self.worker.pump()


class Worker:
    def __init__(self, args, handsets: list[Handset], owned: list[Handset]):
        self.args = args
        self.index = args.index
        self.procs = args.procs
        self.window = args.window
        self.system_id = args.system_id
        self.password = args.password
        self.receipts = not args.no_receipts
        self.receipt_delay = args.receipt_delay
        self.loop = asyncio.get_running_loop()
        self.connections: list[SmscConnection] = []
        self.queue: deque[dict] = deque()          # deliver_sm fields waiting for room in a window
        self.receipt_queue: deque = deque()        # (due, fields)
        self.by_address: dict[str, int] = {}
        for i, h in enumerate(handsets):
            self.by_address[h.msisdn] = self.by_address[h.e164] = self.by_address["+" + h.e164] = i
        self.handsets = handsets
        self.owned = owned
        self.message_numbers = (self.index << 40) | (os.getpid() & 0xFFFF) << 24
        self.counters = {k: 0 for k in ("mo_sent", "mt_received", "receipts_sent", "deliver_sm_errors",
                                        "generic_nacks", "forwarded", "stray_replies", "connections_lost",
                                        "undecodable")}
        self._flush_due = False
        self._forward: dict[int, list] = {}        # owner -> replies to forward this loop turn
        self._unsent: deque[tuple[bytes, str]] = deque()
        self._retry_due = False
        self._parts: dict[tuple, dict] = {}       # long MTs being reassembled
        self._parts_of: dict[str, object] = {}      # MO text -> its one SMS part
        self._stamp = (0, "")                       # receipts' date, per minute
        self.sock = None
        self.run: Run | None = None
        self.late: list[Conversation] = []     # confirmations that came after their wait timed out

    # ------------------------------------------------------------ I/O plumbing

    def schedule_flush(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        for conn in self.connections:
            conn.flush()
        if self._forward:
            forward, self._forward = self._forward, {}
            for owner, items in forward.items():
                for i in range(0, len(items), 100):      # datagrams well under the socket's limit
                    self._unsent.append((json.dumps(items[i:i + 100], ensure_ascii=False).encode(),
                                         self.socket_path(owner)))
        self._send_forwards()

    def _send_forwards(self) -> None:
        """Send what waits for another worker; if its socket buffer is full,
        try again in a millisecond (a reply is never dropped)."""
        unsent = self._unsent
        while unsent:
            data, path = unsent[0]
            try:
                self.sock.sendto(data, path)
            except BlockingIOError:
                if not self._retry_due:
                    self._retry_due = True
                    self.loop.call_later(0.001, self._retry_forwards)
                return
            except OSError:
                self.counters["forward_errors"] = self.counters.get("forward_errors", 0) + 1
            unsent.popleft()

    def _retry_forwards(self) -> None:
        self._retry_due = False
        self._send_forwards()

    def socket_path(self, index: int) -> str:
        return os.path.join(self.args.workdir, f"loadgen-{index}.sock")

    def bound(self) -> list[SmscConnection]:
        return [c for c in self.connections if c.bound]

    def send_mo(self, handset: Handset, text: str) -> None:
        """Queue one MO; it goes out at once when a window has room."""
        mr = handset.take_mr(text)
        part = self._parts_of.get(text)
        if part is None:
            parts = split_message(text, mr)
            if len(parts) != 1:
                raise ValueError(f"a load-generator MO must fit one SMS: {text!r}")
            part = self._parts_of[text] = parts[0]      # one part: the same whatever the TP-MR
        self.queue.append(dict(source_addr_ton=1, source_addr_npi=1, source_addr=handset.e164,
                               dest_addr_ton=0, dest_addr_npi=1, destination_addr=SERVICE_NUMBER,
                               esm_class=part.esm_class, data_coding=part.data_coding,
                               short_message=part.short_message, user_message_reference=mr))
        self.counters["mo_sent"] += 1
        self.pump()

    def pump(self) -> None:
        queue = self.queue
        if not queue:
            return
        conns = [c for c in self.connections if c.bound and c.outstanding < self.window]
        while queue and conns:
            for conn in conns:
                while queue and len(conn.pending) < self.window:
                    fields = queue.popleft()
                    sequence = conn.next_sequence()
                    conn.pending[sequence] = fields
                    conn.write(P.encode_pdu("deliver_sm", sequence, **fields))
                if not queue:
                    break
            conns = [c for c in conns if c.outstanding < self.window]

    def refused(self, fields: dict, status: int) -> None:
        """A deliver_sm answered with an error: a temporary one (throttled,
        queue full, try later) is delivered again after 50 ms; a permanent
        one is counted and dropped (the conversation then times out)."""
        self.counters["deliver_sm_errors"] += 1
        if status in _PERMANENT:
            self.counters["deliver_sm_rejected"] = self.counters.get("deliver_sm_rejected", 0) + 1
            return
        self.loop.call_later(0.05, self.redeliver, [fields])

    def redeliver(self, items: list[dict]) -> None:
        if items:
            self.counters["redelivered"] = self.counters.get("redelivered", 0) + len(items)
            self.queue.extendleft(reversed(items))
            self.pump()

    def on_submit(self, conn: SmscConnection, raw: bytes, sequence: int) -> None:
        now = clock()
        try:
            pdu = P.decode_pdu(raw)
        except P.PduError as err:
            self.counters["undecodable"] += 1
            conn.write(P.encode_pdu("submit_sm_resp", sequence, err.status))
            return
        self.message_numbers += 1
        message_id = f"{self.message_numbers:016x}"
        conn.write(P.encode_pdu("submit_sm_resp", sequence, message_id=message_id))
        self.counters["mt_received"] += 1
        destination = pdu.destination_addr or ""
        if self.receipts and (pdu.registered_delivery or 0) & P.REGISTERED_DELIVERY_MASK == 1:
            self.queue_receipt(now, message_id, destination, pdu.source_addr or "")
        decoded = decode_message(pdu)
        text = decoded.text
        if decoded.concat is not None:
            ref, total, seq = decoded.concat
            key = (destination, ref)
            parts = self._parts.setdefault(key, {})
            parts[seq] = text
            if len(parts) < total:
                return
            del self._parts[key]
            text = "".join(parts[i] for i in sorted(parts))
        i = self.by_address.get(destination)
        if i is None:
            self.counters["stray_replies"] += 1
            return
        owner = i % self.procs
        if owner == self.index:
            self.on_reply(self.handsets[i], text, now)
        else:
            self.counters["forwarded"] += 1
            self._forward.setdefault(owner, []).append([i, text, now])
            self.schedule_flush()

    def queue_receipt(self, now: float, message_id: str, handset_addr: str, platform_addr: str) -> None:
        minute = int(time.time() // 60)
        if self._stamp[0] != minute:
            self._stamp = (minute, time.strftime("%y%m%d%H%M", time.gmtime(minute * 60)))
        stamp = self._stamp[1]
        body = (f"id:{message_id} sub:001 dlvrd:001 submit date:{stamp} done date:{stamp} "
                f"stat:DELIVRD err:000 text:").encode("ascii")
        fields = dict(source_addr_ton=1, source_addr_npi=1, source_addr=handset_addr, dest_addr_ton=0,
                      dest_addr_npi=1, destination_addr=platform_addr, esm_class=P.ESM_CLASS_DELIVERY_RECEIPT,
                      data_coding=P.DATA_CODING_GSM, short_message=body, receipted_message_id=message_id,
                      message_state=P.MESSAGE_STATE_DELIVERED)
        if self.receipt_delay <= 0:
            self.queue.append(fields)
            self.counters["receipts_sent"] += 1
            self.pump()
            return
        self.receipt_queue.append((now + self.receipt_delay, fields))

    async def receipt_ticker(self) -> None:
        """Receipts fall due in the order they were queued (one delay for all):
        one timer for all of them, every 10 ms."""
        while True:
            await asyncio.sleep(0.01)
            now = clock()
            rq = self.receipt_queue
            moved = False
            while rq and rq[0][0] <= now:
                self.queue.append(rq.popleft()[1])
                self.counters["receipts_sent"] += 1
                moved = True
            if moved:
                self.pump()

    def on_forwarded(self, data: bytes) -> None:
        for i, text, t in json.loads(data):
            self.on_reply(self.handsets[i], text, t)
        self.schedule_flush()

    # ------------------------------------------------------------ conversations

    def on_reply(self, h: Handset, text: str, t: float) -> None:
        c = h.conv
        if c is None:
            if h.awaiting is not None and REFERENCE.search(text):
                h.awaiting.ref = REFERENCE.search(text).group(0)
                self.late.append(h.awaiting)
                h.awaiting = None
            else:
                self.counters["stray_replies"] += 1
            return
        if c.kind == "payment":
            if c.step == 1:
                c.r1 = t
                if not PROMPT.search(text):
                    return self.finish(h, "refused_at_prompt", text)
                c.step = 2
                c.t2 = clock()
                self.send_mo(h, h.pin)
                h.deadline = c.t2 + self.timeout
                return
            c.r2 = t
            found = REFERENCE.search(text)
            if found is None:
                return self.finish(h, "refused", text)
            c.ref = found.group(0)
            return self.finish(h, None)
        c.r1 = t
        if not BALANCE.search(text):
            return self.finish(h, "unexpected_reply", text)
        self.finish(h, None)

    def start(self, h: Handset, c: Conversation) -> None:
        h.conv = c
        c.msisdn = h.msisdn
        c.step = 1
        c.t1 = clock()
        h.deadline = c.t1 + self.timeout
        if c.kind == "payment":
            text = f"ZF {self.args.merchant} {format_amount(c.amount)}"
            while not h.room(text):          # this amount's TP-MRs are spent: another amount
                c.index += self.procs * 1000
                c.amount = amount_of(c.index)
                text = f"ZF {self.args.merchant} {format_amount(c.amount)}"
        else:
            text = next((v for v in KEYWORD_VARIANTS if h.room(v)), KEYWORD_VARIANTS[0])
        self.send_mo(h, text)

    def usable(self, h: Handset, kind: str) -> bool:
        if h.retired:
            return False
        if kind == "payment":
            return h.room(h.pin)
        return any(h.room(v) for v in KEYWORD_VARIANTS)

    def finish(self, h: Handset, error: str | None, detail: str | None = None) -> None:
        c = h.conv
        h.conv = None
        c.error = error
        c.detail = detail[:200] if detail else None
        if error in ("no_prompt", "no_confirmation", "no_reply"):
            h.retired = True     # a late reply would be read as the answer to its next message
            if error == "no_confirmation":
                h.awaiting = c
        self.run.done(h, c)

    async def timeout_ticker(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            run = self.run
            if run is None:
                continue
            now = clock()
            for h in list(run.busy):
                c = h.conv
                if c is not None and now > h.deadline:
                    if c.kind == "keyword":
                        self.finish(h, "no_reply", f"no answer within {self.timeout} s")
                    elif c.step == 1:
                        self.finish(h, "no_prompt", f"no answer to ZF within {self.timeout} s")
                    else:
                        self.finish(h, "no_confirmation", f"no answer to the PIN within {self.timeout} s")

    @property
    def timeout(self) -> float:
        return self.run.timeout if self.run else 30.0


class Run:
    """One measured run in this worker: closed loop (`rate` None) or open loop."""

    def __init__(self, worker: Worker, cmd: dict):
        self.worker = worker
        self.id = cmd["id"]
        self.kind = cmd["workload"]
        self.count = int(cmd["count"])
        self.rate = cmd.get("rate")
        self.limit = cmd.get("limit") or 0.0
        self.timeout = float(cmd.get("timeout", 30.0))
        self.start_at = float(cmd.get("start_at") or clock())
        self.records: list[Conversation] = []
        self.busy: set[Handset] = set()
        self.idle: deque[Handset] = deque()
        self.backlog: deque[Conversation] = deque()
        self.arrived = 0
        self.offered = 0
        self.waited = self.max_backlog = self.dropped = 0
        self.next_index = cmd.get("first_index", 0)
        self.finished = asyncio.get_running_loop().create_future()
        usable = [h for h in worker.owned if worker.usable(h, self.kind)]
        concurrency = cmd.get("concurrency")
        self.lines = usable[:concurrency] if concurrency is not None else usable
        self.deadline = self.start_at + self.limit if self.limit else float("inf")
        self.t0 = self.start_at
        self.cpu0 = _cpu()

    def new_conversation(self, scheduled: float) -> Conversation:
        c = Conversation(self.kind, self.next_index, scheduled)
        self.next_index += self.worker.procs
        return c

    async def go(self) -> dict:
        w = self.worker
        w.run = self
        delay = self.start_at - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        self.t0 = clock()
        if not self.lines or self.count <= 0:
            self.finished.set_result(None)
        elif self.rate is None:
            self.offered = 0
            for h in self.lines:
                self.launch_closed(h)
            self.check_done()
        else:
            self.idle.extend(self.lines)
            if self.limit:
                self.count = min(self.count, max(1, int(self.rate * self.limit)))
            self.offered = self.count
            self.tick()
        await self.finished
        w.run = None
        return self.summary()

    # closed loop
    def launch_closed(self, h: Handset) -> None:
        if self.offered < self.count and clock() < self.deadline and self.worker.usable(h, self.kind):
            self.offered += 1
            self.busy.add(h)
            self.worker.start(h, self.new_conversation(clock()))

    # open loop
    def tick(self) -> None:
        w = self.worker
        now = clock()
        due = min(self.count, int((now - self.t0) * self.rate) + 1)
        while self.arrived < due:
            c = self.new_conversation(self.t0 + self.arrived / self.rate)
            self.arrived += 1
            while self.idle and not w.usable(self.idle[0], self.kind):
                self.idle.popleft()
            if self.idle:
                h = self.idle.popleft()
                self.busy.add(h)
                w.start(h, c)
            elif not self.busy:
                self.abandon(c, "no_handset", "every handset timed out or was rested")
            else:
                self.backlog.append(c)
                self.waited += 1
                if len(self.backlog) > self.max_backlog:
                    self.max_backlog = len(self.backlog)
        w.schedule_flush()
        if self.arrived < self.count:
            next_due = self.t0 + self.arrived / self.rate
            w.loop.call_later(max(0.0, min(next_due - clock(), 0.05)), self.tick)
            return
        if self.backlog and self.limit:
            w.loop.call_later(max(0.0, self.t0 + self.limit - clock()), self.drop_backlog)
        self.check_done()

    def drop_backlog(self) -> None:
        self.dropped = len(self.backlog)
        self.backlog.clear()
        self.check_done()

    def abandon(self, c: Conversation, kind: str, detail: str) -> None:
        c.error, c.detail = kind, detail
        self.records.append(c)

    def done(self, h: Handset, c: Conversation) -> None:
        self.records.append(c)
        self.busy.discard(h)
        if self.rate is None:
            self.launch_closed(h)
        elif self.worker.usable(h, self.kind):
            if self.backlog:
                self.busy.add(h)
                nxt = self.backlog.popleft()
                self.worker.start(h, nxt)
            else:
                self.idle.append(h)
        elif not self.busy and not self.idle:
            while self.backlog:
                self.abandon(self.backlog.popleft(), "no_handset", "every handset timed out or was rested")
        self.check_done()

    def check_done(self) -> None:
        if self.finished.done():
            return
        if self.rate is None:
            if not self.busy:
                self.finished.set_result(None)
        elif self.arrived >= self.count and not self.backlog and not self.busy:
            self.finished.set_result(None)

    def summary(self) -> dict:
        ends = [max(c.r1, c.r2) for c in self.records if c.error is None]
        return {"id": self.id, "t0": self.t0, "t_end": max(ends, default=self.t0), "offered": self.offered,
                "waited": self.waited, "max_backlog": self.max_backlog, "dropped": self.dropped,
                "concurrency": len(self.lines), "cpu_s": round(_cpu() - self.cpu0, 3),
                "records": [c.record() for c in self.records]}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- control

class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, worker: Worker):
        self.worker = worker

    def datagram_received(self, data, addr):
        self.worker.on_forwarded(data)


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def main_async(args) -> None:
    with open(args.handsets, encoding="utf-8") as f:
        listing = json.load(f)
    handsets = [Handset(entry["msisdn"], entry["pin"]) for entry in listing]
    owned = [h for i, h in enumerate(handsets) if i % args.procs == args.index]
    worker = Worker(args, handsets, owned)
    loop = worker.loop
    server = await loop.create_server(lambda: SmscConnection(worker), "127.0.0.1", args.port, backlog=64)
    port = server.sockets[0].getsockname()[1]
    path = worker.socket_path(args.index)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(path)
    sock.setblocking(False)
    transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(worker), sock=sock)
    worker.sock = sock
    tickers = [loop.create_task(worker.receipt_ticker()), loop.create_task(worker.timeout_ticker())]
    emit({"event": "listening", "index": args.index, "port": port, "pid": os.getpid(), "owned": len(owned)})

    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["cmd"]
        if op == "status":
            emit({"event": "status", "id": cmd.get("id"), "bound": len(worker.bound()),
                  "queued": len(worker.queue), "receipts_due": len(worker.receipt_queue),
                  "outstanding": sum(c.outstanding for c in worker.connections), "counters": worker.counters,
                  "rested": sum(1 for h in owned if not h.retired and not worker.usable(h, cmd.get("kind", "payment")))})
        elif op == "run":
            run = Run(worker, cmd)
            result = await run.go()
            out = os.path.join(args.workdir, f"run-{cmd['id']}-{args.index}.json")
            with open(out, "w", encoding="utf-8") as f:
                json.dump(result, f, ensure_ascii=False)
            emit({"event": "done", "id": cmd["id"], "path": out})
        elif op == "late":
            emit({"event": "late", "id": cmd.get("id"),
                  "records": [c.record() for c in worker.late]})
            worker.late.clear()
        elif op == "stop":
            break
    for t in tickers:
        t.cancel()
    for conn in list(worker.connections):
        conn.flush()
        conn.transport.abort()
    server.close()
    transport.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    emit({"event": "stopped"})


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.smsc_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--handsets", required=True, help="JSON list of {msisdn, pin}")
    p.add_argument("--workdir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--window", type=int, default=64, help="deliver_sm outstanding per bind")
    p.add_argument("--system-id", default="telecom-pay")
    p.add_argument("--password", default="secret")
    p.add_argument("--merchant", default="M888")
    p.add_argument("--receipt-delay", type=float, default=0.2)
    p.add_argument("--no-receipts", action="store_true")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop when it is installed")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.uvloop:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
    profile_dir = os.environ.get("TELECOM_PAY_LOADGEN_PROFILE")
    if not profile_dir:
        asyncio.run(main_async(args))
        return
    # where the worker's own CPU goes (pstats files, one per worker)
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(main_async(args))
    finally:
        profiler.disable()
        profiler.dump_stats(os.path.join(profile_dir, f"loadgen-{args.index}.pstats"))


if __name__ == "__main__":
    main()
