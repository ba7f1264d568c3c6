"""Bind every resource to the settings: plain values from ``Settings``, secrets as ``EnvVar``.

Secrets go through ``EnvVar`` so Dagster resolves them at run time and shows only the variable's
name in the UI and run config, never the value.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from ys_platform.resources.clickhouse import ClickHouseResource
from ys_platform.resources.kafka import KafkaResource
from ys_platform.resources.kafka_connect import KafkaConnectResource
from ys_platform.resources.postgres import PostgresResource
from ys_platform.resources.qdrant import QdrantResource
from ys_platform.settings import ENV_PREFIX, Settings, variable_name


def _secret(name: str) -> dg.EnvVar | None:
    variable = f"{ENV_PREFIX}{name}"
    return dg.EnvVar(variable) if os.environ.get(variable) else None


def bind_resources(settings: Settings) -> dict[str, Any]:
    return {
        "kafka": KafkaResource.of(
            settings.kafka, secret_variable=lambda field: variable_name("kafka", field)
        ),
        "kafka_connect": KafkaConnectResource(url=settings.connect_url),
        # A configured DSN may carry a password: bind the variable, not its value.
        "postgres": PostgresResource(
            conninfo=_secret("POSTGRES_DSN") or settings.postgres_conninfo()
        ),
        "clickhouse": ClickHouseResource(
            dsn=settings.clickhouse_dsn, password=_secret("CLICKHOUSE_PASSWORD")
        ),
        "qdrant": QdrantResource(
            url=settings.qdrant_url,
            path=None if settings.qdrant_url else str(settings.qdrant_path),
            api_key=_secret("QDRANT_API_KEY"),
        ),
    }
