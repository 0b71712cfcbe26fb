"""Chart geometry: stacked bars per minute on a linear axis from zero, p50/p95 lines on a log axis with gaps
where a minute had no requests, and axis labels."""

from __future__ import annotations

import pytest

from keyrelay.doors.console import charts
from keyrelay.manage.traffic import Minute, Tally
from keyrelay.model import TrafficCell

T0 = 1_699_996_380.0  # a whole minute


def _minutes(*per_minute: list[TrafficCell]) -> list[Minute]:
    out = []
    for i, cells in enumerate(per_minute):
        t = Tally()
        for c in cells:
            t.add(c)
        out.append(Minute(T0 + 60 * i, t))
    return out


@pytest.mark.parametrize(("value", "want"), [(0, 1), (0.3, 0.5), (1, 1), (7, 10), (13, 20), (21, 25), (99, 100),
                                             (101, 200), (2500, 2500), (2501, 5000)])
def test_nice_ceiling(value: float, want: float) -> None:
    assert charts.nice_ceiling(value) == pytest.approx(want)


def test_bars_stack_answered_refused_and_failed_to_scale() -> None:
    minutes = _minutes([TrafficCell(0, 2, 0, 6, 0, 0), TrafficCell(0, 4, 0, 2, 0, 0), TrafficCell(0, 5, 0, 2, 0, 0)],
                       [], [TrafficCell(2, 2, 0, 5, 0, 0)])
    c = charts.requests_chart(minutes)
    assert not c.empty
    assert [r.cls for r in c.rects] == ["ok", "warn", "bad", "ok"]
    plot = c.height - charts.TOP - charts.BOTTOM
    ok, warn, bad, third = c.rects
    assert ok.h == pytest.approx(plot * 6 / 10, abs=0.02)  # 10 is the axis top for 10 requests
    assert ok.y == pytest.approx(warn.y + warn.h, abs=0.02) and warn.y == pytest.approx(bad.y + bad.h, abs=0.02)
    assert bad.y == pytest.approx(charts.TOP, abs=0.02)  # the full minute reaches the top
    assert third.x > ok.x
    assert "10 requests (6 answered, 2 refused, 2 failed)" in ok.title
    assert [t.label for t in c.y_ticks] == ["0", "5", "10"]
    assert [t.label for t in c.x_ticks] == ["now"]  # too short for clock times


def test_an_hour_without_requests_is_an_empty_chart() -> None:
    minutes = _minutes(*[[] for _ in range(60)])
    assert charts.requests_chart(minutes).empty and not charts.requests_chart(minutes).rects
    assert [t.label for t in charts.requests_chart(minutes).x_ticks] == ["21:13", "21:28", "21:43", "21:58", "now"]
    assert charts.latency_chart(minutes).empty


def test_latency_lines_use_a_log_axis_and_break_where_nothing_was_sent() -> None:
    fast, slow = TrafficCell(0, 2, 5, 10, 0, 0), TrafficCell(0, 5, 26, 1, 0, 1)  # ~7.5 ms, and up to 60 s
    minutes = _minutes([fast], [fast], [], [fast, slow], [])
    c = charts.latency_chart(minutes)
    p50 = [line for line in c.lines if line.cls == "p50"]
    assert len(p50) == 2  # two runs: minutes 0-1, then minute 3 (drawn as a short dash)
    assert len(p50[0].points.split()) == 2 and len(p50[1].points.split()) == 2
    labels = [t.label for t in c.y_ticks]
    assert labels[0] == "1.00 ms" and labels[-1] == "100 s"
    ys = [t.at for t in c.y_ticks]
    assert ys == sorted(ys, reverse=True)  # larger latencies higher up
    assert {round(ys[i] - ys[i + 1], 1) for i in range(len(ys) - 1)} == {round(ys[0] - ys[1], 1)}  # even decades


def test_log_range_spans_at_least_two_decades() -> None:
    assert charts.log_range([]) == (0, 2)
    assert charts.log_range([5.0, 6.0]) == (0, 2)
    assert charts.log_range([0.2, 45000.0]) == (-1, 5)
