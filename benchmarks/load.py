"""The load driver: complete SMS payments from simulated handsets.

One payment is the subscriber's whole conversation: `ZF <merchant> <amount>`,
the platform's PIN prompt, the 6-digit PIN, the confirmation carrying the
transaction reference. The driver talks to the SMSC simulator's handset API
in the same process (the simulator's HTTP control API would be the
bottleneck), so MOs reach the daemon as fast as an SMSC can send them.

A handset holds one conversation at a time (the platform keeps one pending
payment per subscriber). Two ways to drive them:

- closed loop (`run_closed`): `concurrency` handsets pay back to back, as
  fast as the platform answers;
- open loop (`run_open`): payments arrive on a fixed schedule (`rate` per
  second) whatever the platform does; an arrival that finds no idle handset
  waits for one, and that wait counts in its end-to-end latency.

A handset whose conversation timed out is retired: a late reply would
otherwise be read as the answer to its next payment. A handset is also
rested once it sent `MO_LIMIT` messages: its 8-bit TP-MR (message reference)
would wrap, and the platform, which identifies an SMSC re-delivery by sender,
text and TP-MR within its dedup window (`[sms] dedup_window`, 10 minutes),
would take the next identical PIN for a re-delivery of the earlier one. Give
the benchmark enough accounts for the payments it makes (about one per 127). Late confirmations are
collected at the end (`collect_late`) so the ledger can be reconciled.
"""
from __future__ import annotations

import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from twisted.internet import defer

from telecom_pay.money import format_amount

MO_LIMIT = 254                          # under 256: TP-MR values before they repeat
PROMPT = re.compile(r"6位支付密码|6-digit PIN")
REFERENCE = re.compile(r"\bT[2-9A-HJ-NP-Z]{7}\b")


MIN_AMOUNT, MAX_AMOUNT = 100, 2000     # 1.00 .. 20.00


def amount_of(index: int) -> int:
    """Varied amounts from 1.00 to 20.00 (minor units), reproducible."""
    return MIN_AMOUNT + (index * 7919) % (MAX_AMOUNT - MIN_AMOUNT + 1)


@dataclass
class Payment:
    index: int
    msisdn: str
    amount: int
    scheduled: float            # when it was due (open loop) or started (closed loop)
    started: float = 0.0        # `ZF` sent
    prompted: float = 0.0       # PIN prompt arrived
    pin_sent: float = 0.0
    done: float = 0.0           # confirmation (or the failure) arrived
    ref: str | None = None
    error: str | None = None    # a short kind: "no_prompt", "refused", ...
    detail: str | None = None   # the text that explains it

    @property
    def confirmed(self) -> bool:
        return self.ref is not None


@dataclass
class RunRecord:
    mode: str
    rate: float | None
    concurrency: int
    payments: list[Payment] = field(default_factory=list)
    t0: float = 0.0
    t_end: float = 0.0
    offered: int = 0            # payments due in the run (open loop) or started (closed loop)
    max_backlog: int = 0        # open loop: most arrivals waiting for an idle handset at once
    waited: int = 0             # open loop: arrivals that had to wait for one
    dropped: int = 0            # open loop: arrivals still waiting when the last one was due

    @property
    def confirmed(self) -> list[Payment]:
        return [p for p in self.payments if p.confirmed]

    @property
    def failed(self) -> list[Payment]:
        return [p for p in self.payments if not p.confirmed]

    def errors(self) -> dict[str, int]:
        return dict(Counter(p.error for p in self.failed))

    def error_samples(self, limit: int = 5) -> list[str]:
        out = []
        for p in self.failed:
            if len(out) >= limit:
                break
            out.append(f"{p.error}: {p.detail or ''}".strip())
        return out


class _Line:
    """One subscriber's handset and what the driver knows of it."""

    @property
    def usable(self) -> bool:
        """Not retired, and room for a payment's two MOs before TP-MR repeats."""
        return not self.retired and self.mos + 2 <= MO_LIMIT

    def __init__(self, handset, pin: str):
        self.handset = handset
        self.pin = pin
        self.retired = False
        self.mos = 0                          # MO messages sent
        self.awaiting: Payment | None = None   # a payment whose PIN went out but whose answer is late


