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
from ys_platform.settings import ENV_PREFIX, Settings


def _secret(name: str) -> dg.EnvVar | None:
    variable = f"{ENV_PREFIX}{name}"
    return dg.EnvVar(variable) if os.environ.get(variable) else None


def _path(value: object) -> str | None:
    return str(value) if value is not None else None


def bind_resources(settings: Settings) -> dict[str, Any]:
    return {
        "kafka": KafkaResource(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=settings.kafka_client_id,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=_secret("KAFKA_SASL_PASSWORD"),
            ssl_ca_location=_path(settings.kafka_ssl_ca_location),
            ssl_certificate_location=_path(settings.kafka_ssl_certificate_location),
            ssl_key_location=_path(settings.kafka_ssl_key_location),
            ssl_key_password=_secret("KAFKA_SSL_KEY_PASSWORD"),
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
