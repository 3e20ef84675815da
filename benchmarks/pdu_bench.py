"""Per-PDU CPU of the SMPP codec (channels.smpp.pdu), encode and decode apart.

    python -m benchmarks.pdu_bench [--number N] [--repeat R] [--json PATH]

Each case is a PDU of the payment path as the daemon and the simulator see
it: an MO deliver_sm with a command text, a delivery receipt, a USSD
deliver_sm, the reply submit_sm (UCS2, receipt requested), their responses
and the link checks. For every case it times ``encode_pdu`` and
``decode_pdu`` through the public API and, when the module keeps it, through
the smpplib reference path (``_encode_pdu_smpplib`` / ``_decode_pdu_smpplib``),
so one run shows both sides on the same machine under the same load. The
figure is the best of R repeats of N calls, in microseconds of this
process's CPU time per call (`time.process_time`: on a shared host, wall
time would count the other processes' turns), the best repeat being the one
least disturbed by them (caches, frequency).

``--session`` also times the ESME side of one payment step through
`channels.smpp.client.EsmeBind` (session, codec, events, Deferreds, timers
on a fake clock, logging to no observer): an MO deliver_sm in and its
deliver_sm_resp out, the reply submit_sm out and its submit_sm_resp in, the
delivery receipt in and its response out -- six PDUs. The SMSC side of that
exchange is prepared bytes, so the figure is the daemon's share alone.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import timeit

from channels.smpp import pdu as P

REPLY_TEXT = "T7QK2M9P 已支付 12.34 元给 M888，余额 87.66 元".encode("utf-16-be")

CASES: list[tuple[str, str, dict]] = [
    ("deliver_sm (MO)", "deliver_sm", dict(
        service_type="", source_addr_ton=1, source_addr_npi=1, source_addr="8613900000001",
        dest_addr_ton=0, dest_addr_npi=1, destination_addr="10658888", esm_class=0,
        data_coding=0, short_message=b"ZF M888 12.34", user_message_reference=17)),
    ("deliver_sm (receipt)", "deliver_sm", dict(
        source_addr_ton=1, source_addr_npi=1, source_addr="8613900000001",
        dest_addr_ton=0, dest_addr_npi=1, destination_addr="10658888", esm_class=P.ESM_CLASS_DELIVERY_RECEIPT,
        short_message=b"id:0a1b2c3d sub:001 dlvrd:001 submit date:2612011200 done date:2612011200 "
                      b"stat:DELIVRD err:000 text:",
        receipted_message_id="0a1b2c3d", message_state=P.MESSAGE_STATE_DELIVERED)),
    ("deliver_sm (USSD)", "deliver_sm", dict(
        service_type="USSD", source_addr_ton=1, source_addr_npi=1, source_addr="8613900000001",
        destination_addr="188", data_coding=0, short_message=b"*188#",
        ussd_service_op=P.USSD_PSSR_IND, its_session_info=0x1200)),
    ("deliver_sm_resp", "deliver_sm_resp", dict(message_id="")),
    ("submit_sm (reply)", "submit_sm", dict(
        service_type="", source_addr_ton=0, source_addr_npi=1, source_addr="10658888",
        dest_addr_ton=1, dest_addr_npi=1, destination_addr="8613900000001",
        registered_delivery=P.REGISTERED_DELIVERY_RECEIPT, esm_class=0, data_coding=P.DATA_CODING_UCS2,
        short_message=REPLY_TEXT)),
    ("submit_sm_resp", "submit_sm_resp", dict(message_id="0a1b2c3d")),
    ("enquire_link", "enquire_link", {}),
    ("enquire_link_resp", "enquire_link_resp", {}),
    ("generic_nack", "generic_nack", {}),
]


def _paths() -> dict[str, tuple]:
    paths = {"api": (P.encode_pdu, P.decode_pdu)}
    ref_enc = getattr(P, "_encode_pdu_smpplib", None)
    ref_dec = getattr(P, "_decode_pdu_smpplib", None)
    if ref_enc is not None and ref_dec is not None:
        paths["smpplib"] = (ref_enc, ref_dec)
    return paths


def _best_us(fn, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)) / number * 1e6


def run(number: int, repeat: int) -> dict:
    results = []
    paths = _paths()
    for label, command, fields in CASES:
        row = {"pdu": label, "command": command}
        for path, (enc, dec) in paths.items():
            raw = enc(command, 123456, **fields)
            dec(raw)  # warm every cache once
            row[f"{path}_encode_us"] = round(_best_us(lambda: enc(command, 123456, **fields), number, repeat), 2)
            row[f"{path}_decode_us"] = round(_best_us(lambda: dec(raw), number, repeat), 2)
        row["octets"] = len(raw)
        results.append(row)
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "number": number,
        "repeat": repeat,
        "paths": list(paths),
        "results": results,
    }


class _Transport:
    def __init__(self):
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def getPeer(self):
        return "smsc"

    def loseConnection(self) -> None:
        pass

    abortConnection = loseConnection


class _App:
    """Records nothing, answers every MO with one reply at once."""

    def __init__(self):
        self.bind = None

    def message_received(self, bind, event):
        bind.submit(event.msisdn, "T7QK2M9P 已支付 12.34 元给 M888，余额 87.66 元", handle=event.sequence)

    def receipt_received(self, bind, event):
        return None

    def submit_result(self, bind, event):
        pass

    def link_up(self, bind):
        pass

    def link_down(self, bind):
        pass


def session_cycle(cycles: int, repeat: int) -> dict:
    """µs of one MO -> ack -> MT -> submit_sm_resp -> DLR -> ack step through EsmeBind."""
    import struct

    from twisted.internet.task import Clock

    from channels.smpp.client import EsmeBind, EsmeProtocol
    from channels.smpp.session import EsmeConfig

    clock = Clock()
    app = _App()
    bind = EsmeBind(EsmeConfig(system_id="bench", window=50), app, clock)
    proto = EsmeProtocol(bind)
    transport = _Transport()
    proto.makeConnection(transport)
    bind_seq = struct.unpack_from(">L", transport.written[-1], 12)[0]
    proto.dataReceived(P.encode_pdu("bind_transceiver_resp", bind_seq, system_id="SMSC"))
    total = cycles * repeat + 1
    mos = [P.encode_pdu("deliver_sm", n, source_addr_ton=1, source_addr_npi=1, source_addr="8613900000001",
                        destination_addr="10658888", short_message=b"ZF M888 12.34", user_message_reference=n % 65536)
           for n in range(1, total + 1)]
    dlrs = [P.encode_pdu("deliver_sm", 10_000_000 + n, source_addr="8613900000001", destination_addr="10658888",
                         esm_class=P.ESM_CLASS_DELIVERY_RECEIPT, receipted_message_id=f"{n:08x}", message_state=2,
                         short_message=f"id:{n:08x} sub:001 dlvrd:001 submit date:2612011200 done date:2612011200 "
                                       f"stat:DELIVRD err:000 text:".encode())
            for n in range(1, total + 1)]
    resp_header = struct.Struct(">LLLL")

    def step(i: int) -> None:
        transport.written.clear()
        proto.dataReceived(mos[i])
        out = b"".join(transport.written)
        pos = seq = 0
        while pos < len(out):           # find the submit_sm among what was written
            length, command_id, _, sequence = resp_header.unpack_from(out, pos)
            if command_id == 0x00000004:
                seq = sequence
            pos += length
        assert seq, "no submit_sm written"
        body = b"%08x\x00" % i
        proto.dataReceived(resp_header.pack(16 + len(body), 0x80000004, 0, seq) + body)
        proto.dataReceived(dlrs[i])
        clock.advance(0.0001)

    step(0)
    best = None
    i = 1
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(cycles):
            step(i)
            i += 1
        elapsed = time.process_time() - start
        best = elapsed if best is None else min(best, elapsed)
    return {"cycles": cycles, "repeat": repeat, "us_per_step": round(best / cycles * 1e6, 1)}


def _table(report: dict) -> str:
    paths = report["paths"]
    head = ["PDU", "octets"]
    for path in paths:
        head += [f"{path} enc µs", f"{path} dec µs"]
    if "smpplib" in paths:
        head.append("speed-up enc+dec")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for row in report["results"]:
        cells = [row["pdu"], str(row["octets"])]
        for path in paths:
            cells += [f"{row[f'{path}_encode_us']:.2f}", f"{row[f'{path}_decode_us']:.2f}"]
        if "smpplib" in paths:
            ref = row["smpplib_encode_us"] + row["smpplib_decode_us"]
            new = row["api_encode_us"] + row["api_decode_us"]
            cells.append(f"{ref / new:.1f}x")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per repeat")
    parser.add_argument("--repeat", type=int, default=7, help="repeats; the best is reported")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--session", action="store_true",
                        help="also time one payment step (6 PDUs) through EsmeBind")
    args = parser.parse_args(argv)
    report = run(args.number, args.repeat)
    print(_table(report))
    if args.session:
        report["session"] = session_cycle(max(100, args.number // 10), args.repeat * 3)
        print(f"EsmeBind payment step (MO+ack, MT+resp, DLR+ack): {report['session']['us_per_step']} µs")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
