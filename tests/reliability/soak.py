"""The random soak: a stream of payments (ZF) and top-ups (CZ) from several
subscribers, SMSC re-deliveries switched on, while the daemon (its own
process) is killed with SIGKILL at random moments and started again each
time. At the end every promise of tests/reliability/promises.py must hold.

    python -m tests.reliability.soak --kills 10 --duration 120 --seed 7 --config postgres
    make soak SOAK_ARGS="--kills 20 --duration 300"

The same seed gives the same kill moments, amounts and subscribers' choices
(the daemon's own timing still varies). A short form runs inside `make
test` (tests/reliability/test_soak.py).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections import deque
from dataclasses import dataclass, field

# Nothing here imports twisted.internet.reactor at module level: `main`
# installs the asyncio reactor first, pytest-twisted has already done so.

SUBSCRIBERS = [("13800138000", "6222020000001234"), ("13900139000", "6222020000005678"),
               ("13700137000", "6222020000009012"), ("13600136000", "6222020000003456")]


@dataclass
class SoakReport:
    seed: int
    config: str
    kills: int = 0
    requests: int = 0
    posted: dict = field(default_factory=dict)
    owed: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"soak {self.config} seed={self.seed}: {self.kills} kills, {self.requests} requests",
                 f"posted: {self.posted}"]
        if self.owed:
            lines.append("still owed at the end: " + ", ".join(self.owed))
        lines += ["broken: " + p for p in self.problems] or ["every promise kept"]
        return "\n".join(lines)


async def soak(*, config: str = "sqlite", kills: int = 3, duration: float = 20.0, seed: int | None = None,
               subscribers: int = 3, duplicates: float = 0.3) -> SoakReport:
    from tests.reliability import promises
    from tests.reliability.rig import Rig
    from tests.reliability.scenes import prepare_many

    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    report = SoakReport(seed, config)
    rig = await Rig.up(config)
    try:
        who = SUBSCRIBERS[:subscribers]
        subs = await prepare_many(rig, who, card_balance=1_000_000, topups=(50_000,))
        rig.smsc.faults.add("duplicate", probability=duplicates)     # the SMSC re-delivers acknowledged MOs
        proc = await rig.start()
        stop = asyncio.Event()
        streams = [asyncio.ensure_future(_stream(sub, random.Random(rng.random()), stop, report)) for sub in subs]
        loop = asyncio.get_running_loop()
        began = loop.time()
        slot = duration / max(1, kills)
        for i in range(kills):
            await asyncio.sleep(max(0.0, began + (i + rng.uniform(0.2, 0.8)) * slot - loop.time()))
            proc.kill()                               # kill -9, at whatever step it is in
            report.kills += 1
            await rig.unbound()
            proc = await rig.start()
        await asyncio.sleep(max(0.0, began + duration - loop.time()))
        stop.set()
        await asyncio.gather(*streams, return_exceptions=True)
        await promises.eventually(lambda: all(m.acked_at is not None or m.failed for s in subs
                                              for m in s.handset.sent), 20)
        report.owed = await promises.settle(rig, timeout=30)
        report.problems = await promises.check(rig, [m for m, _ in who])
        report.posted = promises.tally(rig, [m for m, _ in who])
        if report.problems:
            report.problems.append("daemon logs:\n" + rig.logs())
        return report
    finally:
        await rig.close()


TP_MR_SPAN = 240             # MOs a handset sends within one dedup window at most (of 256 TP-MRs)
TP_MR_HORIZON_S = 125.0      # the daemon's dedup window (120 s), and a little more


async def _stream(sub, rng: random.Random, stop: asyncio.Event, report: SoakReport) -> None:
    """One subscriber's requests, one conversation at a time; replies that
    do not come (the daemon is down) are not waited for beyond a few seconds."""
    from tests.reliability.scenes import reply

    sent: deque[float] = deque()
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        # A handset's TP-MR is 8 bits: its 257th MO repeats the first one's,
        # and the same text with it inside the dedup window is (rightly) a
        # re-delivery. A phone cannot outpace that horizon; neither does this one.
        while len(sent) >= TP_MR_SPAN and loop.time() - sent[0] < TP_MR_HORIZON_S:
            await asyncio.sleep(min(1.0, TP_MR_HORIZON_S - (loop.time() - sent[0])))
            if stop.is_set():
                return
        while len(sent) >= TP_MR_SPAN:
            sent.popleft()
        sent.extend((loop.time(), loop.time()))
        if rng.random() < 0.7:
            command = f"ZF M001 {rng.randint(100, 300) / 100:.2f}"
        else:
            command = f"CZ {rng.randint(100, 500) / 100:.2f}"
        report.requests += 1
        for text in (command, sub.pin):
            d = sub.handset.send(text)
            d.addErrback(lambda f: None)
            try:
                await reply(sub.handset, timeout=4.0)
            except Exception:         # no answer in time: the daemon is being restarted
                pass
            if stop.is_set():
                return
        await asyncio.sleep(rng.uniform(0.0, 0.2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10, help="kill -9 the daemon this many times (default 10)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    p.add_argument("--seed", type=int, help="random seed (default: a new one, printed)")
    p.add_argument("--config", choices=["sqlite", "postgres"], default="sqlite",
                   help="sqlite: the embedded default; postgres: PostgreSQL + Redis from the test environment")
    p.add_argument("--subscribers", type=int, default=3, choices=range(1, len(SUBSCRIBERS) + 1))
    p.add_argument("--duplicates", type=float, default=0.3, help="share of MOs the SMSC re-delivers (default 0.3)")
    args = p.parse_args(argv)

    from telecom_pay.daemon import install_asyncio_reactor
    install_asyncio_reactor()
    from twisted.internet import task
    from telecom_pay.aio import as_deferred

    outcome: dict = {}

    async def run(_reactor):
        outcome["report"] = await soak(config=args.config, kills=args.kills, duration=args.duration,
                                       seed=args.seed, subscribers=args.subscribers, duplicates=args.duplicates)
    try:
        task.react(lambda reactor: as_deferred(run(reactor)))
    except SystemExit as exc:
        if "report" not in outcome:
            return int(exc.code or 1)
    report = outcome["report"]
    print(report.summary())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
