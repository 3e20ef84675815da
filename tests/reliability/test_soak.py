"""The short form of the soak (`make soak` runs the long one): three kill -9
at random moments during a stream of payments and top-ups with SMSC
re-deliveries on, on the embedded default. The seed is random unless
TELECOM_PAY_SOAK_SEED sets it, and is printed when a promise breaks."""
import os

from tests.aio import aio_test
from tests.reliability.soak import soak


@aio_test
async def test_random_kills_under_load_keep_every_promise():
    seed = os.environ.get("TELECOM_PAY_SOAK_SEED")
    report = await soak(config="sqlite", kills=3, duration=15.0, seed=int(seed) if seed else None)
    assert report.kills == 3 and report.requests > 10, report.summary()
    assert not report.problems, report.summary()
