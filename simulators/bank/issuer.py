"""The issuer's decisions, without I/O: given a decoded request and the time,
the response (and the card movements it causes).

- 0800: sign-on, sign-off, echo -> 0810 "00".
- 0100 zero-amount account verification: checks the card and registers the
  agreement token of field 48; 0110 carries the card type in field 62.
- 0200 with processing code 000000 debits the card, 200000 credits it. The
  card is found by field 2 (PAN) or by a registered token (field 48).
- 0420/0421 reverse the original named in field 90, exactly once; 0430 "00"
  (or "25" when the original is unknown: it is remembered so that the
  original, should it arrive late, is refused and never moves money).
- The same STAN from the same terminal on the same day gets the first answer
  again without a second movement.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bank_bridge import spec
from simulators.bank.accounts import Card, Movement


@dataclass
class Transaction:
    card: Card | None
    movement: Movement | None
    response_code: str


class Issuer:
    def __init__(self) -> None:
        self.cards: dict[str, Card] = {}
        self._tokens: dict[str, Card] = {}
        self._answers: dict[tuple[str, str, str, str], dict[str, str]] = {}     # duplicate detection
        self._transactions: dict[tuple[str, str, str], Transaction] = {}       # (terminal, mti, stan)
        self._reversed: set[tuple[str, str, str]] = set()
        self._auth_ids = 0
        self._day = ""

    def _new_day(self, day: str) -> None:
        """Duplicate detection is per day: forget older answers so a
        long-running simulator does not grow without bound."""
        self._day = day
        self._answers = {k: v for k, v in self._answers.items() if k[3] == day}

    # -- cards ------------------------------------------------------------------

    def add_card(self, card: Card) -> Card:
        if card.pan in self.cards:
            raise KeyError(f"card {card.masked} exists")
        self.cards[card.pan] = card
        return card

    def remove_card(self, pan: str) -> None:
        card = self.cards.pop(pan)
        for token in card.tokens:
            self._tokens.pop(token, None)

    def _find_card(self, message: dict[str, str]) -> Card | None:
        if "2" in message:
            return self.cards.get(message["2"])
        token = message.get("48")
        return self._tokens.get(token) if token else None

    # -- requests ---------------------------------------------------------------

    def handle(self, message: dict[str, str], now: float, *, decline_all: str | None = None,
               reversal_answer: str | None = None) -> dict[str, str]:
        mti = message["t"]
        day = time.strftime("%Y-%m-%d", time.localtime(now))
        if day != self._day:
            self._new_day(day)
        dup_key = (mti[:2], message.get("41", ""), message["11"], day)
        if mti in (spec.AUTH_REQUEST, spec.FINANCIAL_REQUEST) and dup_key in self._answers:
            return dict(self._answers[dup_key])
        answer = self._answer_base(message)
        if mti == spec.NETWORK_REQUEST:
            answer["39"] = spec.RC_APPROVED
            return answer
        if mti in (spec.REVERSAL_ADVICE, spec.REVERSAL_ADVICE_REPEAT):
            # a forced answer (a fault) leaves the original standing
            answer["39"] = reversal_answer if reversal_answer is not None else self._reverse(message, now, day)
            return answer
        if decline_all is not None:
            answer["39"] = decline_all
        elif mti == spec.AUTH_REQUEST:
            answer.update(self._verify(message, now))
        else:
            answer["39"] = self._financial(message, now, day)
        if answer["39"] == spec.RC_APPROVED and mti == spec.FINANCIAL_REQUEST:
            self._auth_ids += 1
            answer["38"] = f"{self._auth_ids % 1_000_000:06d}"
        self._answers[dup_key] = dict(answer)
        return answer

    def _answer_base(self, message: dict[str, str]) -> dict[str, str]:
        answer = {"t": spec.response_mti(message["t"])}
        for echoed in ("3", "4", "7", "11", "12", "13", "32", "37", "41", "49", "70", "90"):
            if echoed in message:
                answer[echoed] = message[echoed]
        return answer

    def _card_problem(self, card: Card | None, now: float) -> str | None:
        if card is None:
            return spec.RC_INVALID_CARD
        if card.status != "active":
            return spec.RC_RESTRICTED
        if card.expiry < time.strftime("%y%m", time.localtime(now)):
            return spec.RC_EXPIRED_CARD
        return None

    def _verify(self, message: dict[str, str], now: float) -> dict[str, str]:
        card = self.cards.get(message.get("2", ""))
        problem = self._card_problem(card, now)
        if problem is None and message.get("14") != card.expiry:
            problem = spec.RC_EXPIRED_CARD if message.get("14", "") < card.expiry else spec.RC_INVALID_CARD
        if problem is not None:
            return {"39": problem}
        token = message.get("48")
        if token:
            card.tokens.add(token)
            self._tokens[token] = card
        return {"39": spec.RC_APPROVED, "62": card.card_type.upper()}

    def _financial(self, message: dict[str, str], now: float, day: str) -> str:
        terminal, stan = message.get("41", ""), message["11"]
        key = (terminal, spec.FINANCIAL_REQUEST, stan)
        if key in self._reversed:       # its reversal came first: never move money now
            return spec.RC_INVALID_TRANSACTION
        card = self._find_card(message)
        code = self._card_problem(card, now)
        amount = int(message.get("4", "0"))
        processing = message.get("3", "")
        if code is None and (amount <= 0 or processing not in (spec.PROC_PURCHASE, spec.PROC_CREDIT)):
            code = spec.RC_INVALID_TRANSACTION
        if code is None and processing == spec.PROC_PURCHASE and card.available < amount:
            code = spec.RC_INSUFFICIENT_FUNDS
        movement = None
        if code is None:
            code = spec.RC_APPROVED
            kind = "debit" if processing == spec.PROC_PURCHASE else "credit"
            change = -amount if kind == "debit" else amount
            card.balance += change
            movement = Movement(at=_iso(now), date=day, kind=kind, amount=change, stan=stan,
                                rrn=message.get("37", ""), terminal_id=terminal)
            card.movements.append(movement)
        self._transactions[key] = Transaction(card, movement, code)
        return code

    def _reverse(self, message: dict[str, str], now: float, day: str) -> str:
        try:
            original = spec.OriginalData.parse(message.get("90", ""))
        except spec.MessageFormatError:
            return spec.RC_FORMAT_ERROR
        key = (message.get("41", ""), original.mti, original.stan)
        transaction = self._transactions.get(key)
        if transaction is None:
            self._reversed.add(key)
            return spec.RC_ORIGINAL_NOT_FOUND   # unable to locate the original; it will never be honoured
        if key in self._reversed:
            return spec.RC_APPROVED     # already reversed: acknowledge again, no second movement
        self._reversed.add(key)
        movement = transaction.movement
        if movement is not None and not movement.reversed:
            movement.reversed = True
            card = transaction.card
            card.balance -= movement.amount
            card.movements.append(Movement(at=_iso(now), date=day, kind="reversal", amount=-movement.amount,
                                           stan=message["11"], rrn=movement.rrn,
                                           terminal_id=movement.terminal_id))
        return spec.RC_APPROVED

    # -- settlement -------------------------------------------------------------

    def settlement_rows(self, date: str) -> list[dict[str, Any]]:
        """Approved movements of `date` that stand. Reversed movements (and
        the reversals themselves) are excluded: the file lists what settles."""
        rows = []
        for card in self.cards.values():
            for m in card.movements:
                if m.date == date and m.kind in ("debit", "credit") and not m.reversed:
                    rows.append({"date": m.date, "stan": m.stan, "rrn": m.rrn, "card_last4": card.pan[-4:],
                                 "amount": abs(m.amount), "type": m.kind, "response": m.response_code,
                                 "at": m.at})
        rows.sort(key=lambda r: (r["at"], r["stan"]))
        for row in rows:
            del row["at"]
        return rows


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
