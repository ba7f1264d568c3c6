"""The ClickHouse sink as a Dagster run (in-process, local broker, a tmp chDB path): rows land,
the table assets get materializations from the run, and the table asset reports the row count."""

import uuid

import dagster as dg
from kafka_helpers import create_namespaced_topics, eth_ticks, recent_minute

from ys_platform.assets.clickhouse_sink import clickhouse_sink_definitions
from ys_platform.assets.keys import clickhouse_table_key
from ys_platform.clients.kafka import produce_messages
from ys_platform.resources.clickhouse import ClickHouseResource
from ys_platform.resources.kafka import KafkaResource
from ys_platform.sinks.clickhouse import load_mapping

START = recent_minute()


def test_sink_run_writes_rows_and_materializes_tables(local_stack, tmp_path):
    mapping = load_mapping()
    namespace = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaResource.of(local_stack.kafka)
    create_namespaced_topics(
        kafka.admin(), namespace, [*mapping.topics, "dlq.clickhouse-sink"], partitions=2
    )
    ticks = eth_ticks(250, START, 2000.0)
    with kafka.get_producer() as producer:
        produce_messages(producer, ticks, namespace=namespace)

    clickhouse = ClickHouseResource(dsn=f"chdb://{tmp_path / 'ch'}")
    assets, jobs = clickhouse_sink_definitions(mapping)
    defs = dg.Definitions(
        assets=assets, jobs=jobs, resources={"kafka": kafka, "clickhouse": clickhouse}
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("clickhouse_sink_job").execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "sinks__clickhouse_sink": {
                        "config": {"namespace": namespace, "max_idle_s": 3.0}
                    }
                }
            },
        )
        assert result.success
        event = instance.get_latest_materialization_event(clickhouse_table_key("market_data"))
        metadata = event.asset_materialization.metadata
        # The table's own rows, not the sink's counters.
        assert metadata["dagster/row_count"].value == len(ticks)
        assert metadata["written_to"].value == f"{namespace.replace('.', '_')}market_data"

    table = f"{namespace.replace('.', '_')}market_data"
    with clickhouse.get_client() as client:
        rows = client.query(
            f"SELECT count(), uniqExact(_partition, _offset), sum(price) FROM {table}"
        ).result_rows[0]
    assert rows == (250, 250, sum(t.price for t in ticks))

    tables = dg.materialize(
        [assets[1]],
        resources={"clickhouse": clickhouse},
        selection=dg.AssetSelection.assets(
            clickhouse_table_key("analytics"), clickhouse_table_key("transactions")
        ),
    )
    events = {
        e.asset_key.path[-1]: e.materialization.metadata
        for e in tables.get_asset_materialization_events()
    }
    assert events["analytics"]["dagster/row_count"].value == 0
    assert "latest_rows" not in events["analytics"]  # append-only: every row is current
    # Versioned (CDC) table: versions stored, and the rows as of now under FINAL.
    transactions = events["transactions"]
    assert transactions["dagster/row_count"].value == transactions["latest_rows"].value == 0
    assert "ReplacingMergeTree(_offset, _is_deleted)" in events["transactions"]["ddl"].value
