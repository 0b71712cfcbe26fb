"""How the console writes numbers, times and durations (the templates call these; values are escaped there)."""

from __future__ import annotations

import datetime as dt

DASH = "\u2014"


def when(ts: float | None) -> str:
    """A UTC timestamp to the second, e.g. `2026-12-06 06:42:37 UTC`."""
    if ts is None:
        return DASH
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(ts: float) -> str:
    """The time of day in UTC, e.g. `06:42:37`."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%H:%M:%S")


def hhmm(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%H:%M")


def ago(ts: float | None, now: float) -> str:
    """`just now`, `5 min ago`, `3 h ago`, `2 days ago` (and `in 4 days` for times ahead)."""
    if ts is None:
        return DASH
    delta = now - ts
    ahead = delta < 0
    delta = abs(delta)
    if delta < 60:
        text = "just now" if not ahead else "in under a minute"
        return text
    for size, unit in ((86400, "day"), (3600, "h"), (60, "min")):
        if delta >= size:
            n = int(delta // size)
            label = f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''}"
            return f"in {label}" if ahead else f"{label} ago"
    raise AssertionError("unreachable")


def ms(value: float | None) -> str:
    """A latency: `0.42 ms`, `12 ms`, `1.5 s`."""
    if value is None:
        return DASH
    if value < 10:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.1f} s"


def pct(value: float | None) -> str:
    if value is None:
        return DASH
    if value == 0:
        return "0 %"
    if value < 0.001:
        return "< 0.1 %"
    return f"{value * 100:.1f} %"


def num(value: float) -> str:
    """`1,234`, or `12.5` for a fraction."""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"
