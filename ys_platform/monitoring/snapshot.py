"""From offset readings to lag snapshots: offset lag, time lag, status, bounds.

:class:`LagTracker` keeps what spans polls — one offset-time table per partition (time lag) and
one commit window per group and partition (status) — and turns each :class:`OffsetReading` into
a :class:`LagSnapshot`, the one value every consumer of the monitor reads (the Prometheus
collector, and the health and alert listeners). Pure logic, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ys_platform.monitoring.lag import Member, OffsetReading, PartitionOffsets, offset_lag
from ys_platform.monitoring.status import DEFAULT_WINDOW, CommitWindow, Observation, Status, worst
from ys_platform.monitoring.timelag import DEFAULT_TABLE_SIZE, OffsetTimeTable, time_lag


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One group's lag on one partition."""

    topic: str
    partition: int
    committed: int
    lag: int
    """Records still to read (markers and aborted records not counted)."""
    lag_seconds: float | None
    """Age of the next record to read; 0 when caught up; None until two table points exist."""
    status: Status
    owner: Member | None


@dataclass(frozen=True)
class GroupLag:
    group_id: str
    state: str
    simple: bool
    partitions: tuple[PartitionLag, ...]
    status: Status
    """The worst partition's; NOTFOUND for a catalog group with no commits on the cluster."""
    lag_bound_s: float | None
    """The catalog's bound for the group's time lag; None for a group outside the catalog."""

    @property
    def max_lag(self) -> int:
        return max((p.lag for p in self.partitions), default=0)

    @property
    def sum_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def max_lag_seconds(self) -> float | None:
        """The largest time lag known, or None when it cannot be told: no estimate at all, or
        only zeros while a partition in lag has none (its lag is not 0 s, whatever it is)."""
        known = [p.lag_seconds for p in self.partitions if p.lag_seconds is not None]
        unknown_in_lag = any(p.lag_seconds is None and p.lag > 0 for p in self.partitions)
        largest = max(known, default=None)
        if largest is None or (largest == 0.0 and unknown_in_lag):
            return None
        return largest

    @property
    def within_bound(self) -> bool | None:
        """Whether the time lag is within the catalog's bound (None: no bound or no estimate)."""
        if self.lag_bound_s is None or self.max_lag_seconds is None:
            return None
        return self.max_lag_seconds <= self.lag_bound_s


@dataclass(frozen=True)
class LagSnapshot:
    """Every monitored group's lag at one poll."""

    cluster_name: str
    at: float
    """Wall time the offsets were read (Unix seconds)."""
    groups: tuple[GroupLag, ...]
    offsets: Mapping[tuple[str, int], PartitionOffsets] = field(default_factory=dict)
    """Earliest, latest and last stable offset of each partition any group committed on."""
    poll_seconds: float = 0.0

    def group(self, group_id: str) -> GroupLag:
        for group in self.groups:
            if group.group_id == group_id:
                return group
        raise KeyError(f"group {group_id!r} is not in the snapshot")


class LagTracker:
    """Turns successive readings into snapshots, keeping the tables and windows between them."""

    def __init__(
        self,
        cluster_name: str,
        bounds: Mapping[str, float],
        *,
        window: int = DEFAULT_WINDOW,
        table_size: int = DEFAULT_TABLE_SIZE,
    ) -> None:
        self.cluster_name = cluster_name
        self.bounds = dict(bounds)
        self.window = window
        self.table_size = table_size
        self._tables: dict[tuple[str, int], OffsetTimeTable] = {}
        self._windows: dict[tuple[str, str, int], CommitWindow] = {}

    def update(self, reading: OffsetReading) -> LagSnapshot:
        now = reading.at
        for key, offsets in reading.offsets.items():
            table = self._tables.get(key)
            if table is None:
                table = self._tables[key] = OffsetTimeTable(self.table_size)
            table.add(offsets.latest, now)
        # Partitions no group reads any more, and groups gone, take their history with them.
        self._tables = {k: t for k, t in self._tables.items() if k in reading.offsets}
        seen: set[tuple[str, str, int]] = set()
        groups = []
        for group in reading.groups:
            rows = []
            for cp in group.partitions:
                offsets = reading.offsets[cp.topic, cp.partition]
                lag = offset_lag(cp, offsets)
                seconds = time_lag(
                    self._tables[cp.topic, cp.partition],
                    cp.next_record,
                    cp.next_record + lag,
                    now,
                )
                key = (group.group_id, cp.topic, cp.partition)
                seen.add(key)
                window = self._windows.get(key)
                if window is None:
                    window = self._windows[key] = CommitWindow(self.window)
                window.add(Observation(cp.committed, lag, now))
                if not cp.started and cp.owner is None:
                    # No commit and no member: the group has not run here (yet).
                    status = Status.NOTFOUND
                else:
                    status = window.status(owned=cp.owner is not None)
                rows.append(
                    PartitionLag(
                        cp.topic, cp.partition, cp.committed, lag, seconds, status, cp.owner
                    )
                )
            absent = group.group_id in self.bounds and all(
                r.status is Status.NOTFOUND for r in rows
            )
            groups.append(
                GroupLag(
                    group.group_id,
                    group.state,
                    group.simple,
                    tuple(rows),
                    Status.NOTFOUND if absent else worst(r.status for r in rows),
                    self.bounds.get(group.group_id),
                )
            )
        self._windows = {k: w for k, w in self._windows.items() if k in seen}
        return LagSnapshot(
            self.cluster_name, now, tuple(groups), dict(reading.offsets), reading.duration_s
        )
