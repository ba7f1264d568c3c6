"""The timestamp of the next record a read_committed group gets: the exact age of its lag.

The monitor estimates time lag by interpolating over a table of (offset, time) points it keeps
between polls (:mod:`~ys_platform.monitoring.timelag`); a one-shot reader (a Dagster check) has
no such table, but it can read the record itself. A read_committed consumer assigned at the
group's committed offset gets the first record the group has still to read (past transaction
markers and aborted records), and ``now − its timestamp`` is how far behind the group is.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

from confluent_kafka import TopicPartition

from ys_platform.clients.kafka import KafkaConnection, read_to_end

# Each read takes a group id of its own under this prefix (librdkafka needs one even to assign;
# the ACLs grant the monitor Describe on the prefix for the coordinator lookup).
GROUP_PREFIX = "ys-lag-record-age-"

# Measured on the local broker: the first record of a handful of partitions arrives in
# 20-60 ms; 5 s bounds a slow cluster, after which the partitions not read have no age.
READ_TIMEOUT_S = 5.0


def next_record_timestamps(
    connection: KafkaConnection,
    positions: Mapping[tuple[str, int], int],
    timeout_s: float = READ_TIMEOUT_S,
) -> dict[tuple[str, int], int]:
    """``{(topic, partition): timestamp (ms) of the first readable record at or after the
    offset}``; a partition with no such record (read to its end) or not read in time is left
    out."""
    if not positions:
        return {}
    consumer = connection.consumer(
        f"{GROUP_PREFIX}{uuid.uuid4().hex[:8]}",
        # Assigned, never subscribed: no group is joined and nothing is committed.
        **{
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "max.partition.fetch.bytes": 65_536,
            "fetch.wait.max.ms": 10,
        },
    )
    found: dict[tuple[str, int], int] = {}
    try:
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in positions.items()])
        pending = set(positions)
        deadline = time.monotonic() + timeout_s
        for record in read_to_end(consumer, pending, deadline, poll_timeout_s=0.1):
            key = (record.topic(), record.partition())
            if key not in pending:
                continue  # its first record is already read
            _, stamp = record.timestamp()
            if stamp > 0:
                found[key] = stamp
            pending.discard(key)
        return found
    finally:
        consumer.close()
