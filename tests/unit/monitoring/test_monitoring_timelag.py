"""Time lag by interpolation: exact values from hand-made offset-time tables."""

import pytest

from ys_platform.monitoring.timelag import OffsetTime, OffsetTimeTable, time_lag


def table(*points: tuple[int, float], size: int = 60) -> OffsetTimeTable:
    t = OffsetTimeTable(size)
    for offset, at in points:
        t.add(offset, at)
    return t


def test_absent_until_two_points():
    assert time_lag(OffsetTimeTable(), 5, 10, now=100.0) is None
    assert time_lag(table((10, 50.0)), 5, 10, now=100.0) is None


def test_caught_up_is_zero_even_without_points():
    assert time_lag(OffsetTimeTable(), 10, 10, now=100.0) == 0.0
    assert time_lag(table((100, 10.0), (200, 20.0)), 200, 200, now=25.0) == 0.0


def test_interpolated_between_the_bracketing_points():
    t = table((100, 10.0), (200, 20.0), (400, 30.0))
    assert t.time_of(150) == 15.0
    assert t.time_of(300) == 25.0
    assert time_lag(t, 150, 400, now=31.0) == 16.0
    assert time_lag(t, 300, 400, now=31.0) == 6.0


def test_extrapolated_on_the_first_and_last_points_below_the_table():
    t = table((100, 10.0), (200, 20.0), (300, 40.0))
    # The line through (100, 10) and (300, 40): 0.15 s per offset.
    assert t.time_of(50) == pytest.approx(2.5)
    assert time_lag(t, 50, 300, now=42.5) == pytest.approx(40.0)


def test_the_record_appeared_when_the_watermark_moved_past_it():
    # The watermark sat at 100 from t=10 to t=20: record 100 was written between 20 and 30.
    t = table((100, 10.0), (100, 20.0), (150, 30.0))
    assert t.time_of(100) == 20.0
    assert t.time_of(120) == 24.0


def test_a_flat_run_keeps_its_first_and_last_points():
    t = table((100, 10.0), (100, 20.0), (100, 30.0), (100, 40.0))
    assert list(t) == [OffsetTime(100, 10.0), OffsetTime(100, 40.0)]


def test_a_flat_table_gives_no_estimate_below_it():
    t = table((100, 10.0), (100, 40.0))
    assert time_lag(t, 90, 100, now=50.0) is None


def test_the_table_is_bounded_oldest_out():
    t = table((1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), size=3)
    assert [p.offset for p in t] == [3, 4, 5]


def test_a_watermark_going_back_starts_afresh():
    t = table((500, 1.0), (600, 2.0), (10, 3.0))
    assert list(t) == [OffsetTime(10, 3.0)]


def test_never_negative():
    # Extrapolating above the last point would put the record in the future: clamped to 0.
    t = table((100, 10.0), (200, 20.0))
    assert time_lag(t, 250, 300, now=20.0) == 0.0


def test_a_table_needs_two_points():
    with pytest.raises(ValueError, match="at least 2"):
        OffsetTimeTable(1)
