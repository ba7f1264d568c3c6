"""The Kafka Connect resource: a REST client for the Connect cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from ys_platform.clients.kafka_connect import KafkaConnectClient


class KafkaConnectResource(dg.ConfigurableResource):
    """A Kafka Connect cluster's REST API (connectors are assets; their health is a sensor)."""

    url: str = Field(description="REST URL of any worker, e.g. http://127.0.0.1:8083.")
    timeout_s: float = Field(
        default=10.0,
        gt=0,
        # A sensor tick has 60 s in all; one slow call must leave room for the rest of it.
        description="Seconds per REST call before it fails.",
    )

    @contextmanager
    def get_client(self) -> Iterator[KafkaConnectClient]:
        with KafkaConnectClient(self.url, self.timeout_s) as client:
            yield client
