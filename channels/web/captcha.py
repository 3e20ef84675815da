"""A self-hosted CAPTCHA for the login after repeated failures: digits
drawn by the server as SVG strokes, each digit bent, turned and shifted at
random, under noise lines. It stops scripted guessing, not a determined
OCR; its purpose is to make a password spray cost a person's attention.

The answer stays in the session store (one use: checking takes it; short
TTL); the page gets only an id and the picture.
"""
from __future__ import annotations

import hmac
import math
import random
import secrets

from telecom_pay.sessions import SessionStore

# strokes of each digit on a 0..10 x 0..16 grid (polylines)
_STROKES = {
    "0": [[(1, 1), (9, 1), (9, 15), (1, 15), (1, 1)]],
    "1": [[(3, 4), (6, 1), (6, 15)], [(3, 15), (9, 15)]],
    "2": [[(1, 3), (3, 1), (8, 1), (9, 4), (1, 15), (9, 15)]],
    "3": [[(1, 1), (9, 1), (5, 7), (9, 10), (8, 15), (1, 15)]],
    "4": [[(7, 15), (7, 1), (1, 10), (9, 10)]],
    "5": [[(9, 1), (1, 1), (1, 7), (8, 7), (9, 12), (7, 15), (1, 15)]],
    "6": [[(8, 1), (2, 4), (1, 15), (9, 15), (9, 8), (1, 8)]],
    "7": [[(1, 1), (9, 1), (4, 15)]],
    "8": [[(1, 1), (9, 1), (9, 7), (1, 7), (1, 1)], [(1, 7), (1, 15), (9, 15), (9, 7)]],
    "9": [[(9, 8), (1, 8), (1, 1), (9, 1), (9, 15), (2, 15)]],
}
DIGITS = 5


def draw(answer: str, rng: random.Random) -> str:
    width, height = 30 + 34 * len(answer), 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="security code">',
             f'<rect width="{width}" height="{height}" fill="#f4f1ea"/>']
    for _ in range(6):
        pts = " ".join(f"{rng.uniform(0, width):.1f},{rng.uniform(0, height):.1f}" for _ in range(3))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#8a8f99" stroke-width="1.2"/>')
    for i, digit in enumerate(answer):
        angle = math.radians(rng.uniform(-25, 25))
        scale = rng.uniform(2.0, 2.6)
        ox, oy = 18 + 34 * i + rng.uniform(-4, 4), 10 + rng.uniform(-5, 5)
        shear = rng.uniform(-0.3, 0.3)
        for stroke in _STROKES[digit]:
            pts = []
            for x, y in stroke:
                x, y = x - 5 + shear * (y - 8) + rng.uniform(-0.6, 0.6), y - 8 + rng.uniform(-0.6, 0.6)
                rx = x * math.cos(angle) - y * math.sin(angle)
                ry = x * math.sin(angle) + y * math.cos(angle)
                pts.append(f"{ox + 10 + rx * scale:.1f},{oy + 16 + ry * scale:.1f}")
            parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="#1d2a44" '
                         f'stroke-width="{rng.uniform(2.2, 3.4):.1f}" stroke-linecap="round" stroke-linejoin="round"/>')
    for _ in range(40):
        parts.append(f'<circle cx="{rng.uniform(0, width):.1f}" cy="{rng.uniform(0, height):.1f}" '
                     f'r="{rng.uniform(0.5, 1.5):.1f}" fill="#5a6170"/>')
    parts.append("</svg>")
    return "".join(parts)


class Captchas:
    def __init__(self, store: SessionStore, *, ttl: float = 180.0):
        self.store = store
        self.ttl = ttl
        self._rng = random.SystemRandom()

    async def new(self) -> tuple[str, str]:
        """(id, SVG picture)."""
        answer = "".join(self._rng.choice("0123456789") for _ in range(DIGITS))
        captcha_id = secrets.token_urlsafe(16)
        await self.store.put(f"web:captcha:{captcha_id}", {"answer": answer}, self.ttl)
        return captcha_id, draw(answer, self._rng)

    async def check(self, captcha_id: str | None, answer: str | None) -> bool:
        """True once for the right answer; any check uses the CAPTCHA up."""
        if not captcha_id or not answer or len(captcha_id) > 64:
            return False
        stored = await self.store.take(f"web:captcha:{captcha_id}")
        if stored is None:
            return False
        return hmac.compare_digest(stored["answer"].encode(), answer.strip().encode())
