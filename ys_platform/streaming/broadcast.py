"""Reference data every worker needs whole — latest prices for risk, gas and bridge quotes for
arbitrage — read from all partitions of a topic, like a global table.

A broadcast reader belongs to no consumer group and commits nothing: on start it reads the
topic from ``lookback_ms`` ago up to its end (so the first batch already sees the reference data),
then tops up without blocking before each batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import OFFSET_END, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from ys_platform.catalog.codec import DecodeError
from ys_platform.catalog.models import Message
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.clients.kafka_faults import through_faults
from ys_platform.streaming.member import decode_slices

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
# Records per top-up: enough to follow a busy reference topic, small enough to keep the
# partitioned batch (and its transaction) from waiting on it.
TOP_UP_RECORDS = 5000


class BroadcastReader:
    def __init__(
        self,
        connection: KafkaConnection,
        topics: Sequence[tuple[str, str]],
        group_id: str,
        lookback_ms: int,
    ) -> None:
        """``topics`` pairs each physical topic name with its catalog name (for decoding)."""
        self._catalog_name = dict(topics)
        self._consumer = connection.consumer(
            f"{group_id}.broadcast", enable_partition_eof=True, isolation_level="read_committed"
        )
        self._lookback_ms = lookback_ms
        self.rejected: list[tuple[KafkaMessage, DecodeError]] = []
        """Records that are not valid messages, with the reason, until the worker takes them
        (:meth:`take_rejected`) to dead-letter them."""

    def start(self) -> list[Message]:
        """Assign every partition from the lookback and read up to the current end."""
        since = int(time.time() * 1000) - self._lookback_ms
        queries = []
        for topic in self._catalog_name:
            metadata = self._consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
            if metadata.error is not None:
                raise RuntimeError(f"broadcast topic {topic}: {metadata.error.str()}")
            queries += [TopicPartition(topic, p, since) for p in sorted(metadata.partitions)]
        consumer = self._consumer
        start = through_faults(
            lambda: consumer.offsets_for_times(queries, timeout=TIMEOUT_S),
            f"broadcast of {', '.join(self._catalog_name.values())}: finding its lookback",
            log,
        )
        self._consumer.assign(
            [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                for tp in start
            ]
        )
        pending = {(tp.topic, tp.partition) for tp in start}
        messages: list[Message] = []
        deadline = time.monotonic() + TIMEOUT_S
        while pending and time.monotonic() < deadline:
            messages += self._read(pending, timeout_s=0.5)
        return messages

    def top_up(self) -> list[Message]:
        """What arrived since the last call, without waiting."""
        return self._read(None, timeout_s=0)

    def close(self) -> None:
        self._consumer.close()

    def take_rejected(self) -> list[tuple[KafkaMessage, DecodeError]]:
        """The records refused since the last call, and why (each handed over once)."""
        rejected, self.rejected = self.rejected, []
        return rejected

    def _read(self, pending: set[tuple[str, int]] | None, timeout_s: float) -> list[Message]:
        records = self._consumer.consume(TOP_UP_RECORDS, timeout=timeout_s)
        slices: dict[tuple[str, int], list[KafkaMessage]] = {}
        for record in records:
            err = record.error()
            if err is None:
                key = (self._catalog_name[record.topic()], record.partition())
                slices.setdefault(key, []).append(record)
            elif err.code() == KafkaError._PARTITION_EOF and pending is not None:
                pending.discard((record.topic(), record.partition()))
        messages: list[Message] = []
        # The checks of the group's own inputs (envelope, value, event time). A reference topic
        # may have no other consumer (crosschain.events): its rejects are dead-lettered by the
        # worker reading it, or nobody would ever see them.
        for decoded in decode_slices(slices).values():
            messages += decoded.messages
            self.rejected += decoded.failures
        return messages
