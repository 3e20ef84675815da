"""python -m simulators.merchant: the sample shop alone, against a running platform.

    python -m simulators.merchant --api http://127.0.0.1:8080 --key-id mk_... --secret ms_... \\
        --listen tcp:8090:interface=127.0.0.1 --public-url http://127.0.0.1:8090

Without --key-id/--secret the shop is the config's `[demo.shop]` merchant
(SHOP1) and derives its secret from the config's PIN key: a development
convenience for the embedded default only, as in `telecom-pay demo`.
"""
from __future__ import annotations

import argparse
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulators.merchant", description="the sample shop (an SP merchant)")
    p.add_argument("--config", help="telecom-pay config for the defaults (default: the embedded one)")
    p.add_argument("--api", help="the platform's web base URL (default: http://127.0.0.1:<[web] endpoint port>)")
    p.add_argument("--key-id", help="the merchant's API key id (mk_...)")
    p.add_argument("--secret", help="the merchant's API secret (ms_...)")
    p.add_argument("--listen", help="the shop's endpoint (default [demo.shop] endpoint, tcp:8090:interface=127.0.0.1)")
    p.add_argument("--public-url", help="where the platform reaches the shop (notify URL = this + /notify)")
    p.add_argument("--handset-url", help="the SMSC simulator's web handset (default from [demo] smsc_http)")
    p.add_argument("--database", help="the shop's SQLite file (default var/merchant-shop/shop.sqlite3)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from twisted.internet import asyncioreactor
    try:
        asyncioreactor.install()
    except Exception:               # a reactor is already installed
        pass
    from twisted.internet import reactor

    from simulators.merchant import server
    from simulators.merchant.demo import shop_config
    from telecom_pay import config as config_mod

    settings = config_mod.load(args.config)
    demo = dict(settings.section("demo"))
    web_port = str(settings.section("web").get("endpoint", "tcp:8080")).split(":")[1]
    api = args.api or f"http://127.0.0.1:{web_port}"
    config = shop_config(settings, demo, api)
    if isinstance(config, str):
        if not (args.key_id and args.secret):
            print(f"error: give --key-id and --secret ({config})", file=sys.stderr)
            return 2
        from simulators.merchant.shop import ShopConfig
        config = ShopConfig(api_base=api, key_id=args.key_id, secret=args.secret, public_url="")
    if args.key_id:
        from telecom_pay.merchants import signing
        config.key_id = args.key_id
        config.secret = signing.derive_secret(settings.pin_key, args.key_id)    # unless --secret
    if args.secret:
        config.secret = args.secret
    if args.public_url:
        config.public_url = args.public_url
    if args.handset_url:
        config.handset_url = args.handset_url
    shop_cfg = demo.get("shop") or {}
    listen = args.listen or shop_cfg.get("endpoint", server.DEFAULT_LISTEN)
    if not config.public_url and listen.split(":")[1] != "0":   # port 0: server.start names it once bound
        config.public_url = f"http://127.0.0.1:{listen.split(':')[1]}"
    database = args.database or shop_cfg.get("database", server.DEFAULT_DATABASE)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def started(running):
        print(f"sample shop: http://127.0.0.1:{running.port_number}/ (platform {config.api_base}, "
              f"key {config.key_id}, callbacks at {config.notify_url})", flush=True)

    def failed(failure):
        print(f"sample shop: cannot start: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: server.start(config, reactor, listen=listen, database=database)
                            .addCallbacks(started, failed))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
