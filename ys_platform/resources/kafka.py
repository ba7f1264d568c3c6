"""The Kafka resource: producer, consumer and admin clients for assets, sensors and runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from threading import Event
from typing import TYPE_CHECKING, Any

import dagster as dg
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient
from pydantic import Field, SecretStr

from ys_platform.clients.kafka import (
    KafkaConnection,
    closing_consumer,
    consume_messages,
    next_offsets,
    produce_messages,
)

if TYPE_CHECKING:
    from ys_platform.catalog.models import Message as CatalogMessage


class KafkaResource(dg.ConfigurableResource):
    """A Kafka cluster. Clients get the seed's reliability defaults; every factory takes overrides.

    Bind secrets with ``dg.EnvVar`` so their values never reach the run config or the UI.
    """

    bootstrap_servers: str = Field(description="Comma-separated host:port list of brokers.")
    client_id: str = Field(default="ys-platform", description="client.id reported to brokers.")
    security_protocol: str = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: str | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    sasl_username: str | None = Field(default=None)
    sasl_password: str | None = Field(default=None, description="Bind with EnvVar; never logged.")
    ssl_ca_location: str | None = Field(default=None, description="CA bundle for TLS.")
    ssl_certificate_location: str | None = Field(default=None)
    ssl_key_location: str | None = Field(default=None)
    ssl_key_password: str | None = Field(default=None, description="Bind with EnvVar.")

    def connection(self) -> KafkaConnection:
        """The validated connection (raises a ValueError naming the bad field)."""
        return KafkaConnection(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            security_protocol=self.security_protocol,  # type: ignore[arg-type]
            sasl_mechanism=self.sasl_mechanism,  # type: ignore[arg-type]
            sasl_username=self.sasl_username,
            sasl_password=SecretStr(self.sasl_password) if self.sasl_password else None,
            ssl_ca_location=self.ssl_ca_location,  # type: ignore[arg-type]
            ssl_certificate_location=self.ssl_certificate_location,  # type: ignore[arg-type]
            ssl_key_location=self.ssl_key_location,  # type: ignore[arg-type]
            ssl_key_password=SecretStr(self.ssl_key_password) if self.ssl_key_password else None,
        )

    def admin(self, **overrides: Any) -> AdminClient:
        return self.connection().admin(**overrides)

    @contextmanager
    def get_producer(self, **overrides: Any) -> Iterator[Producer]:
        """A producer that is flushed when the block ends, even on error."""
        producer = self.connection().producer(**overrides)
        try:
            yield producer
        finally:
            producer.flush(30)

    @contextmanager
    def get_consumer(self, group_id: str, **overrides: Any) -> Iterator[Consumer]:
        """A consumer in ``group_id`` (manual commits, read_committed), closed after the block."""
        with closing_consumer(self.connection().consumer(group_id, **overrides)) as consumer:
            yield consumer

    def produce(self, messages: Iterable[CatalogMessage], **overrides: Any) -> int:
        """Produce catalog messages to their topics, keyed and with headers from the catalog."""
        with self.get_producer(**overrides) as producer:
            return produce_messages(producer, messages)

    def subscribe(
        self,
        topics: list[str],
        group_id: str,
        handler: Callable[[list[Message]], None],
        *,
        stop: Event,
        batch_size: int = 500,
        **overrides: Any,
    ) -> int:
        """Feed batches of records to ``handler`` until ``stop`` is set, committing after each.

        The commit comes only after the handler returned, so a crash re-delivers the batch
        (at-least-once). Returns the number of records handled.
        """
        handled = 0
        with self.get_consumer(group_id, **overrides) as consumer:
            consumer.subscribe(topics)
            for batch in consume_messages(consumer, batch_size=batch_size, stop=stop):
                handler(batch)
                consumer.commit(offsets=next_offsets(batch), asynchronous=False)
                handled += len(batch)
        return handled