class PaymentDriver:
    def __init__(self, simulator, subscribers, merchant_code: str, *, timeout: float = 30.0,
                 clock=time.perf_counter):
        self.sim = simulator
        self.merchant_code = merchant_code
        self.timeout = timeout
        self.clock = clock
        self.lines = [_Line(simulator.handset(s.msisdn), s.pin) for s in subscribers]
        self._next_index = 0

    # ------------------------------------------------------------ one payment

    async def pay(self, line: _Line, payment: Payment) -> Payment:
        """Run one conversation on `line`; never raises."""
        hs = line.handset
        try:
            payment.started = self.clock()
            prompt_wait = hs.wait_for_reply(timeout=self.timeout)
            self._send(line, f"ZF {self.merchant_code} {format_amount(payment.amount)}", payment)
            try:
                prompt = await prompt_wait
            except defer.TimeoutError:
                return self._fail(line, payment, "no_prompt", f"no answer to ZF within {self.timeout} s")
            payment.prompted = self.clock()
            if not PROMPT.search(prompt):
                return self._fail(line, payment, "refused_at_prompt", prompt)
            answer_wait = hs.wait_for_reply(timeout=self.timeout)
            payment.pin_sent = self.clock()
            self._send(line, line.pin, payment)
            try:
                answer = await answer_wait
            except defer.TimeoutError:
                line.awaiting = payment
                return self._fail(line, payment, "no_confirmation", f"no answer to the PIN within {self.timeout} s")
            payment.done = self.clock()
            found = REFERENCE.search(answer)
            if found is None:
                payment.error, payment.detail = "refused", answer
            else:
                payment.ref = found.group(0)
            return payment
        except Exception as exc:  # noqa: BLE001 - a driver bug must not hang the run
            return self._fail(line, payment, "driver_error", repr(exc))

    def _send(self, line: _Line, text: str, payment: Payment) -> None:
        def undelivered(failure):
            payment.detail = f"MO not delivered: {failure.getErrorMessage()}"
        line.mos += 1
        line.handset.send(text).addErrback(undelivered)

    def _fail(self, line: _Line, payment: Payment, kind: str, detail: str) -> Payment:
        payment.done = self.clock()
        payment.error = kind
        payment.detail = payment.detail or detail
        if kind in ("no_prompt", "no_confirmation", "driver_error"):
            line.retired = True
        return payment

    def _payment(self, msisdn: str, scheduled: float) -> Payment:
        i = self._next_index
        self._next_index += 1
        return Payment(i, msisdn, amount_of(i), scheduled)

    @property
    def usable(self) -> list[_Line]:
        return [ln for ln in self.lines if ln.usable]

    @property
    def rested(self) -> int:
        """Handsets taken out of use because their TP-MR would repeat."""
        return sum(1 for ln in self.lines if not ln.retired and not ln.usable)

    # ------------------------------------------------------------ closed loop

    def run_closed(self, count: int, concurrency: int, *, limit: float | None = None,
                   mode: str = "full_speed") -> defer.Deferred:
        """`count` payments from `concurrency` handsets paying back to back,
        none started after `limit` seconds; fires with a RunRecord."""
        lines = self.usable[:concurrency]
        run = RunRecord(mode, None, len(lines))
        if not lines or count <= 0:
            return defer.succeed(run)
        remaining = [count]
        run.t0 = self.clock()
        deadline = run.t0 + limit if limit else float("inf")

        async def worker(line: _Line):
            while remaining[0] > 0 and line.usable and self.clock() < deadline:
                remaining[0] -= 1
                p = await self.pay(line, self._payment(line.handset.msisdn, self.clock()))
                run.payments.append(p)

        def finished(_):
            run.offered = len(run.payments)
            run.t_end = max((p.done for p in run.payments), default=run.t0)
            return run
        return defer.DeferredList([defer.Deferred.fromCoroutine(worker(ln)) for ln in lines]).addCallback(finished)

    # ------------------------------------------------------------ open loop

    def run_open(self, count: int, rate: float, reactor, *, limit: float | None = None) -> defer.Deferred:
        """Payments arriving at `rate` per second, `count` of them or as many
        as arrive within `limit` seconds; fires with a RunRecord. Arrivals
        still waiting for an idle handset `limit` seconds into the run are
        dropped (counted, never sent)."""
        idle = deque(self.usable)
        run = RunRecord("fixed_rate", rate, len(idle))
        if limit:
            count = min(count, max(1, int(rate * limit)))
        run.offered = count
        if not idle or count <= 0:
            return defer.succeed(run)
        done = defer.Deferred()
        backlog: deque[Payment] = deque()
        state = {"arrived": 0, "outstanding": 0}
        run.t0 = self.clock()

        def start(line: _Line, p: Payment) -> None:
            p.msisdn = line.handset.msisdn
            state["outstanding"] += 1
            defer.Deferred.fromCoroutine(self.pay(line, p)).addCallback(finish, line)

        def finish(p: Payment, line: _Line) -> None:
            state["outstanding"] -= 1
            run.payments.append(p)
            if line.usable:
                if backlog:
                    start(line, backlog.popleft())
                else:
                    idle.append(line)
            elif not self.usable:
                while backlog:       # no handset left: what waits can never start
                    abandon(backlog.popleft(), "no_handset", "every handset timed out or was rested")
            check_done()

        def abandon(p: Payment, kind: str, detail: str) -> None:
            p.done, p.error, p.detail = self.clock(), kind, detail
            run.payments.append(p)

        def check_done() -> None:
            if state["arrived"] == count and not backlog and not state["outstanding"] and not done.called:
                run.t_end = max((q.done for q in run.payments), default=self.clock())
                done.callback(run)

        def tick() -> None:
            due = min(count, int((self.clock() - run.t0) * rate) + 1)
            while state["arrived"] < due:
                p = self._payment("", run.t0 + state["arrived"] / rate)
                state["arrived"] += 1
                if idle:
                    start(idle.popleft(), p)
                elif not self.usable:
                    abandon(p, "no_handset", "every handset timed out or was rested")
                else:
                    backlog.append(p)
                    run.waited += 1
                    run.max_backlog = max(run.max_backlog, len(backlog))
            if state["arrived"] < count:
                next_due = run.t0 + state["arrived"] / rate
                reactor.callLater(max(0.0, next_due - self.clock()), tick)
                return
            if backlog and limit:
                reactor.callLater(max(0.0, run.t0 + limit - self.clock()), drop_backlog)
            check_done()

        def drop_backlog() -> None:
            run.dropped = len(backlog)   # the platform could not take them within the run
            backlog.clear()
            check_done()

        tick()
        return done

    # ------------------------------------------------------------ the end

    def collect_late(self) -> list[Payment]:
        """Confirmations that arrived after their wait timed out (read from
        the retired handsets' inboxes): the money did move."""
        late = []
        for line in self.lines:
            p = line.awaiting
            if p is None:
                continue
            d = line.handset.wait_for_reply(lambda text: REFERENCE.search(text) is not None, timeout=0)
            got = []
            d.addCallbacks(got.append, lambda f: None)
            if not got:
                d.cancel()
            else:
                p.ref = REFERENCE.search(got[0]).group(0)
                late.append(p)
        return late
