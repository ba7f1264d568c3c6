"""KafkaResource against the local broker: a catalog model produced to its topic comes back equal,
keyed and with the catalog's headers; the subscribe helper commits only after its handler."""

import threading
import uuid
from datetime import timedelta

from confluent_kafka import TopicPartition
from kafka_helpers import create_namespaced_topics, recent_minute

from ys_platform.catalog.codec import decode
from ys_platform.catalog.models import DefiProtocol, MarketPrice
from ys_platform.resources.kafka import KafkaResource

TS = recent_minute() + timedelta(seconds=15, milliseconds=250)


def test_model_round_trip_and_subscribe_commits_after_handler(local_stack):
    kafka = KafkaResource.of(local_stack.kafka)
    admin = kafka.admin()
    # An empty namespace: the catalog topics themselves, reconciled.
    create_namespaced_topics(admin, "", ["market.prices", "defi.protocols"])
    tag = uuid.uuid4().hex[:8]
    price = MarketPrice(
        symbol="ETH/USD",
        base="ETH",
        quote="USD",
        price=3012.45,
        volume=1.5,
        source=f"test-{tag}",
        chain="ethereum",
        venue="uniswap-v2",
        reserve_base=1000.0,
        reserve_quote=3012450.0,
        liquidity_usd=6.02e6,
        ts=TS,
    )
    protocol = DefiProtocol(
        id=f"aave-v3-{tag}",
        name="Aave V3",
        description="Decentralized lending protocol",
        category="lending",
        tvl=5.2e9,
        apy=4.2,
        risk_score=0.3,
        chains=["ethereum"],
        updated_at=TS,
    )
    group = f"test-roundtrip-{tag}"
    # Subscribe first (from the end) so only this test's records are seen.
    seen: list = []
    stop = threading.Event()

    def handler(batch) -> None:
        for record in batch:
            message = decode(record.topic(), record.value())
            if getattr(message, "source", None) == price.source or message == protocol:
                seen.append((record, message))
        if len(seen) == 2:
            stop.set()

    assert kafka.produce([price, protocol]) == 2
    thread = threading.Thread(
        target=kafka.subscribe,
        args=(["market.prices", "defi.protocols"], group, handler),
        kwargs={"stop": stop},
        daemon=True,
    )
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the produced messages never arrived"

    by_topic = {record.topic(): (record, message) for record, message in seen}
    record, message = by_topic["market.prices"]
    assert message == price
    assert record.key() == b"ETH/USD"
    assert record.timestamp()[1] == int(TS.timestamp() * 1000)
    assert dict(record.headers()) == {"schema-version": b"1", "content-type": b"application/json"}
    record, message = by_topic["defi.protocols"]
    assert message == protocol
    assert record.key() == protocol.id.encode()

    # The group's committed offsets are one past each handled record.
    with kafka.get_consumer(group) as consumer:
        for topic_name, (record, _) in by_topic.items():
            (committed,) = consumer.committed(
                [TopicPartition(topic_name, record.partition())], timeout=10
            )
            assert committed.offset == record.offset() + 1


def test_check_reachable_counts_the_brokers_of_the_local_stack(local_stack):
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.local import kafka_bootstrap

    assert check_reachable(local_stack.kafka) == len(kafka_bootstrap(local_stack).split(","))


def test_the_resource_of_the_settings_reaches_the_local_stack(local_stack):
    from ys_platform.resources.bindings import bind_resources

    kafka = bind_resources(local_stack)["kafka"]
    assert kafka.connection == local_stack.kafka
    assert len(kafka.admin().list_topics(timeout=30).brokers) >= 1
