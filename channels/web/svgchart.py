"""Bar charts drawn on the server as inline SVG: the statistics page needs
a few simple charts, and a chart library would be one more asset to serve
(no CDN) and more JavaScript than the page has. Labels and titles are
escaped here; colours are presentation attributes, not inline styles, so
the page's Content-Security-Policy (style-src 'self') holds."""
from __future__ import annotations

from html import escape
from typing import Callable, Sequence

from markupsafe import Markup

BAR = "#2c5cc5"
AXIS = "#aab1bd"
TEXT = "#1d2a44"


def _label(value: int, fmt: Callable[[int], str] | None) -> str:
    return escape(fmt(value) if fmt is not None else str(value))


def column_chart(title: str, items: Sequence[tuple[str, int]], *, fmt: Callable[[int], str] | None = None,
                 width: int = 640, height: int = 220) -> Markup:
    """One column per item (days, left to right), its value above it."""
    top, bottom, left = 28, 36, 8
    plot = height - top - bottom
    n = max(len(items), 1)
    slot = (width - 2 * left) / n
    peak = max((v for _, v in items), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{left}" y="16" fill="{TEXT}" font-size="14" font-weight="600">{escape(title)}</text>',
             f'<line x1="{left}" y1="{top + plot}" x2="{width - left}" y2="{top + plot}" stroke="{AXIS}"/>']
    small = n > 16
    for i, (name, value) in enumerate(items):
        h = round(plot * value / peak, 1)
        x = left + i * slot + slot * 0.15
        w = max(slot * 0.7, 1)
        cx = left + i * slot + slot / 2
        parts.append(f'<rect x="{x:.1f}" y="{top + plot - h:.1f}" width="{w:.1f}" height="{h}" fill="{BAR}">'
                     f'<title>{escape(name)}: {_label(value, fmt)}</title></rect>')
        if not small:
            parts.append(f'<text x="{cx:.1f}" y="{top + plot - h - 4:.1f}" fill="{TEXT}" font-size="11" '
                         f'text-anchor="middle">{_label(value, fmt)}</text>')
        if not small or i % max(n // 8, 1) == 0:
            parts.append(f'<text x="{cx:.1f}" y="{top + plot + 16}" fill="{TEXT}" font-size="11" '
                         f'text-anchor="middle">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(title: str, items: Sequence[tuple[str, int]], *, fmt: Callable[[int], str] | None = None,
              width: int = 640, row: int = 24) -> Markup:
    """One horizontal bar per item (categories: kinds, channels, codes)."""
    top, label_w, right = 28, 190, 90
    height = top + max(len(items), 1) * row + 8
    peak = max((v for _, v in items), default=0) or 1
    span = width - label_w - right
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<text x="8" y="16" fill="{TEXT}" font-size="14" font-weight="600">{escape(title)}</text>']
    if not items:
        parts.append(f'<text x="8" y="{top + 16}" fill="{TEXT}" font-size="12">none</text>')
    for i, (name, value) in enumerate(items):
        y = top + i * row
        w = round(span * value / peak, 1)
        parts.append(f'<text x="{label_w - 6}" y="{y + row * 0.65:.1f}" fill="{TEXT}" font-size="12" '
                     f'text-anchor="end">{escape(name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{row - 8}" fill="{BAR}">'
                     f'<title>{escape(name)}: {_label(value, fmt)}</title></rect>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + row * 0.65:.1f}" fill="{TEXT}" font-size="12">'
                     f'{_label(value, fmt)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
