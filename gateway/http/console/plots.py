"""Plots for auditors, drawn as SVG on the server (no chart library, nothing fetched). Pure:
numbers in, markup out; every label escaped."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from html import escape
from statistics import median
from typing import Any

CHINA = timezone(timedelta(hours=8))
COLOURS = ("#c62828", "#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037")


def per_day_per_partner(records: Iterable[Mapping[str, Any]]) -> dict[str, Counter[str]]:
    """Exchanges by day (in China) and partner, from operational records."""
    days: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        day = datetime.fromtimestamp(float(record["time"]), UTC).astimezone(CHINA).date()
        days[day.isoformat()][str(record.get("partner") or "—")] += 1
    return dict(sorted(days.items()))


def latency_per_partner(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """(median, 95th percentile) seconds from our request to the partner's answer, outbound."""
    spans: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record.get("direction") != "outbound" or record.get("response_at") is None:
            continue
        spans[str(record.get("partner"))].append(
            float(record["response_at"]) - float(record["request_at"])
        )
    found = {}
    for partner, values in sorted(spans.items()):
        values.sort()
        found[partner] = (median(values), values[min(len(values) - 1, int(len(values) * 0.95))])
    return found


def stacked_bars(title: str, series: Mapping[str, Mapping[str, float]], unit: str) -> str:
    """Bars along the x axis (its keys), each stacked by the inner keys, with a legend."""
    width, height, left, bottom, top = 760, 280, 48, 40, 30
    groups = list(series)
    names = sorted({name for values in series.values() for name in values})
    highest = max((sum(v.values()) for v in series.values()), default=0) or 1
    step = (width - left - 20) / max(len(groups), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" class="plot">',
        f'<text x="{left}" y="18" class="plot-title">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="4" y="{top + 10}" class="plot-axis">{_number(highest)} {escape(unit)}</text>',
    ]
    for n, group in enumerate(groups):
        x, base = left + n * step + step * 0.15, float(height - bottom)
        for m, name in enumerate(names):
            value = series[group].get(name, 0)
            if not value:
                continue
            bar = (height - bottom - top) * value / highest
            base -= bar
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{step * 0.7:.1f}" height="{bar:.1f}" '
                f'fill="{COLOURS[m % len(COLOURS)]}"><title>{escape(group)} {escape(name)}: '
                f"{_number(value)} {escape(unit)}</title></rect>"
            )
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{height - bottom + 16}" class="plot-axis" '
            f'text-anchor="middle">{escape(group[-5:] if len(group) == 10 else group)}</text>'
        )
    for m, name in enumerate(names):
        parts.append(
            f'<rect x="{left + m * 110}" y="{height - 14}" width="10" height="10" '
            f'fill="{COLOURS[m % len(COLOURS)]}"/><text x="{left + m * 110 + 14}" '
            f'y="{height - 5}" class="plot-axis">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2f}"
