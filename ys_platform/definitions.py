"""The ys_platform code location: assets, checks, sensors, schedules, jobs and resources."""

import dagster as dg

from ys_platform.assets.backfills import market_analytics_backfill
from ys_platform.assets.processors import processor_assets, processor_jobs
from ys_platform.assets.topics import kafka_topics, kafka_topics_match_catalog
from ys_platform.resources.bindings import bind_resources
from ys_platform.sensors.keepalive import keepalive_sensors
from ys_platform.settings import load_settings

defs = dg.Definitions(
    assets=[kafka_topics, *processor_assets],
    asset_checks=[kafka_topics_match_catalog],
    jobs=[*processor_jobs, market_analytics_backfill],
    sensors=keepalive_sensors,
    resources=bind_resources(load_settings()),
)
