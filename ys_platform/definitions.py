"""The ys_platform code location: assets, checks, sensors, schedules, jobs and resources."""

from __future__ import annotations

import dagster as dg

from ys_platform.assets.topics import kafka_topics, kafka_topics_match_catalog
from ys_platform.resources.bindings import bind_resources
from ys_platform.settings import load_settings

defs = dg.Definitions(
    assets=[kafka_topics],
    asset_checks=[kafka_topics_match_catalog],
    resources=bind_resources(load_settings()),
)
