"""A topic as an operator sees it: partitions, leaders, replicas, ISR, configs that differ from
the defaults, offsets; and its last (or first) records."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message, TopicCollection
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    OffsetSpec,
    ResourceType,
)

from ys_platform.clients.kafka import KafkaConnection
from ys_platform.operations.admin import ADMIN_TIMEOUT_S, list_offsets, result
from ys_platform.operations.records import order, partitions, read_ranges, reader


@dataclass(frozen=True)
class PartitionView:
    partition: int
    leader: int | None
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    earliest: int
    latest: int
    """The high watermark: the offset the next record gets."""

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True)
class ConfigView:
    name: str
    value: str | None
    """None for a sensitive config (the broker does not return it)."""
    source: str
    """Where it is set: ``DYNAMIC_TOPIC_CONFIG`` (this topic), ``STATIC_BROKER_CONFIG``, ..."""


@dataclass(frozen=True)
class TopicView:
    name: str
    topic_id: str
    partitions: tuple[PartitionView, ...]
    configs: tuple[ConfigView, ...]
    """Only those that differ from Kafka's defaults."""

    @property
    def replication_factor(self) -> int:
        return min(len(p.replicas) for p in self.partitions)


def describe_topic(admin: AdminClient, name: str) -> TopicView:
    """Partitions with leader, replicas, ISR and offsets, and the non-default configs."""
    futures = admin.describe_topics(TopicCollection([name]), request_timeout=ADMIN_TIMEOUT_S)
    description = result(futures[name], f"could not describe topic {name!r}")
    resource = ConfigResource(ResourceType.TOPIC, name)
    configs = result(
        admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)[resource],
        f"could not describe the configs of {name!r}",
    )
    keys = [(name, p.id) for p in description.partitions]
    earliest = list_offsets(admin, keys, OffsetSpec.earliest())
    latest = list_offsets(admin, keys, OffsetSpec.latest())
    return TopicView(
        name=name,
        topic_id=str(description.topic_id),
        partitions=tuple(
            PartitionView(
                partition=p.id,
                leader=p.leader.id if p.leader is not None else None,
                replicas=tuple(r.id for r in p.replicas),
                isr=tuple(r.id for r in p.isr),
                earliest=earliest[(name, p.id)],
                latest=latest[(name, p.id)],
            )
            for p in sorted(description.partitions, key=lambda p: p.id)
        ),
        configs=tuple(
            ConfigView(c.name, None if c.is_sensitive else c.value, ConfigSource(c.source).name)
            for c in sorted(configs.values(), key=lambda c: c.name)
            if not c.is_default
        ),
    )


DEFAULT_TAIL = 10


def tail(
    connection: KafkaConnection,
    topic: str,
    *,
    count: int | None = DEFAULT_TAIL,
    from_beginning: bool = False,
    key: str | None = None,
) -> list[Message]:
    """The last ``count`` committed records of ``topic`` (with ``key``, if given), oldest first;
    with ``from_beginning`` the first ``count`` (all, if ``count`` is None).

    Records of all partitions are merged in time order (then partition, offset). Going back from
    the end, each partition is read in growing windows until it has ``count`` records that
    match, or is read whole: transaction markers and other keys take offsets too.
    """
    wanted_key = None if key is None else key.encode()
    keep = None if wanted_key is None else (lambda r: r.key() == wanted_key)
    consumer = reader(connection)
    try:
        bounds = partitions(consumer, topic)
        if from_beginning:
            found = read_ranges(consumer, topic, bounds, keep=keep, limit=count)
            records = sorted((r for rs in found.values() for r in rs), key=order)
            return records if count is None else records[:count]
        wanted = DEFAULT_TAIL if count is None else count
        collected: dict[int, list[Message]] = {p: [] for p in bounds}
        ends = {p: end for p, (_, end) in bounds.items()}
        window = max(wanted, 1)
        while True:
            short = {
                p: (max(bounds[p][0], ends[p] - window), ends[p])
                for p in bounds
                if len(collected[p]) < wanted and ends[p] > bounds[p][0]
            }
            if not short:
                break
            found = read_ranges(consumer, topic, short, keep=keep)
            for p, (start, _) in short.items():
                collected[p] = found[p] + collected[p]
                ends[p] = start
            window *= 4
        records = sorted((r for rs in collected.values() for r in rs), key=order)
        return records[-wanted:] if wanted else []
    finally:
        consumer.close()
