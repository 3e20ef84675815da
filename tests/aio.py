"""`@aio_test` runs an `async def` test as an asyncio task on the Twisted
asyncio reactor that pytest-twisted drives, so tests can await both asyncio
code (the core) and Deferreds (via telecom_pay.aio.wait_deferred)."""
from __future__ import annotations

import functools
import inspect

from telecom_pay.aio import as_deferred


def aio_test(fn):
    if not inspect.iscoroutinefunction(fn):
        raise TypeError("@aio_test wants an async def")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return as_deferred(fn(*args, **kwargs))

    return wrapper
