"""`BankSimulator`: the Python face of the simulated issuer, used by tests,
the `telecom-pay` CLI and `python -m simulators.bank`."""
from __future__ import annotations

import collections
import json
import time
import tomllib
from pathlib import Path
from typing import Any

from twisted.internet.endpoints import serverFromString

from bank_bridge.spec import mask_pan
from simulators.bank.accounts import Card, card_from_json
from simulators.bank.control import control_app
from simulators.bank.faults import Faults
from simulators.bank.host import IssuerFactory
from simulators.bank.issuer import Issuer
from simulators.bank.settlement import settlement_csv, write_settlement_file
from simulators.control_guard import GuardedSite, endpoint_hosts


class BankSimulator:
    """config keys (all optional): bank_code, cards (list of card objects),
    cards_file (JSON list or TOML with [[cards]]), settlement_dir,
    max_messages (traffic record size, default 10000)."""

    def __init__(self, config: dict[str, Any] | None = None, reactor=None):
        config = dict(config or {})
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        self.bank_code = str(config.get("bank_code", "bank"))
        self.settlement_dir = config.get("settlement_dir")
        self.issuer = Issuer()
        self.faults = Faults()
        self.messages: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=int(config.get("max_messages", 10_000)))
        self.connections: set = set()
        for entry in config.get("cards", []):
            self.issuer.add_card(card_from_json(entry))
        if config.get("cards_file"):
            self.load_cards(config["cards_file"])

    # -- network ------------------------------------------------------------

    def listen(self, endpoint: str):
        """ISO 8583 host on a server endpoint string ("tcp:8583",
        "tcp:0:interface=127.0.0.1"); Deferred[IListeningPort]."""
        return serverFromString(self.reactor, endpoint).listen(IssuerFactory(self))

    def listen_http(self, endpoint: str, *, hosts: tuple[str, ...] = ()):
        """The JSON control API; Deferred[IListeningPort]. `hosts`: names it
        is reached by besides loopback (see simulators.control_guard)."""
        return serverFromString(self.reactor, endpoint).listen(
            GuardedSite(control_app(self).resource(), endpoint_hosts(endpoint, hosts)))

    def drop_connections(self) -> None:
        for protocol in list(self.connections):
            protocol.transport.abortConnection()

    # -- cards --------------------------------------------------------------

    def add_card(self, pan: str, expiry: str, card_type: str = "debit", balance: int = 0, limit: int = 0,
                 status: str = "active") -> Card:
        return self.issuer.add_card(card_from_json({"pan": pan, "expiry": expiry, "type": card_type,
                                                    "balance": balance, "limit": limit, "status": status}))

    def card(self, pan: str) -> Card:
        return self.issuer.cards[pan]

    def load_cards(self, path: str | Path) -> None:
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        entries = tomllib.loads(text).get("cards", []) if path.suffix == ".toml" else json.loads(text)
        if isinstance(entries, dict):
            entries = entries.get("cards", [])
        for entry in entries:
            self.issuer.add_card(card_from_json(entry))

    # -- records ------------------------------------------------------------

    def record(self, direction: str, peer: str, message: dict[str, str] | None, *, note: str = "",
               mti: str | None = None, stan: str | None = None) -> None:
        fields = {}
        if message is not None:
            fields = {k: v for k, v in message.items() if k != "t"}
            if "2" in fields:
                fields["2"] = mask_pan(fields["2"])
            mti, stan = message.get("t"), message.get("11")
        self.messages.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.reactor.seconds())),
                              "direction": direction, "peer": peer, "mti": mti, "stan": stan,
                              "response_code": fields.get("39"), "fields": fields, "note": note})

    def settlement_rows(self, date: str) -> list[dict[str, Any]]:
        return self.issuer.settlement_rows(date)

    def settlement_csv(self, date: str) -> str:
        return settlement_csv(self.settlement_rows(date))

    def write_settlement_file(self, date: str, directory: str | Path | None = None) -> Path:
        directory = directory or self.settlement_dir
        if not directory:
            raise ValueError("no settlement directory configured")
        return write_settlement_file(self.settlement_rows(date), directory, date, self.bank_code)
