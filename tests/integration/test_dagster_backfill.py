"""The market.analytics backfill job, run in-process against the local broker, writes exactly the
records the live processor emitted for the window ends of its range."""

import threading
import uuid
from collections import Counter
from datetime import timedelta

import dagster as dg
from kafka_helpers import create_namespaced_topics, read_topic, recent_minute

from ys_platform.assets.backfills import market_analytics_backfill
from ys_platform.assets.keys import topic_asset_key
from ys_platform.catalog.codec import decode
from ys_platform.catalog.models import MarketPrice
from ys_platform.clients.kafka import produce_messages
from ys_platform.processors.runner import run_processor
from ys_platform.resources.kafka import KafkaResource
from ys_platform.streaming.worker import WorkerConfig

START = recent_minute()


def test_backfill_job_rewrites_the_live_records(local_stack):
    namespace = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaResource.of(local_stack.kafka)
    create_namespaced_topics(
        kafka.admin(),
        namespace,
        ["market.prices", "market.analytics", "dlq.price-aggregation-processor"],
        2,
    )
    ticks = [
        MarketPrice(
            symbol=f"{base}/USD",
            base=base,
            quote="USD",
            price=100.0 + i % 7,
            volume=1.0 + i % 3,
            source=f"s{i % 2}",
            chain="ethereum",
            venue="v",
            ts=START + timedelta(milliseconds=700 * i),
        )
        for i in range(400)
        for base in ("ETH", "BTC")
    ]
    with kafka.get_producer() as producer:
        produce_messages(producer, ticks, namespace=namespace)
    run_processor(
        local_stack,
        "price-aggregation-processor",
        config=WorkerConfig(namespace=namespace),
        stop=threading.Event(),
        max_idle_s=3,
    )
    topic = f"{namespace}market.analytics"
    live = [decode("market.analytics", r.value()) for r in read_topic(kafka.connection, topic)]
    start, end = START + timedelta(seconds=100), START + timedelta(seconds=200)
    expected = [m for m in live if start <= m.window_end <= end]
    assert len(expected) == 2 * 21  # two symbols, window ends 100 s, 105 s, ... 200 s

    with dg.instance_for_test() as instance:
        result = market_analytics_backfill.execute_in_process(
            instance=instance,
            resources={"kafka": kafka},
            run_config={
                "ops": {
                    "backfill_market_analytics": {
                        "config": {
                            "start": start.isoformat(),
                            "end": end.isoformat(),
                            "namespace": namespace,
                        }
                    }
                }
            },
        )
        assert result.success
        event = instance.get_latest_materialization_event(topic_asset_key("market.analytics"))
        assert event.asset_materialization.metadata["produced"].value == len(expected)

    after = [decode("market.analytics", r.value()) for r in read_topic(kafka.connection, topic)]
    added = Counter(after) - Counter(live)
    assert added == Counter(expected)
