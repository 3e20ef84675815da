"""SMSC simulator: an SMPP 3.4 server with simulated handsets, faults and a traffic record.

    sim = SmscSimulator(SmscConfig(accounts={"telecom-pay": "secret"}), reactor)
    yield sim.listen("tcp:2775")          # the platform's ESME binds here
    yield sim.listen_http("tcp:8025")      # JSON control API (simulators.smsc.http)
    phone = sim.handset("8613800138000")
    yield phone.send("YE")                 # MO to the service number, fired on ack
    reply = yield phone.wait_for_reply(timeout=5)
"""
from .config import SmscConfig
from .faults import Fault, FaultSet
from .handsets import Handset, InboxMessage, SentMessage, UssdError, UssdScreen
from .simulator import BindInfo, DeliveryFailed, SmscSimulator, SubmittedMessage
from .service import SmscSimulatorService
from .traffic import TrafficLog, TrafficRecord

__all__ = [
    "SmscConfig", "SmscSimulator", "SmscSimulatorService", "Handset", "InboxMessage", "SentMessage", "UssdScreen", "UssdError",
    "Fault", "FaultSet", "TrafficLog", "TrafficRecord", "BindInfo", "DeliveryFailed", "SubmittedMessage",
]
