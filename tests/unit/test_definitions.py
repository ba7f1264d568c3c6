"""The code location loads without any service and exposes every catalog topic as an asset."""

import dagster as dg

from ys_platform.catalog.topics import ALL_TOPICS, TOPICS


def test_code_location_loads_with_every_topic_asset():
    from ys_platform.definitions import defs

    graph = defs().resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    for spec in ALL_TOPICS:
        assert dg.AssetKey(["kafka", spec.name]) in keys
    assert len([k for k in keys if k.path[0] == "kafka" and not k.path[1].startswith("dlq.")]) == 16
    assert len(TOPICS) == 16
    check_keys = graph.asset_check_keys
    assert (
        dg.AssetCheckKey(dg.AssetKey(["kafka", "defi.transactions"]), "matches_catalog")
        in check_keys
    )
    assert graph.get(dg.AssetKey(["kafka", "defi.transactions"])).group_name == "defi"


def test_lineage_reads_topic_processor_topic():
    from ys_platform.definitions import defs

    graph = defs().resolve_asset_graph()
    processor = dg.AssetKey(["processors", "price-aggregation-processor"])
    assert graph.get(processor).parent_keys == {dg.AssetKey(["kafka", "market.prices"])}
    assert graph.get(dg.AssetKey(["kafka", "market.analytics"])).parent_keys == {processor}
    risk = dg.AssetKey(["processors", "risk-assessment-processor"])
    assert graph.get(dg.AssetKey(["kafka", "risk.alerts"])).parent_keys == {risk}
    assert dg.AssetKey(["kafka", "market.analytics"]) in graph.get(risk).parent_keys
    sensors = {s.name for s in defs().sensors}
    assert {
        "price_aggregation_processor_keepalive",
        "risk_assessment_processor_keepalive",
        "crosschain_arbitrage_processor_keepalive",
    } <= sensors


def test_sink_lineage_and_the_location_validates():
    from ys_platform.definitions import defs

    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    graph = definitions.resolve_asset_graph()
    sink = dg.AssetKey(["sinks", "clickhouse-sink"])
    assert dg.AssetKey(["kafka", "market.prices"]) in graph.get(sink).parent_keys
    assert graph.get(dg.AssetKey(["clickhouse", "market_data"])).parent_keys == {
        sink,
        dg.AssetKey(["kafka", "market.prices"]),
    }
    assert "clickhouse_sink_keepalive" in {s.name for s in definitions.sensors}
    ohlcv = graph.get(dg.AssetKey(["clickhouse", "ohlcv_1m"]))
    assert ohlcv.parent_keys == {dg.AssetKey(["clickhouse", "market_data"])}
    assert ohlcv.partitions_def is not None
    assert {s.name for s in definitions.schedules} == {
        "analytics_daily_schedule",
        "monitoring_checks_schedule",
    }


def test_cdc_lineage_postgres_to_connector_to_topic():
    from ys_platform.definitions import defs

    graph = defs().resolve_asset_graph()
    connector = dg.AssetKey(["connectors", "postgres-source"])
    assert dg.AssetKey(["postgres", "protocols"]) in graph.get(connector).parent_keys
    assert connector in graph.get(dg.AssetKey(["kafka", "defi.protocols"])).parent_keys
    assert connector in graph.get(dg.AssetKey(["kafka", "defi.transactions"])).parent_keys


def test_vector_lineage_topic_to_sink_to_collection():
    from ys_platform.definitions import defs

    graph = defs().resolve_asset_graph()
    sink = dg.AssetKey(["sinks", "vector-sink"])
    assert dg.AssetKey(["kafka", "defi.protocols"]) in graph.get(sink).parent_keys
    assert graph.get(dg.AssetKey(["qdrant", "protocols"])).parent_keys == {
        sink,
        dg.AssetKey(["kafka", "defi.protocols"]),
    }


def test_a_lag_check_beside_each_worker_and_freshness_on_the_cdc_connector():
    from ys_platform.definitions import defs

    definitions = defs()
    graph = definitions.resolve_asset_graph()
    lag = {k.asset_key for k in graph.asset_check_keys if k.name == "consumer_lag"}
    assert lag == {
        dg.AssetKey(["processors", "price-aggregation-processor"]),
        dg.AssetKey(["processors", "risk-assessment-processor"]),
        dg.AssetKey(["processors", "crosschain-arbitrage-processor"]),
        dg.AssetKey(["sinks", "clickhouse-sink"]),
        dg.AssetKey(["sinks", "vector-sink"]),
    }
    freshness = dg.AssetCheckKey(dg.AssetKey(["connectors", "postgres-source"]), "source_freshness")
    assert freshness in graph.asset_check_keys
    (schedule,) = [s for s in definitions.schedules if s.name == "monitoring_checks_schedule"]
    assert schedule.cron_schedule == "* * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = definitions.resolve_job_def("monitoring_checks_job")
    assert job.executor_def.name == "in_process"
    assert job.asset_layer.asset_graph.asset_check_keys == {
        *(dg.AssetCheckKey(k, "consumer_lag") for k in lag),
        freshness,
    }
