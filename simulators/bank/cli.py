"""`telecom-pay bank-sim`: the ISO 8583 bank simulator alone (endpoints and
settlement directory from the config's [demo] and [bank_sim] tables)."""
from __future__ import annotations

import argparse

from telecom_pay import config as config_mod
from telecom_pay.cli import EXTRA_COMMANDS


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iso", help="ISO 8583 endpoint (default from [demo] bank_iso)")
    p.add_argument("--http", help="control API endpoint (default from [demo] bank_http)")
    p.add_argument("--cards", help="card fixture (JSON or TOML); default: simulators/bank/sample-cards.json")


def _run(args) -> int:
    from pathlib import Path
    from simulators.bank.__main__ import main
    settings = config_mod.load(args.config)
    demo, cfg = settings.section("demo"), settings.section("bank_sim")
    argv = ["--iso", args.iso or demo.get("bank_iso", "tcp:8583:interface=127.0.0.1"),
            "--http", args.http or demo.get("bank_http", "tcp:8026:interface=127.0.0.1"),
            "--cards", args.cards or str(Path(__file__).with_name("sample-cards.json")),
            "--settlement-dir", cfg.get("settlement_dir", "var/settlement"),
            "--bank-code", cfg.get("bank_code", "bank")]
    return main(argv)


EXTRA_COMMANDS["bank-sim"] = ("the ISO 8583 bank simulator alone", _configure, _run)
