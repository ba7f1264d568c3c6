"""The Kafka resource: producer, consumer and admin clients for assets, sensors and runs."""

from __future__ import annotations

import functools
import operator
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any

import dagster as dg
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel, Field, SecretStr, create_model

from ys_platform.clients.kafka import (
    KafkaConnection,
    closing_consumer,
    consume_messages,
    next_offsets,
    produce_messages,
)

if TYPE_CHECKING:
    from ys_platform.catalog.models import Message as CatalogMessage

# Dagster config has no SecretStr or Path: at this layer a secret is a string bound with
# dg.EnvVar (Dagster resolves it at run time and shows only the variable's name), a path a string.
_DAGSTER_TYPES: dict[Any, Any] = {SecretStr: str, Path: str}


def _dagster_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, map(_optional_member, typing.get_args(annotation)))
    return _DAGSTER_TYPES.get(annotation, annotation)


def _optional_member(annotation: Any) -> Any:
    # Dagster takes a Literal (as an enum) but not an optional one: that becomes a string.
    return str if typing.get_origin(annotation) is typing.Literal else _dagster_type(annotation)


def _secret_fields(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(
        name
        for name, field in model.model_fields.items()
        if SecretStr in (field.annotation, *typing.get_args(field.annotation))
    )


def dagster_config_of(model: type[BaseModel]) -> type[dg.Config]:
    """A Dagster config class with ``model``'s fields, defaults and descriptions, derived from
    the model (not written twice); values are checked by ``model`` when the resource uses them."""
    fields: dict[str, Any] = {
        name: (
            _dagster_type(field.annotation),
            Field(description=field.description)
            if field.is_required()
            else Field(default=field.default, description=field.description),
        )
        for name, field in model.model_fields.items()
    }
    return create_model(f"{model.__name__}Config", __base__=dg.Config, **fields)


class KafkaConnectionConfig(dagster_config_of(KafkaConnection)):
    """:class:`~ys_platform.clients.kafka.KafkaConnection` as Dagster config."""


SECRET_FIELDS = _secret_fields(KafkaConnection)
"""The connection's secrets: bound with ``dg.EnvVar``, never stored as values."""


class KafkaResource(dg.ConfigurableResource):
    """A Kafka cluster. Clients get the seed's reliability defaults; every factory takes overrides.

    Holds the cluster's :class:`KafkaConnection` as Dagster config (``cluster``); build it with
    :meth:`of`, which binds the secrets with ``dg.EnvVar`` so their values never reach the run
    config or the UI.
    """

    cluster: KafkaConnectionConfig = Field(description="Where and how to reach the cluster.")

    @classmethod
    def of(
        cls,
        connection: KafkaConnection,
        secret_variable: Callable[[str], str] | None = None,
    ) -> KafkaResource:
        """The resource of ``connection``; each secret it has is bound as
        ``dg.EnvVar(secret_variable(field))``, so the variable must hold the same value."""
        values: dict[str, Any] = connection.model_dump(
            mode="json", exclude_none=True, exclude=set(SECRET_FIELDS)
        )
        secrets = connection.model_dump(include=set(SECRET_FIELDS), exclude_none=True)
        for name in secrets:
            if secret_variable is None:
                raise ValueError(
                    f"The Kafka connection has a {name}: name the environment variable holding "
                    "it (secret_variable), so that Dagster reads it at run time instead of "
                    "storing its value in the run config."
                )
            values[name] = dg.EnvVar(secret_variable(name))
        return cls(cluster=KafkaConnectionConfig(**values))

    @property
    def connection(self) -> KafkaConnection:
        """The validated connection (raises a ValidationError naming the bad field)."""
        return KafkaConnection.model_validate(self.cluster.model_dump(exclude_none=True))

    def admin(self, **overrides: Any) -> AdminClient:
        return self.connection.admin(**overrides)

    @contextmanager
    def get_producer(self, **overrides: Any) -> Iterator[Producer]:
        """A producer that is flushed when the block ends, even on error."""
        producer = self.connection.producer(**overrides)
        try:
            yield producer
        finally:
            producer.flush(30)

    @contextmanager
    def get_consumer(self, group_id: str, **overrides: Any) -> Iterator[Consumer]:
        """A consumer in ``group_id`` (manual commits, read_committed), closed after the block."""
        with closing_consumer(self.connection.consumer(group_id, **overrides)) as consumer:
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
