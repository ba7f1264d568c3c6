"""The monitor's loop: poll the cluster on an interval, hand each snapshot to its listeners.

One :class:`Monitor` per process (``ys-platform monitor``). Each poll reads the offsets
(:class:`~ys_platform.monitoring.lag.LagReader`), folds them into a
:class:`~ys_platform.monitoring.snapshot.LagSnapshot` (:class:`LagTracker`) and calls every
registered :class:`SnapshotListener` with it, in registration order. A listener that raises is
logged and the others still run; a poll the cluster does not answer is logged and retried at the
next interval, so the endpoint keeps serving through a broker restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from ys_platform.monitoring.lag import GroupFilter, LagReader, LagReadError, OffsetReading
from ys_platform.monitoring.snapshot import LagSnapshot, LagTracker
from ys_platform.monitoring.status import DEFAULT_WINDOW
from ys_platform.settings import Settings

log = logging.getLogger(__name__)


class SnapshotListener(Protocol):
    """Anything that acts on each poll's snapshot: the Prometheus collector, health, alerts."""

    def on_snapshot(self, snapshot: LagSnapshot) -> None: ...


class OffsetSource(Protocol):
    """Where readings come from (:class:`LagReader` on a real cluster)."""

    def read(self) -> OffsetReading: ...

    def close(self) -> None: ...


class Monitor:
    """Polls ``source`` every ``interval_s`` and hands each snapshot to the listeners."""

    def __init__(
        self,
        source: OffsetSource,
        tracker: LagTracker,
        interval_s: float,
        listeners: Iterable[SnapshotListener] = (),
    ) -> None:
        self.source = source
        self.tracker = tracker
        self.interval_s = interval_s
        self._listeners: list[SnapshotListener] = list(listeners)
        self.last: LagSnapshot | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        listeners: Iterable[SnapshotListener] = (),
        *,
        window: int = DEFAULT_WINDOW,
        namespace: str = "",
    ) -> Monitor:
        """The monitor of the configured cluster: every group the allow/deny settings admit,
        the catalog's always, with the catalog's lag bounds; a catalog group's input partitions
        it has not committed yet count from their earliest offset (``lag.py``).

        ``namespace`` is the workers' ``--namespace``: the catalog's groups are then
        ``<namespace><group>`` (an isolated copy on a shared cluster, a test's groups).
        """
        from ys_platform.catalog.topics import CONSUMER_GROUPS

        bounds = {f"{namespace}{g.group_id}": g.lag_bound_s for g in CONSUMER_GROUPS}
        groups = GroupFilter.of(bounds, settings.monitor_groups_allow, settings.monitor_groups_deny)
        tracker = LagTracker(settings.monitor_cluster_name, bounds, window=window)
        inputs = {
            # Broadcast inputs are read whole, never committed: no lag to show.
            f"{namespace}{g.group_id}": [f"{namespace}{name}" for name in g.member_inputs]
            for g in CONSUMER_GROUPS
        }
        reader = LagReader(settings.kafka, groups, inputs=inputs)
        return cls(reader, tracker, settings.monitor_interval_s, listeners)

    def add_listener(self, listener: SnapshotListener) -> None:
        self._listeners.append(listener)

    def poll(self) -> LagSnapshot:
        """One poll: read, fold, notify. Raises :class:`LagReadError` when the cluster fails."""
        snapshot = self.tracker.update(self.source.read())
        self.last = snapshot
        for listener in self._listeners:
            try:
                listener.on_snapshot(snapshot)
            except Exception:
                log.exception(
                    "monitor listener %s failed on a snapshot (the others still ran)",
                    type(listener).__name__,
                )
        return snapshot

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; each poll starts one interval after the previous one."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                snapshot = self.poll()
                log.debug("polled %d groups in %.3f s", len(snapshot.groups), snapshot.poll_seconds)
            except LagReadError as exc:
                log.warning("lag poll failed, retrying in %.1f s: %s", self.interval_s, exc)
            stop.wait(max(self.interval_s - (time.monotonic() - started), 0.0))

    def close(self) -> None:
        self.source.close()
