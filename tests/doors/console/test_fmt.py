"""How the console writes times, durations, shares and counts."""

from __future__ import annotations

import pytest

from keyrelay.doors.console import fmt

T = 1_765_000_000.0  # 2025-12-06 05:46:40 UTC


def test_times_are_utc() -> None:
    assert fmt.when(T) == "2025-12-06 05:46:40 UTC"
    assert fmt.when(None) == fmt.DASH
    assert fmt.clock(T) == "05:46:40"
    assert fmt.hhmm(T) == "05:46"


@pytest.mark.parametrize(("delta", "want"), [
    (0, "just now"), (59, "just now"), (60, "1 min ago"), (3599, "59 min ago"), (3600, "1 h ago"),
    (86399, "23 h ago"), (86400, "1 day ago"), (3 * 86400, "3 days ago"), (-30, "in under a minute"),
    (-4 * 86400, "in 4 days"), (-7200, "in 2 h"),
])
def test_ago(delta: float, want: str) -> None:
    assert fmt.ago(T - delta, T) == want


@pytest.mark.parametrize(("value", "want"), [
    (None, fmt.DASH), (0.4213, "0.42 ms"), (9.999, "10.00 ms"), (10, "10 ms"), (999.4, "999 ms"), (1000, "1.0 s"),
    (30000, "30.0 s"),
])
def test_ms(value: float | None, want: str) -> None:
    assert fmt.ms(value) == want


@pytest.mark.parametrize(("value", "want"), [
    (None, fmt.DASH), (0, "0 %"), (0.0004, "< 0.1 %"), (0.0123, "1.2 %"), (1, "100.0 %"),
])
def test_pct(value: float | None, want: str) -> None:
    assert fmt.pct(value) == want


@pytest.mark.parametrize(("value", "want"), [(0, "0"), (1234567, "1,234,567"), (74.0, "74"), (74.56, "74.6")])
def test_num(value: float, want: str) -> None:
    assert fmt.num(value) == want
