"""Named crash points, for the crash tests (tests/reliability/).

The reliability tests need the daemon to die at one exact step of a flow
(after a commit, before its answer) the way a power cut would: no cleanup,
no `finally`, no flushing. `crash_point(name)` marks such a step; when the
point is armed the process sends itself SIGKILL there.

Armed only by the processes that serve traffic (`telecom-pay run`, and the
one-shot jobs such as `telecom-pay settle`), from the environment or the
config, never on import, so a test process that runs the daemon in-process
cannot kill itself:

    TELECOM_PAY_CRASH_AT=after_ledger_commit       die at the first hit
    TELECOM_PAY_CRASH_AT=after_mo_recorded:2       die at the second hit
    [debug] crash_at = "after_0210_received"       the same from config

Unarmed (production) the cost of a point is one global None check.
"""
from __future__ import annotations

import os
import signal

ENV = "TELECOM_PAY_CRASH_AT"

#: Every point placed in the code; arming an unknown name is refused, so a
#: typo in a test cannot pass as "the daemon survived".
POINTS = frozenset({
    "after_mo_recorded",        # channels/smpp/app.py: MO recorded, before deliver_sm_resp
    "after_ledger_commit",      # telecom_pay/ledger/ledger.py: a money COMMIT returned, callers not answered
    "after_outbox_commit",      # channels/smpp/app.py: outbox row committed, before submit_sm
    "after_submit_sm_resp",     # channels/smpp/app.py: SMSC accepted, before the outbox marks it sent
    "after_0200_sent",          # bank_bridge/port.py: the bank answered the 0200, before the 0210 is handled
    "after_0210_received",      # bank_bridge/port.py: the 0210 is recorded, before the ledger post
    "settlement_after_attempt", # telecom_pay/settlement.py: payout attempt booked, before the bank credit
})

#: name -> hits left before the kill; None when nothing is armed (read it, never set it: `arm`)
armed: dict[str, int] | None = None


def parse(spec: str) -> dict[str, int]:
    """"a,b:3" -> {"a": 1, "b": 3}."""
    points: dict[str, int] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, nth = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"unknown crash point {name!r} (known: {', '.join(sorted(POINTS))})")
        try:
            hits = int(nth) if nth else 1
        except ValueError:
            raise ValueError(f"crash point {item!r}: the hit count must be an integer") from None
        if hits < 1:
            raise ValueError(f"crash point {item!r}: the hit count starts at 1")
        points[name] = hits
    return points


def arm(spec: str | None) -> None:
    """Arm the points named in `spec` (disarm all when empty)."""
    global armed
    armed = parse(spec) if spec else None


def arm_from(settings) -> None:
    """The environment wins over `[debug] crash_at` in the config."""
    spec = os.environ.get(ENV) or settings.section("debug").get("crash_at")
    try:
        arm(spec)
    except ValueError as exc:
        from telecom_pay.config import ConfigError
        raise ConfigError(str(exc)) from exc


def crash_point(name: str) -> None:
    if armed is None or name not in armed:
        return
    armed[name] -= 1
    if armed[name] <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
