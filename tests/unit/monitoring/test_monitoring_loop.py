"""The Monitor loop's contract with its listeners: every snapshot to each, in order; one that
raises does not stop the others; a failed poll is retried at the next interval."""

import threading

from ys_platform.monitoring.lag import LagReadError, OffsetReading
from ys_platform.monitoring.monitor import Monitor
from ys_platform.monitoring.snapshot import LagSnapshot, LagTracker


class Readings:
    """An offset source of canned readings; a None entry is a cluster that does not answer."""

    def __init__(self, *readings: OffsetReading | None, stop: threading.Event) -> None:
        self.readings = list(readings)
        self.stop = stop
        self.closed = False

    def read(self) -> OffsetReading:
        reading = self.readings.pop(0)
        if not self.readings:
            self.stop.set()
        if reading is None:
            raise LagReadError("listing the consumer groups failed: broker down")
        return reading

    def close(self) -> None:
        self.closed = True


class Recorder:
    def __init__(self, log: list) -> None:
        self.log = log

    def on_snapshot(self, snapshot: LagSnapshot) -> None:
        self.log.append(("recorder", snapshot.at))


class Broken:
    def __init__(self, log: list) -> None:
        self.log = log

    def on_snapshot(self, snapshot: LagSnapshot) -> None:
        self.log.append(("broken", snapshot.at))
        raise RuntimeError("a listener bug")


def test_listeners_get_every_snapshot_in_order_despite_a_broken_one(caplog):
    stop = threading.Event()
    source = Readings(OffsetReading(1.0, ()), None, OffsetReading(3.0, ()), stop=stop)
    log: list = []
    monitor = Monitor(source, LagTracker("c", {}), 0.0, [Broken(log)])
    monitor.add_listener(Recorder(log))
    monitor.run(stop)
    monitor.close()
    assert log == [("broken", 1.0), ("recorder", 1.0), ("broken", 3.0), ("recorder", 3.0)]
    assert monitor.last is not None and monitor.last.at == 3.0
    assert source.closed
    messages = [r.getMessage() for r in caplog.records]
    assert any("lag poll failed" in m and "broker down" in m for m in messages)
    assert any("monitor listener Broken failed" in m for m in messages)
