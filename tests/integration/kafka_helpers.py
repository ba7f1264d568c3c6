"""Small helpers shared by the integration tests that talk to the local broker."""

import time

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from ys_platform.streaming.topics import describe_topics

# A config change goes through the KRaft controller and reaches the broker that answers
# describe_configs a moment later; 15 s is far above the ~100 ms seen here.
PROPAGATION_TIMEOUT_S = 15.0


def set_config_by_hand(admin: AdminClient, topic: str, key: str, value: str) -> None:
    """Alter a topic config as an operator would, and wait until the cluster reports it."""
    entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    deadline = time.monotonic() + PROPAGATION_TIMEOUT_S
    while describe_topics(admin, [topic])[topic].configs.get(key) != value:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{topic}: {key}={value} not visible after {PROPAGATION_TIMEOUT_S}s"
            )
        time.sleep(0.1)


def create_namespaced_topics(
    admin: AdminClient, namespace: str, names: list[str], partitions: int | None = None
) -> None:
    """Catalog topics under a test's own prefix (optionally with fewer partitions), in sync."""
    from dataclasses import replace

    from ys_platform.catalog.topics import topic
    from ys_platform.streaming.topics import apply_plans, plan_topics

    specs = [
        replace(topic(n), name=f"{namespace}{n}", partitions=partitions or topic(n).partitions)
        for n in names
    ]
    apply_plans(admin, plan_topics(admin, specs))
    deadline = time.monotonic() + PROPAGATION_TIMEOUT_S
    while len(describe_topics(admin, [s.name for s in specs])) < len(specs):
        if time.monotonic() > deadline:
            raise AssertionError(f"topics {[s.name for s in specs]} not visible")
        time.sleep(0.1)


def read_topic(connection, topic: str, *, idle_s: float = 3.0, timeout_s: float = 60.0) -> list:
    """Every committed record of ``topic`` (read_committed), in partition-then-offset order."""
    import uuid

    from confluent_kafka import TopicPartition

    consumer = connection.consumer(f"test-reader-{uuid.uuid4().hex[:8]}", enable_partition_eof=True)
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records, eof = [], set()
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.5)
            for record in batch:
                if record.error() is None:
                    records.append(record)
                    last = time.monotonic()
                else:
                    eof.add(record.partition())
            if len(eof) == len(partitions) and time.monotonic() - last > idle_s:
                break
        return sorted(records, key=lambda r: (r.partition(), r.offset()))
    finally:
        consumer.close()


def recent_minute(hours_ago: float = 1.0):
    """A whole minute about ``hours_ago`` before now, as an event-time origin for test data.

    Never a fixed date: topics keep records 7 days by their timestamp, so a record stamped months
    ago can be deleted by retention between being produced and being read.
    """
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC) - timedelta(hours=hours_ago)
    return now.replace(second=0, microsecond=0)


def eth_ticks(count: int, start, first_price: float) -> list:
    """``count`` ETH/USD ticks from one source, a second apart from ``start``, the price rising
    by 1 each tick from ``first_price``: input whose windows a test can compute by hand."""
    from datetime import timedelta

    from ys_platform.catalog.models import MarketPrice

    return [
        MarketPrice(
            symbol="ETH/USD",
            base="ETH",
            quote="USD",
            price=first_price + i,
            source="s",
            chain="ethereum",
            venue="v",
            ts=start + timedelta(seconds=i),
        )
        for i in range(count)
    ]
