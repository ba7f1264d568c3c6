"""Time lag per partition by interpolation, the method of kafka-lag-exporter.

Each poll records one point per partition: the partition's latest offset (its high watermark)
and the wall time it was seen. The table is that partition's history of production: reading it
backwards, the time a given offset was written. A group's time lag is how long ago the record it
must read next (its committed offset) was written: the offset's time is interpolated linearly
between the two points that bracket it, or extrapolated from the table's first and last points
when the offset is older than the table. A caught-up group lags 0 s; until the table holds two
points there is no estimate at all (None: neither NaN nor 0, which would both read as a value).

Pure logic, no I/O: the poller feeds the points, the tests feed exact ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

# kafka-lag-exporter's default `lookup-table-size`: 60 points. Kept compact (see ``add``), a
# table covers the last 60 changes of the watermark, at the default 5 s poll at least 5 minutes.
DEFAULT_TABLE_SIZE = 60


@dataclass(frozen=True, slots=True)
class OffsetTime:
    """The partition's latest offset as seen at ``at`` (Unix seconds)."""

    offset: int
    at: float


class OffsetTimeTable:
    """A bounded table of (latest offset, wall time) points of one partition, oldest first."""

    def __init__(self, size: int = DEFAULT_TABLE_SIZE) -> None:
        if size < 2:
            raise ValueError(f"an offset-time table needs at least 2 points, not {size}")
        self._points: deque[OffsetTime] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._points)

    def __iter__(self) -> Iterator[OffsetTime]:
        return iter(self._points)

    def add(self, offset: int, at: float) -> None:
        """Record the latest offset seen at ``at``.

        A watermark that does not move keeps two points, the first and the last time it was seen
        at that offset (the middle one of three equal offsets is dropped): an idle partition does
        not push its history out of the table, and the next record is known to be younger than
        the flat run's last point. A watermark that goes back (a topic deleted and re-created
        under the same name) starts the table afresh: the old history is another log's.
        """
        points = self._points
        if points and (offset < points[-1].offset or at < points[-1].at):
            points.clear()
        if len(points) >= 2 and points[-1].offset == offset == points[-2].offset:
            points[-1] = OffsetTime(offset, at)
        else:
            points.append(OffsetTime(offset, at))

    def time_of(self, offset: int) -> float | None:
        """When the record at ``offset`` was written, estimated from the table (Unix seconds).

        The bracketing segment is the one over which the watermark moved past ``offset``
        (``a.offset <= offset < b.offset``): the record at ``offset`` appeared then. Older than
        the table: extrapolated on the line through the first and last points. None with fewer
        than two points, or when the table never saw the watermark move (no slope to follow).
        """
        points = self._points
        if len(points) < 2:
            return None
        for a, b in pairwise(points):
            if a.offset <= offset < b.offset:
                return _on_line(a, b, offset)
        first, last = points[0], points[-1]
        if first.offset == last.offset:
            return None
        return _on_line(first, last, offset)


def _on_line(a: OffsetTime, b: OffsetTime, offset: int) -> float:
    return a.at + (offset - a.offset) * (b.at - a.at) / (b.offset - a.offset)


def time_lag(table: OffsetTimeTable, next_offset: int, end_offset: int, now: float) -> float | None:
    """Seconds since the record at ``next_offset`` (the next the group reads) was written.

    0 when the group is caught up (``next_offset >= end_offset``); None until the table can tell
    (fewer than two points, or no movement yet); never negative (an estimate in the future is
    clamped: the record cannot be younger than now).
    """
    if next_offset >= end_offset:
        return 0.0
    written = table.time_of(next_offset)
    if written is None:
        return None
    return max(now - written, 0.0)
