"""Kafka connection settings and client factories (confluent-kafka / librdkafka).

The defaults are the seed's performance and reliability settings translated to librdkafka names;
every factory takes overrides so one use (a benchmark, a transactional processor) can differ.
The SASL/SSL secrets live in ``SecretStr`` and only reach librdkafka's config dict, which nothing
here logs: use :meth:`KafkaConnection.redacted` to show a config.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel, ConfigDict, SecretStr

if TYPE_CHECKING:
    from ys_platform.catalog.models import Message as CatalogMessage
    from ys_platform.settings import Settings

# The seed's producer settings, in librdkafka's names. `max.in.flight` is 5, not the seed's 1:
# with the idempotent producer librdkafka keeps per-partition order for up to 5 in-flight
# requests, so 1 would only cost throughput.
PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "retries": 5,
    "max.in.flight.requests.per.connection": 5,
    "compression.type": "snappy",
    "batch.size": 65536,
    "linger.ms": 100,
    # librdkafka's counterpart of the seed's 64 MiB `buffer.memory`.
    "queue.buffering.max.kbytes": 65536,
}

# The seed's consumer settings, with fetch sizes for throughput. Offsets are committed by the
# application (after processing, inside a transaction, or in a sink's store), never
# automatically.
#
# Departure from the seed: its `max.partition.fetch.bytes` of 1 MiB (with librdkafka's default
# `fetch.max.bytes`) caps a consumer at about half of what the broker delivers. Measured on one
# broker, 2 cores, 1M market.prices records of ~263 bytes in 12 partitions, a plain consumer with
# orjson decoding read ~150k msg/s with the seed's values and ~290k msg/s with 10 MiB partition
# fetches and a 100 MiB fetch (bench/price_aggregation.py `--peers raw --raw-fetch platform` vs
# the default `large`; REFERENCES.md, measured ceilings). The pre-fetch queue is capped at
# 256 MiB rather than the 1 GiB of that measurement: ~1M such records, a hundred of the
# workers' 10,000-record batches, and five long-running workers each hold one.
CONSUMER_DEFAULTS: Mapping[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "fetch.min.bytes": 1024,
    "fetch.wait.max.ms": 500,
    "max.partition.fetch.bytes": 10_485_760,
    "fetch.max.bytes": 104_857_600,
    "queued.max.messages.kbytes": 262_144,
    "session.timeout.ms": 30000,
    "heartbeat.interval.ms": 3000,
    "isolation.level": "read_committed",
}

_SECRET_KEYS = frozenset({"sasl.password", "ssl.key.password"})


class KafkaConnection(BaseModel):
    """Where and how to reach the cluster; secrets are masked in repr and str."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str
    client_id: str = "ys-platform"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=settings.kafka_client_id,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ssl_ca_location=settings.kafka_ssl_ca_location,
            ssl_certificate_location=settings.kafka_ssl_certificate_location,
            ssl_key_location=settings.kafka_ssl_key_location,
            ssl_key_password=settings.kafka_ssl_key_password,
        )

    def config(self) -> dict[str, Any]:
        """The librdkafka connection properties, secrets included: hand to a client, never log."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, path in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if path is not None:
                conf[key] = str(path)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        return {**self.config(), **PRODUCER_DEFAULTS, **_dotted(overrides)}

    def consumer_config(self, group_id: str, **overrides: Any) -> dict[str, Any]:
        return {**self.config(), **CONSUMER_DEFAULTS, "group.id": group_id, **_dotted(overrides)}

    def producer(self, **overrides: Any) -> Producer:
        return Producer(self.producer_config(**overrides))

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        return Consumer(self.consumer_config(group_id, **overrides))

    def admin(self, **overrides: Any) -> AdminClient:
        return AdminClient({**self.config(), **_dotted(overrides)})


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a librdkafka config safe to print or put in metadata."""
    return {k: ("**********" if k in _SECRET_KEYS else v) for k, v in config.items()}


def _dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Accept ``linger_ms=5`` as well as ``**{"linger.ms": 5}``."""
    return {k.replace("_", "."): v for k, v in overrides.items()}


class DeliveryError(RuntimeError):
    """A produced message was not acknowledged by the cluster."""


def produce_messages(
    producer: Producer,
    messages: Iterable[CatalogMessage],
    *,
    namespace: str = "",
    flush_timeout_s: float = 30.0,
) -> int:
    """Produce catalog messages to their topics (key and headers from the catalog) and wait.

    ``namespace`` prefixes the topic names, as a worker's namespace does (isolated copies).
    Returns how many were acknowledged; raises :class:`DeliveryError` naming the first failure.
    """
    from ys_platform.catalog.codec import encode, timestamp_ms, topic_of

    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(f"{msg.topic()}: {err.str()}")

    count = 0
    for message in messages:
        key, value, headers = encode(message)
        # The record timestamp is the event time, as the catalog's contract says.
        topic = f"{namespace}{topic_of(message)}"
        produce_record(producer, topic, value, key, headers, timestamp_ms(message), on_delivery)
        count += 1
    remaining = producer.flush(flush_timeout_s)
    if remaining:
        raise DeliveryError(f"{remaining} of {count} messages not delivered in {flush_timeout_s}s")
    if failures:
        raise DeliveryError(f"{len(failures)} of {count} messages failed, first: {failures[0]}")
    return count


def produce_record(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    timestamp_ms: int | None,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    *,
    partition: int | None = None,
) -> None:
    """``producer.produce`` that waits for room instead of failing when the local queue is full.

    The one produce path of the platform: workers, dead letters, the simulator and
    :func:`produce_messages` all come through here. A full queue (``BufferError``) is served by
    polling delivery reports, which frees room as the broker acknowledges.
    """
    kwargs: dict[str, Any] = {"headers": headers}
    if timestamp_ms is not None:
        kwargs["timestamp"] = timestamp_ms
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    if partition is not None:
        kwargs["partition"] = partition
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def consume_messages(
    consumer: Consumer,
    *,
    batch_size: int = 500,
    poll_timeout_s: float = 1.0,
    stop: threading.Event | None = None,
) -> Iterator[list[Message]]:
    """Yield non-empty batches of records until ``stop`` is set; raises on fatal consumer errors.

    Partition EOF and other informational errors are skipped.
    """
    while stop is None or not stop.is_set():
        batch = consumer.consume(num_messages=batch_size, timeout=poll_timeout_s)
        records = []
        for record in batch:
            err = record.error()
            if err is None:
                records.append(record)
            elif err.fatal():
                raise KafkaException(err)
        if records:
            yield records


def next_offsets(records: Iterable[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``records``: one past the highest offset of each partition."""
    highest: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic(), record.partition())
        highest[key] = max(highest.get(key, -1), record.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(highest.items())]


@contextmanager
def closing_consumer(consumer: Consumer) -> Iterator[Consumer]:
    try:
        yield consumer
    finally:
        consumer.close()
