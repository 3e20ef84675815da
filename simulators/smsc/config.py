"""Configuration of the SMSC simulator (the ``[smsc_sim]`` table of the TOML config)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping


@dataclass
class SmscConfig:
    """What the simulated SMSC accepts and how it behaves.

    ``accounts`` maps an ESME ``system_id`` to its password; a bind with an
    unknown system_id is refused with ESME_RINVSYSID, a wrong password with
    ESME_RINVPASWD. Times are in seconds.
    """

    system_id: str = "SMSC-SIM"
    accounts: dict[str, str] = field(default_factory=lambda: {"telecom-pay": "secret"})
    #: The platform's short code: where handsets send MO SMS and USSD.
    service_number: str = "10658888"
    delivery_receipt_delay: float = 0.2
    #: Period of the SMSC's own enquire_link; 0 disables it.
    enquire_link_interval: float = 30.0
    #: How long the SMSC waits for a deliver_sm_resp / enquire_link_resp.
    response_timeout: float = 10.0
    #: Wait before re-delivering an MO that was not acknowledged.
    redelivery_delay: float = 2.0
    max_delivery_attempts: int = 5
    #: How MOs and USSD reach the ESME: "deliver_sm" or "data_sm" (receipts are always deliver_sm).
    mo_command: str = "deliver_sm"
    #: Outstanding deliver_sm per bind, as a real SMSC windows them; the rest wait.
    window: int = 10
    #: A connection that has not bound after this long is closed; 0 disables.
    bind_timeout: float = 30.0
    traffic_capacity: int = 10_000
    default_language: str = "zh"
    #: Handsets put the phone's TP-MR in each MO as user_message_reference. Most real
    #: SMSCs pass none on: switch it off to test the platform against such a peer.
    message_reference: bool = True
    #: Handsets registered at start: [{"msisdn": ..., "language": ...}].
    handsets: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "SmscConfig":
        """Build from a config table; unknown keys are an error (typos must not pass silently)."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown smsc_sim settings: {', '.join(sorted(unknown))}")
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        if not self.accounts:
            raise ValueError("smsc_sim.accounts must name at least one system_id")
        for system_id, password in self.accounts.items():
            if not system_id or len(system_id) > 15 or len(password) > 8:
                raise ValueError(f"bad SMPP account {system_id!r}: system_id 1..15, password up to 8 chars")
        for name in ("delivery_receipt_delay", "enquire_link_interval", "response_timeout",
                     "redelivery_delay", "bind_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"smsc_sim.{name} must not be negative")
        if self.response_timeout == 0:
            raise ValueError("smsc_sim.response_timeout must be positive")
        if self.mo_command not in ("deliver_sm", "data_sm"):
            raise ValueError("smsc_sim.mo_command must be 'deliver_sm' or 'data_sm'")
        if self.window < 1:
            raise ValueError("smsc_sim.window must be at least 1")
        if self.max_delivery_attempts < 1:
            raise ValueError("smsc_sim.max_delivery_attempts must be at least 1")
        if not isinstance(self.message_reference, bool):
            raise ValueError("smsc_sim.message_reference must be true or false")
        if self.traffic_capacity < 1:
            raise ValueError("smsc_sim.traffic_capacity must be at least 1")
