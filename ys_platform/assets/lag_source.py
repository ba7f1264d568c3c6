"""The lag checks' :class:`~ys_platform.assets.lag_checks.ConsumerLagSource` on a real cluster.

Offset lag is the lag monitor's (:class:`~ys_platform.monitoring.lag.LagReader`: committed
offsets against the last stable offset, transaction markers not counted). Lag in seconds is not
the monitor's interpolation, which needs a table of points kept between polls: a check reads
once a minute in a fresh run, so it reads the group's next record instead and takes its exact
age (:func:`~ys_platform.monitoring.record_age.next_record_timestamps`); 0 when caught up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ys_platform.assets.lag_checks import PartitionReading
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.monitoring.lag import GroupFilter, LagReader, offset_lag
from ys_platform.monitoring.record_age import next_record_timestamps
from ys_platform.resources.kafka import KafkaResource

# Matches no group id: the reader reads the one group it is asked about, nothing else listed.
_NO_OTHER_GROUP = r"(?!)"


class KafkaLagSource:
    """Reads one group's lag per call: an admin client and two short-lived consumers."""

    def __init__(self, connection: KafkaConnection) -> None:
        self.connection = connection

    @classmethod
    def of(cls, kafka: KafkaResource) -> KafkaLagSource:
        """The source on the resource's cluster (the check's run config, secrets via EnvVar)."""
        return cls(kafka.connection)

    def lag_for_group(self, group: str) -> Sequence[PartitionReading]:
        reader = LagReader(self.connection, GroupFilter.of([group], allow=_NO_OTHER_GROUP))
        try:
            reading = reader.read()
        finally:
            reader.close()
        (offsets,) = [g for g in reading.groups if g.group_id == group]
        lags = {
            (p.topic, p.partition): offset_lag(p, reading.offsets[p.topic, p.partition])
            for p in offsets.partitions
        }
        behind = {
            (p.topic, p.partition): p.next_record
            for p in offsets.partitions
            if lags[p.topic, p.partition] > 0
        }
        stamps = next_record_timestamps(self.connection, behind)
        now = time.time()

        def lag_seconds(key: tuple[str, int]) -> float | None:
            if lags[key] == 0:
                return 0.0
            stamp = stamps.get(key)
            # A record written "in the future" by a skewed producer clock is not negative lag.
            return None if stamp is None else max(0.0, now - stamp / 1000)

        return [
            PartitionReading(
                topic=p.topic,
                partition=p.partition,
                committed=p.committed,
                offset_lag=lags[p.topic, p.partition],
                lag_seconds=lag_seconds((p.topic, p.partition)),
                owned=p.owner is not None,
            )
            for p in offsets.partitions
        ]
