"""Benchmarks of telecom-pay: complete SMS payments driven through the
SMSC simulator against the daemon running as its own process.

`make bench` runs `python -m benchmarks.run`; see benchmarks/README.md.
"""
