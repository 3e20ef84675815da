"""The sample shop: a merchant of the SP payment API for testers
(telecom_pay/merchants/README.md). It sells a few items, asks the platform
for each payment, shows the order turn paid when the platform's signed
callback arrives, and asks for refunds. `telecom-pay demo` starts it
(simulators/merchant/demo.py); `python -m simulators.merchant` runs it alone.

The client of the API is `platform.py`, the web side `shop.py`, the state
`store.py` (SQLite), the listening `server.py`.
"""
