"""`[merchant_api]`: the SP payment API's clock window, a request's life,
and how callbacks are retried (README.md here). Read in one place so the
web routes, the confirmation path and the callback sender agree."""
from __future__ import annotations

from dataclasses import dataclass

from .signing import DEFAULT_WINDOW

DEFAULT_RETRY_SCHEDULE = (10, 30, 60, 300, 900, 3600)


@dataclass(frozen=True)
class MerchantApiSettings:
    window: int = DEFAULT_WINDOW           # seconds a signed request's timestamp may be off
    expiry_seconds: int = 300              # a payment request's life
    callback_timeout: float = 10.0         # one callback attempt, connection to answer
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE   # seconds
    give_up_after: float = 86400            # then the notification is failed
    concurrency: int = 8                   # callbacks in flight in this instance
    per_merchant: int = 2                  # of which to one merchant: a hanging one cannot take them all
    poll_interval: float = 1.0             # the sender's and the expiry sweep's period
    enabled: bool = True                   # the sender and the sweep run beside the web server

    @classmethod
    def from_config(cls, section: dict) -> "MerchantApiSettings":
        schedule = tuple(float(s) for s in section.get("retry_schedule", DEFAULT_RETRY_SCHEDULE)) \
            or DEFAULT_RETRY_SCHEDULE
        return cls(window=int(section.get("window", DEFAULT_WINDOW)),
                   expiry_seconds=int(section.get("expiry_seconds", 300)),
                   callback_timeout=float(section.get("callback_timeout", 10.0)),
                   retry_schedule=schedule, give_up_after=float(section.get("give_up_after", 86400)),
                   concurrency=max(1, int(section.get("concurrency", 8))),
                   per_merchant=max(1, int(section.get("per_merchant", 2))),
                   poll_interval=float(section.get("poll_interval", 1.0)),
                   enabled=bool(section.get("enabled", True)))

    @classmethod
    def of(cls, settings) -> "MerchantApiSettings":
        return cls.from_config(settings.section("merchant_api"))

    @property
    def claim_seconds(self) -> float:
        """How long a claimed callback is this instance's: past the attempt's
        timeout, so another instance never sends it while this one does."""
        return 2 * self.callback_timeout + 30
