"""Bridges between Twisted Deferreds and asyncio coroutines.

The daemon runs Twisted on its asyncio reactor, so the core is written as
asyncio coroutines (SQLAlchemy asyncio, redis.asyncio) and channels, which
speak Deferred, wrap calls with `as_deferred`.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable

from twisted.internet.defer import Deferred


def as_deferred(aw: Awaitable[Any]) -> Deferred:
    """Run an asyncio awaitable on the running loop and return a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(aw))


async def wait_deferred(d: Deferred) -> Any:
    """Await a Deferred from asyncio code."""
    return await d.asFuture(asyncio.get_running_loop())
