"""The ys_platform code location: assets, checks, sensors, schedules, jobs and resources.

Built when Dagster loads the location (``@dg.definitions``), not at import: settings are read
and the connector files parsed then, and a bad value fails the load with a sentence naming it.
"""

import dagster as dg

from ys_platform.assets.acls import build_acl_assets
from ys_platform.assets.analytics import analytics_assets, analytics_checks, analytics_schedules
from ys_platform.assets.backfills import market_analytics_backfill
from ys_platform.assets.clickhouse_sink import clickhouse_sink_definitions
from ys_platform.assets.connectors import build_connector_defs, connector_topic_deps
from ys_platform.assets.keys import processor_asset_key, sink_asset_key
from ys_platform.assets.lag_checks import build_lag_checks, monitoring_check_schedule
from ys_platform.assets.lag_source import KafkaLagSource
from ys_platform.assets.postgres import postgres_tables
from ys_platform.assets.processors import processor_assets, processor_jobs
from ys_platform.assets.topics import build_topic_assets
from ys_platform.assets.vector_sink import vector_sink_definitions
from ys_platform.assets.workers import worker_console_logger
from ys_platform.catalog.topics import CONSUMER_GROUPS
from ys_platform.resources.bindings import bind_resources
from ys_platform.sensors.connectors import build_connector_health_sensor
from ys_platform.sensors.keepalive import KeptWorker, build_keepalive_sensors, processor_workers
from ys_platform.settings import load_settings
from ys_platform.sinks import clickhouse, vector


@dg.definitions
def defs() -> dg.Definitions:
    settings = load_settings()
    connectors = build_connector_defs(settings.connectors_dir)
    kafka_topics, kafka_topics_match_catalog = build_topic_assets(
        connector_topic_deps(connectors.files)
    )
    kafka_acls, kafka_acls_match_catalog = build_acl_assets(connectors.files)
    clickhouse_mapping = clickhouse.load_mapping(settings.connectors_dir / clickhouse.MAPPING_FILE)
    vector_mapping = vector.load_mapping(settings.connectors_dir / vector.MAPPING_FILE)
    sink_assets, sink_jobs = clickhouse_sink_definitions(clickhouse_mapping)
    vector_assets, vector_jobs = vector_sink_definitions(vector_mapping)
    asset_of = {"processor": processor_asset_key, "sink": sink_asset_key}
    workers = processor_workers(settings.replicas)
    workers += [
        KeptWorker(g.group_id, sink_asset_key(g.group_id), settings.replicas(g))
        for g in CONSUMER_GROUPS
        if g.group_id in (clickhouse_mapping.group, vector_mapping.group)
    ]
    lag_checks = build_lag_checks(
        {g.group_id: (asset_of[g.kind](g.group_id), g.lag_bound_s) for g in CONSUMER_GROUPS},
        KafkaLagSource.of,
    )
    monitoring_job, monitoring_schedule = monitoring_check_schedule(
        [*lag_checks, *connectors.freshness_checks]
    )
    return dg.Definitions(
        assets=[
            postgres_tables,
            *connectors.assets,
            kafka_topics,
            kafka_acls,
            *processor_assets,
            *sink_assets,
            *vector_assets,
            *analytics_assets,
        ],
        asset_checks=[
            kafka_topics_match_catalog,
            kafka_acls_match_catalog,
            *connectors.checks,
            *connectors.freshness_checks,
            *lag_checks,
            *analytics_checks,
        ],
        schedules=[*analytics_schedules, monitoring_schedule],
        jobs=[
            *processor_jobs,
            *sink_jobs,
            *vector_jobs,
            market_analytics_backfill,
            monitoring_job,
        ],
        sensors=[
            *build_keepalive_sensors(workers),
            build_connector_health_sensor(connectors.files),
        ],
        resources=bind_resources(settings),
        loggers={"console": worker_console_logger},
    )
