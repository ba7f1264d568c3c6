"""Burrow's rules, one test per rule, over hand-made windows."""

import pytest

from ys_platform.monitoring.status import CommitWindow, Observation, Status, evaluate, worst


def window(*entries: tuple[int, int, float], size: int = 3) -> CommitWindow:
    w = CommitWindow(size)
    for offset, lag, at in entries:
        w.add(Observation(offset, lag, at))
    return w


def test_empty_window_is_ok():
    assert CommitWindow(3).status(owned=False) is Status.OK


def test_idle_fully_consumed_partition_is_ok_never_stop():
    # No commit for far longer than the window, but nothing to read.
    w = window((10, 0, 0.0), (10, 0, 100.0), (10, 0, 200.0), (10, 0, 300.0))
    assert w.status(owned=False) is Status.OK
    assert w.status(owned=True) is Status.OK


def test_stop_when_no_commit_for_longer_than_the_window_span():
    w = window((10, 5, 0.0), (10, 5, 1.0), (10, 5, 2.0))
    # Full, but the offset was first seen at the window's start: 2 s since, span 2 s: not longer.
    assert w.status(owned=False) is Status.OK
    w.add(Observation(10, 5, 3.0))
    # Window 1..3 s (span 2 s), last move seen at 0 s: 3 s without a commit.
    assert w.status(owned=False) is Status.STOP


def test_stall_when_an_owner_does_not_advance():
    w = window((10, 5, 0.0), (10, 6, 1.0), (10, 7, 2.0))
    assert w.status(owned=True) is Status.STALL


def test_warn_when_lag_never_decreases_while_offsets_move():
    assert window((10, 5, 0.0), (20, 5, 1.0), (30, 6, 2.0)).status(owned=True) is Status.WARN


def test_ok_when_lag_decreases_once():
    assert window((10, 5, 0.0), (20, 4, 1.0), (30, 6, 2.0)).status(owned=True) is Status.OK


def test_ok_when_lag_was_zero_in_the_window():
    assert window((10, 0, 0.0), (20, 5, 1.0), (30, 6, 2.0)).status(owned=True) is Status.OK
    w = window((10, 0, 0.0), (10, 5, 1.0), (10, 5, 2.0), size=3)
    assert w.status(owned=False) is Status.OK


def test_rewind_when_the_offset_goes_back():
    # Seen at once, before the window is full.
    assert window((100, 5, 0.0), (40, 65, 1.0)).status(owned=True) is Status.REWIND


def test_rewind_of_a_caught_up_group_shows():
    # Burrow's "lag 0 in the window" would hide this reset; it must not.
    assert window((100, 0, 0.0), (0, 100, 1.0)).status(owned=False) is Status.REWIND


def test_rewind_gone_once_caught_up_again():
    assert window((100, 0, 0.0), (0, 100, 1.0), (100, 0, 2.0)).status(owned=True) is Status.OK


def test_partial_window_tells_nothing_but_rewind():
    assert window((10, 5, 0.0), (10, 5, 1.0)).status(owned=True) is Status.OK
    assert window((10, 5, 0.0), (20, 6, 1.0)).status(owned=True) is Status.OK


def test_rules_in_order_of_severity():
    # A stopped partition that also went back reads REWIND.
    entries = [Observation(10, 5, 0.0), Observation(5, 10, 1.0), Observation(5, 10, 2.0)]
    assert evaluate(entries, moved_at=-10.0, owned=False, size=3) is Status.REWIND


def test_group_status_is_the_worst_partition():
    assert worst([Status.OK, Status.STOP, Status.WARN]) is Status.STOP
    assert worst([Status.OK, Status.WARN]) is Status.WARN
    assert worst([Status.STALL, Status.REWIND]) is Status.REWIND
    assert worst([]) is Status.OK


def test_a_window_needs_two_entries():
    with pytest.raises(ValueError, match="at least 2"):
        CommitWindow(1)
