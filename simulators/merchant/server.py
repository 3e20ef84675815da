"""The sample shop on its own endpoint: what the demo and the command line start."""
from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString

from simulators.merchant.shop import Shop, ShopConfig, shop_site
from simulators.merchant.store import ShopStore

DEFAULT_DATABASE = "var/merchant-shop/shop.sqlite3"
DEFAULT_LISTEN = "tcp:8090:interface=127.0.0.1"


@dataclass
class RunningShop:
    shop: Shop
    port: object                  # the listening port

    @property
    def port_number(self) -> int:
        return self.port.getHost().port

    def stop(self) -> defer.Deferred:
        d = defer.maybeDeferred(self.port.stopListening)
        d.addBoth(lambda _: self.shop.store.close())
        return d


@defer.inlineCallbacks
def start(config: ShopConfig, reactor, *, listen: str = DEFAULT_LISTEN, database: str = DEFAULT_DATABASE):
    store = ShopStore(database)
    shop = Shop(config, store, reactor=reactor)
    try:
        port = yield serverFromString(reactor, listen).listen(shop_site(shop, listen))
    except BaseException:
        store.close()
        raise
    if not config.public_url:     # listening on port 0 (tests): the port is known now
        config.public_url = f"http://127.0.0.1:{port.getHost().port}"
    return RunningShop(shop, port)
