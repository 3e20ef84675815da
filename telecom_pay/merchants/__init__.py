"""Merchants and SPs: profiles, API keys, the SP payment API, refunds, notifications (README.md)."""
