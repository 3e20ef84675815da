"""python -m simulators.bank --iso tcp:8583 --http tcp:8081 [--cards cards.json]"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bank-simulator", description="ISO 8583 issuer host simulator")
    parser.add_argument("--iso", default="tcp:8583:interface=127.0.0.1", help="ISO 8583 server endpoint")
    parser.add_argument("--http", default="tcp:8581:interface=127.0.0.1", help="control API endpoint")
    parser.add_argument("--cards", help="card fixture file (JSON list or TOML [[cards]])")
    parser.add_argument("--settlement-dir", help="where end-of-day settlement files are written")
    parser.add_argument("--bank-code", default="bank")
    args = parser.parse_args(argv)

    from twisted.internet import asyncioreactor
    try:
        asyncioreactor.install()
    except Exception:               # a reactor is already installed (called from the CLI)
        pass
    from twisted.internet import reactor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from simulators.bank.simulator import BankSimulator
    sim = BankSimulator({"cards_file": args.cards, "settlement_dir": args.settlement_dir,
                         "bank_code": args.bank_code}, reactor)

    def started(_):
        logging.getLogger("simulators.bank").info("bank simulator: ISO 8583 on %s, control API on %s",
                                                  args.iso, args.http)

    def failed(failure):
        logging.getLogger("simulators.bank").error("cannot start: %s", failure.getErrorMessage())
        reactor.stop()

    from twisted.internet import defer
    defer.gatherResults([sim.listen(args.iso), sim.listen_http(args.http)],
                        consumeErrors=True).addCallbacks(started, failed)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
