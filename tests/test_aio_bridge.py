import asyncio

from twisted.internet import reactor, task

from telecom_pay.aio import wait_deferred
from tests.aio import aio_test


@aio_test
async def test_asyncio_and_deferreds_share_the_loop():
    await asyncio.sleep(0.01)
    value = await wait_deferred(task.deferLater(reactor, 0.01, lambda: 42))
    assert value == 42


@aio_test
async def test_failures_propagate():
    try:
        await wait_deferred(task.deferLater(reactor, 0, lambda: 1 / 0))
    except ZeroDivisionError:
        return
    raise AssertionError("the Deferred's failure did not reach the coroutine")
