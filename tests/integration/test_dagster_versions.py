"""Code and data versions on the real stack: a worker's outputs and today's analytics partition
are in sync ("not Unsynced") right after they are materialized, each table reports its own rows,
and a real change upstream still makes its readers Unsynced.

Staleness is Dagster's own: the resolver the UI uses, over the platform's asset graph, reading
the run's instance. Runs execute in-process against the local broker and a tmp chDB path."""

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import (
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    CachingStaleStatusResolver,
    StaleStatus,
)
from kafka_helpers import create_namespaced_topics, eth_ticks

from ys_platform.assets.analytics import analytics_assets, analytics_run_config
from ys_platform.assets.clickhouse_sink import clickhouse_sink_definitions
from ys_platform.assets.keys import (
    clickhouse_table_key,
    processor_asset_key,
    sink_asset_key,
    topic_asset_key,
)
from ys_platform.assets.processors import processor_assets, processor_jobs
from ys_platform.assets.topics import build_topic_assets
from ys_platform.clients.kafka import produce_messages
from ys_platform.resources.clickhouse import ClickHouseResource
from ys_platform.resources.kafka import KafkaResource
from ys_platform.sinks.clickhouse import load_mapping

TICKS = 250


def _resolver(instance: dg.DagsterInstance, defs: dg.Definitions) -> CachingStaleStatusResolver:
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=datetime.now(UTC), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    return CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def _today_start() -> datetime:
    """A whole minute today (UTC) with room for the ticks before now: today's partition."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    midnight = now.replace(hour=0, minute=0)
    return max(midnight, now - timedelta(minutes=10))


def test_sink_outputs_and_todays_partition_are_in_sync(local_stack, tmp_path):
    mapping = load_mapping()
    namespace = f"t{uuid.uuid4().hex[:8]}."
    prefix = namespace.replace(".", "_")
    kafka = KafkaResource.of(local_stack.kafka)
    create_namespaced_topics(
        kafka.admin(), namespace, [*mapping.topics, "dlq.clickhouse-sink"], partitions=2
    )
    ticks = eth_ticks(TICKS, _today_start(), 2000.0)
    with kafka.get_producer() as producer:
        produce_messages(producer, ticks, namespace=namespace)

    clickhouse = ClickHouseResource(dsn=f"chdb://{tmp_path / 'ch'}")
    sink_assets, jobs = clickhouse_sink_definitions(mapping)
    topics, _ = build_topic_assets()
    defs = dg.Definitions(
        assets=[topics, *sink_assets, *analytics_assets],
        jobs=jobs,
        resources={"kafka": kafka, "clickhouse": clickhouse},
    )
    sink_key = sink_asset_key(mapping.group)
    tables = [clickhouse_table_key(t) for t in mapping.topics.values()]
    with dg.instance_for_test() as instance:
        run = defs.resolve_job_def("clickhouse_sink_job").execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "sinks__clickhouse_sink": {"config": {"namespace": namespace, "max_idle_s": 3}}
                }
            },
        )
        assert run.success

        # Each table reports its own rows and its own topic's offsets, not the sink's totals.
        metadata = {
            key.path[-1]: instance.get_latest_materialization_event(key).asset_materialization
            for key in tables
        }
        market = metadata["market_data"].metadata
        assert market["dagster/row_count"].value == TICKS
        offsets = market["committed_offsets"].value
        # One symbol, one key: every tick is in one partition, whose next offset is the count.
        ((name, offset),) = offsets.items()
        assert name.startswith(f"{namespace}market.prices[") and offset == TICKS
        assert market["consumer_lag"].value == 0
        assert "consumed" not in market and "produced" not in market
        for name, event in metadata.items():
            if name != "market_data":
                assert event.metadata["dagster/row_count"].value == 0, name

        # In sync right after: the sink and every table it wrote.
        resolver = _resolver(instance, defs)
        for key in [sink_key, *tables]:
            assert resolver.get_status(key) == StaleStatus.FRESH, (
                key,
                resolver.get_stale_causes(key),
            )

        # Today is a partition, partial until the day ends, and in sync once materialized.
        ohlcv = clickhouse_table_key("ohlcv_1m")
        today = datetime.now(UTC).date().isoformat()
        graph = defs.resolve_asset_graph()
        assert graph.get(ohlcv).partitions_def.get_last_partition_key() == today
        (ohlcv_asset,) = [a for a in analytics_assets if a.key == ohlcv]
        result = dg.materialize(
            [ohlcv_asset],
            instance=instance,
            partition_key=today,
            resources={"clickhouse": clickhouse},
            run_config=analytics_run_config(prefix, [ohlcv_asset]),
        )
        (event,) = result.get_asset_materialization_events()
        day = event.materialization.metadata
        assert day["partial"].value is True
        minutes = {t.ts.replace(second=0) for t in ticks}
        assert day["dagster/row_count"].value == len(minutes)
        resolver = _resolver(instance, defs)
        assert resolver.get_status(ohlcv, today) == StaleStatus.FRESH, resolver.get_stale_causes(
            ohlcv, today
        )

        # A real change upstream still shows: a new data version of the sink makes its tables
        # Unsynced, while the analytics day (downstream of a table, not of the sink) stays in sync.
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                sink_key,
                tags={DATA_VERSION_TAG: "another", DATA_VERSION_IS_USER_PROVIDED_TAG: "true"},
            )
        )
        resolver = _resolver(instance, defs)
        for key in tables:
            assert resolver.get_status(key) == StaleStatus.STALE, key
            (cause,) = resolver.get_stale_causes(key)
            assert cause.reason == "has a new dependency data version"
            assert cause.dependency.asset_key == sink_key
        assert resolver.get_status(ohlcv, today) == StaleStatus.FRESH


def test_processor_and_its_output_topic_are_in_sync(local_stack):
    group = "price-aggregation-processor"
    namespace = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaResource.of(local_stack.kafka)
    create_namespaced_topics(
        kafka.admin(), namespace, ["market.prices", "market.analytics", f"dlq.{group}"], 2
    )
    ticks = eth_ticks(120, _today_start(), 3000.0)
    with kafka.get_producer() as producer:
        produce_messages(producer, ticks, namespace=namespace)
    topics, _ = build_topic_assets()
    defs = dg.Definitions(
        assets=[topics, *processor_assets], jobs=processor_jobs, resources={"kafka": kafka}
    )
    with dg.instance_for_test() as instance:
        run = defs.resolve_job_def("price_aggregation_processor_job").execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "processors__price_aggregation_processor": {
                        "config": {"namespace": namespace, "max_idle_s": 3.0}
                    }
                }
            },
        )
        assert run.success
        output = instance.get_latest_materialization_event(topic_asset_key("market.analytics"))
        # An output topic keeps what its processor did to write it.
        assert output.asset_materialization.metadata["consumed"].value == len(ticks)
        resolver = _resolver(instance, defs)
        for key in (processor_asset_key(group), topic_asset_key("market.analytics")):
            assert resolver.get_status(key) == StaleStatus.FRESH, resolver.get_stale_causes(key)
