"""ISO 8583 issuer host simulator: card accounts, approvals and declines,
reversals, duplicate detection, runtime faults, a traffic record, end-of-day
settlement files and an HTTP control API. See `simulator.BankSimulator`."""
from simulators.bank.simulator import BankSimulator

__all__ = ["BankSimulator"]
