"""The sample shop's part in `telecom-pay demo`: merchant `[demo.shop]
merchant_code` (SHOP1) selling through the daemon's SP payment API.

Its API secret is derived from the daemon's PIN key as the platform derives
it (signing.derive_secret): the demo runs on the embedded default, whose
PIN key is public, so this is a development convenience only; a real
merchant is given its secret once, at onboarding.
"""
from __future__ import annotations

from simulators.merchant import server
from simulators.merchant.shop import ShopConfig
from telecom_pay.aio import wait_deferred
from telecom_pay.merchants import signing


def _port(endpoint: str) -> str:
    return endpoint.split(":")[1]


def shop_config(settings, demo: dict, api_base: str) -> ShopConfig | str:
    """The shop's settings from the daemon's config, or why there are none."""
    cfg = demo.get("shop") or {}
    code = str(cfg.get("merchant_code", "SHOP1")).upper()
    merchant = next((m for m in settings.merchants if str(m.get("code", "")).upper() == code), None)
    if merchant is None or not merchant.get("api_key_id"):
        return f"no [[merchants]] entry {code} with an api_key_id ([demo.shop] merchant_code)"
    key_id = str(merchant["api_key_id"])
    return ShopConfig(api_base=api_base, key_id=key_id, secret=signing.derive_secret(settings.pin_key, key_id),
                      public_url=str(cfg.get("public_url", "")),
                      handset_url=f"http://127.0.0.1:{_port(demo.get('smsc_http', 'tcp:8025'))}/",
                      window=int(settings.section("merchant_api").get("window", signing.DEFAULT_WINDOW)))


async def start(settings, demo: dict, reactor, stoppers: list, api_base: str) -> list[str]:
    config = shop_config(settings, demo, api_base)
    if isinstance(config, str):
        return [f"sample shop: not started ({config})"]
    cfg = demo.get("shop") or {}
    try:
        running = await wait_deferred(server.start(config, reactor, listen=cfg.get("endpoint", server.DEFAULT_LISTEN),
                                                   database=cfg.get("database", server.DEFAULT_DATABASE)))
    except Exception as exc:       # the port is taken: the rest of the demo still runs
        return [f"sample shop: not started ({exc})"]
    stoppers.append(running.stop)
    return [f"sample shop: http://127.0.0.1:{running.port_number}/",
            f"  merchant {str(cfg.get('merchant_code', 'SHOP1')).upper()} (key {config.key_id}); "
            f"its payments are confirmed on the web handset {config.handset_url}"]
