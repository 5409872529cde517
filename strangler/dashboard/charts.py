"""Inline SVG charts of a capability's divergence rate over time (pure: timeline buckets in, markup out).

A bar per time bucket, its height the share of comparisons that diverged after noise removal, red above
the gate's maximum; a bucket with no comparison is left empty, so "nothing compared" never looks like
"no divergence".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

_OK, _BAD, _EMPTY, _GRID, _TEXT = "#2e7d5b", "#c62828", "#eceff1", "#cfd8dc", "#546e7a"


def _scale_top(rates: Sequence[float], threshold: float) -> float:
    top = max([threshold * 2, *rates, 0.01])
    for nice in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0):
        if top <= nice:
            return nice
    return 1.0


def _clock(value: str) -> str:
    try:
        return dt.datetime.fromisoformat(value).strftime("%H:%M")
    except ValueError:
        return value


def rate_chart(timeline: Sequence[dict[str, Any]], threshold: float, *, width: int = 1060, height: int = 200,
               label: str = "divergence rate over time") -> Markup:
    """A bar chart with a y axis in percent, the gate's maximum as a dashed line, and the time span below."""
    left, right, top, bottom = 44, 8, 10, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    rates = [b["rate"] for b in timeline if b.get("rate") is not None]
    scale = _scale_top(rates, threshold)
    parts = [f'<svg class="chart" role="img" aria-label="{escape(label)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(label)}</title>"]
    for i in range(5):  # horizontal grid lines with their percentages
        value = scale * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{_GRID}" '
                     f'stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="{_TEXT}">{100 * value:g}%</text>')
    n = max(1, len(timeline))
    slot = plot_w / n
    for i, bucket in enumerate(timeline):
        x = left + i * slot + slot * 0.15
        w = max(1.0, slot * 0.7)
        rate, compared = bucket.get("rate"), bucket.get("comparisons", 0)
        start = _clock(str(bucket.get("start", "")))
        if rate is None:
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - 3:.1f}" width="{w:.1f}" height="3" fill="{_EMPTY}">'
                         f"<title>{start}: nothing compared</title></rect>")
            continue
        h = max(2.0, plot_h * min(rate, scale) / scale)
        colour = _BAD if rate > threshold else _OK
        tip = f"{start}: {100 * rate:.1f}% of {compared} comparisons diverged"
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                     f'fill="{colour}" rx="1"><title>{escape(tip)}</title></rect>')
    if threshold <= scale:
        y = top + plot_h - plot_h * threshold / scale
        parts.append(f'<line class="threshold" x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                     f'stroke="{_BAD}" stroke-dasharray="5 4" stroke-width="1.5"/>')
        parts.append(f'<text x="{width - right}" y="{y - 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="{_BAD}">gate max {100 * threshold:g}%</text>')
    if timeline:
        first, last = _clock(str(timeline[0].get("start", ""))), "now"
        parts.append(f'<text x="{left}" y="{height - 6}" font-size="11" fill="{_TEXT}">{escape(first)}</text>')
        parts.append(f'<text x="{width - right}" y="{height - 6}" text-anchor="end" font-size="11" '
                     f'fill="{_TEXT}">{last}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(timeline: Sequence[dict[str, Any]], threshold: float, *, width: int = 120, height: int = 28) -> Markup:
    """The same bars, small and without axes, for the overview."""
    n = max(1, len(timeline))
    slot = width / n
    rates = [b["rate"] for b in timeline if b.get("rate") is not None]
    scale = _scale_top(rates, threshold)
    parts = [f'<svg class="spark" role="img" aria-label="divergence rate over time" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    for i, bucket in enumerate(timeline):
        rate = bucket.get("rate")
        x = i * slot + slot * 0.1
        w = max(1.0, slot * 0.8)
        if rate is None:
            parts.append(f'<rect x="{x:.1f}" y="{height - 2}" width="{w:.1f}" height="2" fill="{_EMPTY}"/>')
            continue
        h = max(2.0, (height - 2) * min(rate, scale) / scale)
        parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                     f'fill="{_BAD if rate > threshold else _OK}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
