"""The CAPTCHA without a server: every digit draws as well-formed SVG
that does not spell its answer, and a CAPTCHA is good once, for its TTL
only (the memory store on an injected clock)."""
from __future__ import annotations

import random
import xml.etree.ElementTree as ET

from channels.web.captcha import Captchas, draw
from telecom_pay.sessions import MemorySessionStore
from tests.aio import aio_test


def test_every_digit_draws_as_svg():
    rng = random.Random(7)
    for digit in "0123456789":
        svg = draw(digit * 5, rng)
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
        assert digit * 5 not in ET.tostring(root, method="text").decode()
        assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) > 6      # noise lines and strokes
    assert draw("12345", random.Random(1)) != draw("12345", random.Random(2))    # distorted differently


@aio_test
async def test_one_use_and_ttl():
    now = [1000.0]
    store = MemorySessionStore(clock=lambda: now[0])
    captchas = Captchas(store, ttl=60)
    cid, _ = await captchas.new()
    answer = (await store.get(f"web:captcha:{cid}"))["answer"]
    assert await captchas.check(cid, answer)
    assert not await captchas.check(cid, answer)                  # used up
    cid, _ = await captchas.new()
    answer = (await store.get(f"web:captcha:{cid}"))["answer"]
    assert not await captchas.check(cid, "x" + answer[1:])       # a wrong answer uses it up too
    assert not await captchas.check(cid, answer)
    cid, _ = await captchas.new()
    answer = (await store.get(f"web:captcha:{cid}"))["answer"]
    now[0] += 61
    assert not await captchas.check(cid, answer)                  # expired
    assert not await captchas.check(None, answer) and not await captchas.check("x" * 100, answer)
