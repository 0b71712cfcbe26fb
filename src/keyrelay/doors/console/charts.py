"""Server-rendered SVG charts for the console (no script): the geometry of bar and line charts over the last
hour's minutes. Templates draw what these return with SVG attributes and CSS classes only (the page's CSP
forbids inline styles).

Requests per minute use a linear axis from zero; latency uses a logarithmic one, so that a normal 50 ms and a
30 s timeout both stay readable on one chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from keyrelay.doors.console import fmt
from keyrelay.manage.traffic import Minute

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 72, 10, 10, 24  # room for the axis labels


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str


@dataclass(frozen=True)
class Line:
    points: str  # "x,y x,y ..." for a <polyline>
    cls: str


@dataclass(frozen=True)
class Tick:
    at: float  # y for the value axis, x for the time axis
    label: str
    anchor: str = "start"


@dataclass(frozen=True)
class Chart:
    title: str
    rects: list[Rect]
    lines: list[Line]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    legend: list[tuple[str, str]]  # (css class, label)
    empty: bool
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT


@dataclass(frozen=True)
class Frame:
    """The plot area of a chart `width` x `height` with `count` time slots."""

    width: int
    height: int
    count: int

    @property
    def slot(self) -> float:
        return (self.width - LEFT - RIGHT) / max(1, self.count)

    def y(self, share: float) -> float:
        """The y of a value `share` (0..1) of the way up the axis."""
        plot = self.height - TOP - BOTTOM
        return round(TOP + plot * (1 - share), 2)

    def x_ticks(self, minutes: Sequence[Minute]) -> list[Tick]:
        ticks = [Tick(round(LEFT + i * self.slot, 2), fmt.hhmm(m.start)) for i, m in enumerate(minutes)
                 if i % 15 == 0 and i < len(minutes) - 5]
        return [*ticks, Tick(self.width - RIGHT, "now", "end")]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= value (and 1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return float(step * power)
    return float(10 * power)


def requests_chart(minutes: Sequence[Minute], *, width: int = WIDTH, height: int = HEIGHT) -> Chart:
    """Requests per minute as stacked bars: answered (1xx-3xx), refused (4xx), failed (5xx)."""
    f = Frame(width, height, len(minutes))
    top = nice_ceiling(max((m.tally.requests for m in minutes), default=0))
    rects: list[Rect] = []
    for i, m in enumerate(minutes):
        t = m.tally
        title = (f"{fmt.hhmm(m.start)} UTC: {t.requests} requests ({t.ok} answered, {t.refused} refused, "
                 f"{t.failed} failed)")
        base = 0
        for count, cls in ((t.ok, "ok"), (t.refused, "warn"), (t.failed, "bad")):
            if count:
                y0, y1 = f.y(base / top), f.y((base + count) / top)
                rects.append(Rect(round(LEFT + i * f.slot + 0.5, 2), y1, round(max(1.0, f.slot - 1.5), 2),
                                  round(y0 - y1, 2), cls, title))
                base += count
    ticks = [Tick(f.y(share), fmt.num(top * share)) for share in (0, 0.5, 1)]
    return Chart("Requests per minute", rects, [], ticks, f.x_ticks(minutes),
                 [("ok", "answered"), ("warn", "refused (4xx)"), ("bad", "failed (5xx)")],
                 empty=not any(m.tally.requests for m in minutes), width=width, height=height)


def log_range(values: Sequence[float]) -> tuple[int, int]:
    """Powers of ten (lo, hi) around the values, at least two decades apart."""
    positive = [v for v in values if v > 0]
    if not positive:
        return 0, 2
    lo = math.floor(math.log10(min(positive)))
    hi = max(math.ceil(math.log10(max(positive))), lo + 2)
    return lo, hi


def _ms_label(power: int) -> str:
    value = 10.0 ** power
    return fmt.ms(value) if value < 1000 else f"{value / 1000:g} s"


def latency_chart(minutes: Sequence[Minute], *, width: int = WIDTH, height: int = HEIGHT) -> Chart:
    """p50 and p95 latency per minute as lines on a log axis; minutes without requests leave a gap."""
    f = Frame(width, height, len(minutes))
    series = {q: [m.tally.p(q) if m.tally.requests else None for m in minutes] for q in (0.5, 0.95)}
    lo, hi = log_range([v for s in series.values() for v in s if v is not None])

    def share(v: float) -> float:
        return (math.log10(max(v, 10.0 ** lo)) - lo) / (hi - lo)

    lines: list[Line] = []
    for q, cls in ((0.95, "p95"), (0.5, "p50")):
        run: list[str] = []
        for i, v in enumerate([*series[q], None]):
            if v is None:
                if len(run) == 1:  # a lone minute: draw it as a short dash
                    x, y = run[0].split(",")
                    run.append(f"{float(x) + max(2.0, f.slot / 2):.2f},{y}")
                if run:
                    lines.append(Line(" ".join(run), cls))
                run = []
                continue
            run.append(f"{LEFT + (i + 0.5) * f.slot:.2f},{f.y(share(v)):.2f}")
    ticks = [Tick(f.y((p - lo) / (hi - lo)), _ms_label(p)) for p in range(lo, hi + 1)]
    return Chart("Latency (p50, p95)", [], lines, ticks, f.x_ticks(minutes), [("p50", "p50"), ("p95", "p95")],
                 empty=not lines, width=width, height=height)
