"""The ClickHouse sink and its tables: topics → clickhouse-sink → ``["clickhouse", table]``.

Built from the sink's connector file when the code location loads (not at import).
"""

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg

from ys_platform.assets.keys import clickhouse_table_key, sink_asset_key
from ys_platform.assets.sinks import (
    SinkRunConfig,
    sink_asset,
    sink_worker,
    store_asset_spec,
    store_output,
)
from ys_platform.assets.versions import data_version
from ys_platform.assets.workers import StoreCounter, run_worker_in_dagster, worker_job
from ys_platform.catalog.tables import TableSpec, progress_table_ddl
from ys_platform.clients.locks import StoreLockedError
from ys_platform.resources.clickhouse import ClickHouseResource
from ys_platform.resources.kafka import KafkaResource
from ys_platform.sinks.clickhouse import ClickHouseSink, ClickHouseSinkMapping

TABLE_GROUP = "clickhouse"


def table_data_version(spec: TableSpec) -> dg.DataVersion:
    """A stream-fed table's definition (its DDL): see :mod:`~ys_platform.assets.versions`."""
    return data_version("clickhouse", spec.ddl())


def row_counter(clickhouse: ClickHouseResource, tables: Sequence[str]) -> StoreCounter:
    """Rows per table, on a client of the step's own: chDB joins the engine this process already
    runs for the sink, a server is shared anyway. A path held by another process (between the
    sink's flushes, see ``share_every_s``) is not waited for: the next record counts."""

    def count(running: bool) -> Mapping[str, Mapping[str, dg.MetadataValue]]:
        try:
            with clickhouse.get_client(lock_timeout_s=0) as client:
                return {
                    table: {
                        "dagster/row_count": dg.MetadataValue.int(
                            int(client.query(f"SELECT count() FROM `{table}`").result_rows[0][0])
                        )
                    }
                    for table in tables
                }
        except StoreLockedError:
            return {}

    return count


def clickhouse_sink_definitions(
    mapping: ClickHouseSinkMapping,
) -> tuple[list[dg.AssetsDefinition], list[object]]:
    """The sink's long-running asset, its job, and the table assets it feeds."""
    sink_key = sink_asset_key(mapping.group)
    topics = dict(mapping.topics)
    specs = mapping.tables()
    table_assets = {
        topic: store_asset_spec(
            clickhouse_table_key(table),
            sink_key,
            topic,
            group_name=TABLE_GROUP,
            store_kind="clickhouse",
            description=(
                f"The rows of {topic}, one version per record, with its Kafka topic, "
                "partition and offset; the latest version of each row under FINAL."
                if specs[topic].versioned
                else f"Rows of {topic}, one per record, with their Kafka topic, "
                "partition and offset."
            ),
        )
        for topic, table in topics.items()
    }

    @sink_asset(
        sink_key,
        topics,
        "clickhouse",
        "Writes topics into ClickHouse exactly once: each partition's offset range is stored "
        "beside the rows and every batch carries an insert de-duplication token.",
    )
    def clickhouse_sink(
        context: dg.AssetExecutionContext,
        kafka: KafkaResource,
        clickhouse: ClickHouseResource,
        config: SinkRunConfig,
    ) -> dg.MaterializeResult:
        sink = ClickHouseSink(
            clickhouse.get_client,
            mapping,
            config.namespace,
            # chDB: assets and commands in other processes get the path between two flushes.
            readers=clickhouse.waiting_readers,
        )
        worker = sink_worker(kafka, sink, mapping, config)
        outputs = [
            store_output(
                table_assets[t],
                sink.table(t),
                table_data_version(specs[t]),
                sink.physical_topic(t),
            )
            for t in topics
        ]
        counter = row_counter(clickhouse, [o.target for o in outputs])
        return run_worker_in_dagster(context, worker, outputs, config.max_idle_s, counter)

    @dg.multi_asset(
        name="clickhouse_tables",
        specs=list(table_assets.values()),
        can_subset=True,
        description="Create the sink's tables (idempotent) and report their row counts.",
    )
    def clickhouse_tables(
        context: dg.AssetExecutionContext, clickhouse: ClickHouseResource
    ) -> Iterator[dg.MaterializeResult]:
        with clickhouse.get_client() as client:
            client.command(progress_table_ddl())
            for topic, table in topics.items():
                key = clickhouse_table_key(table)
                if key not in context.selected_asset_keys:
                    continue
                spec = specs[topic]
                ddl = spec.ddl()
                client.command(ddl)
                rows = client.query(f"SELECT count() FROM {table}").result_rows[0][0]
                metadata = {
                    "dagster/row_count": dg.MetadataValue.int(int(rows)),
                    "ddl": dg.MetadataValue.md(f"```sql\n{ddl}\n```"),
                }
                if spec.versioned:
                    # Versions stored vs rows as of now: what the source of record holds.
                    latest = client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0]
                    metadata["latest_rows"] = dg.MetadataValue.int(int(latest))
                yield dg.MaterializeResult(
                    asset_key=key, metadata=metadata, data_version=table_data_version(spec)
                )

    return [clickhouse_sink, clickhouse_tables], [worker_job(mapping.consumer_group, sink_key)]
