"""``run_load`` (``ys-platform load``) against the price-aggregation processor running in this
process: exact counts produced, latency percentiles of its windows, and the groups' lag."""

import threading
import time
import uuid

from confluent_kafka import ConsumerGroupState, KafkaException, TopicPartition
from kafka_helpers import create_namespaced_topics

from ys_platform.catalog.codec import topic_of
from ys_platform.operations.load import LoadPlan, run_load
from ys_platform.processors.price_aggregation import GROUP
from ys_platform.processors.runner import run_processor
from ys_platform.sources import DEFAULT_MIX, MarketSimulator
from ys_platform.streaming.worker import WorkerConfig

RATE = 2_000.0
DURATION_S = 10.0
ARBITRAGE = "crosschain-arbitrage-processor"


def _wait_for_members(admin, group_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            group = admin.describe_consumer_groups([group_id])[group_id].result(10)
        except (KafkaException, TimeoutError):
            group = None  # its coordinator still loading
        if group is not None and group.state == ConsumerGroupState.STABLE and group.members:
            return
        time.sleep(0.2)
    raise AssertionError(f"{group_id} got no partitions in {timeout_s:.0f} s")


def test_load_reports_counts_latency_and_lag(local_stack):
    settings = local_stack
    namespace = f"t{uuid.uuid4().hex[:8]}."
    admin = settings.kafka.admin()
    inputs = f"{namespace}market.prices"
    create_namespaced_topics(
        admin, namespace, ["market.prices", "market.analytics", GROUP.dead_letter_topic], 3
    )
    stop = threading.Event()
    config = WorkerConfig(namespace=namespace, instance_id="0")
    worker = threading.Thread(
        target=run_processor,
        args=(settings, GROUP.group_id),
        kwargs={"config": config, "stop": stop},
    )
    worker.start()
    try:
        _wait_for_members(admin, f"{namespace}{GROUP.group_id}")
        plan = LoadPlan(
            rate=RATE, duration_s=DURATION_S, topics=("market.prices",), namespace=namespace
        )
        report = run_load(settings.kafka, plan)
    finally:
        stop.set()
        worker.join(60)

    # Exactly the simulator's stream of prices alone: rate x duration ticks.
    mix = {t: 1.0 if t == "market.prices" else 0.0 for t in DEFAULT_MIX}
    simulated = MarketSimulator(7, start_ms=0, users=0, mix=mix).events(DURATION_S, RATE)
    expected = sum(1 for m in simulated if topic_of(m) == "market.prices")
    assert expected == RATE * DURATION_S
    assert report.produced == {"market.prices": expected}
    consumer = settings.kafka.consumer(f"{namespace}check")
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(inputs, p))[1] for p in range(3)]
    finally:
        consumer.close()
    assert sum(ends) == expected
    assert abs(report.achieved_rate - RATE) / RATE < 0.03

    # Windows closed during the load, each a sample; percentiles in order.
    stats = report.latency
    assert stats is not None and stats.samples == report.outputs["market.analytics"] > 0
    assert 0 < stats.p50_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms
    assert report.latency_by_topic["market.analytics"] == stats

    # The processor caught up; crosschain arbitrage (reading market.prices too) is not running
    # and lags by every tick.
    price_group, arbitrage_group = f"{namespace}{GROUP.group_id}", f"{namespace}{ARBITRAGE}"
    assert report.running == (price_group,)
    assert isinstance(report.lag_at_end[price_group], int)
    assert report.lag_after_drain[price_group] == 0
    assert report.caught_up_s[price_group] is not None
    assert report.lag_at_end[arbitrage_group] == expected
    assert "not running" in report.summary()


def test_a_load_in_a_thread_stops_on_its_event_and_says_no_processor_runs(local_stack):
    settings = local_stack
    namespace = f"t{uuid.uuid4().hex[:8]}."
    create_namespaced_topics(settings.kafka.admin(), namespace, ["crosschain.events"], 3)
    plan = LoadPlan(
        rate=500.0, duration_s=60.0, topics=("crosschain.events",), namespace=namespace, drain_s=0
    )
    stop, reports = threading.Event(), []
    loading = threading.Thread(target=lambda: reports.append(run_load(settings.kafka, plan, stop)))
    loading.start()
    time.sleep(1.5)
    stop.set()
    stopped = time.monotonic()
    loading.join(30)
    assert time.monotonic() - stopped < 5.0
    (report,) = reports
    assert report.stopped
    consumer = settings.kafka.consumer(f"{namespace}check")
    try:
        topic = f"{namespace}crosschain.events"
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in range(3)]
    finally:
        consumer.close()
    assert 0 < report.produced["crosschain.events"] == sum(ends) < 500 * 60
    assert report.latency is None and report.running == ()
    # Arbitrage reads crosschain.events whole (broadcast), never as a group: no lag.
    assert report.lag_at_end == {f"{namespace}{ARBITRAGE}": 0}
    assert "no latency: no processor is running on these topics" in report.summary()
