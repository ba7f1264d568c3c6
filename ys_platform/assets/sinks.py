"""What the sinks' assets share: the long-running sink asset, its run config and worker, and the
assets of the tables or collections it writes (topic → sink → ``[store, name]``).

Each sink's module (:mod:`~ys_platform.assets.clickhouse_sink`,
:mod:`~ys_platform.assets.vector_sink`) adds what is its own: the store's client, how it counts
what the store holds, and the asset that creates the tables or collections.
"""

from collections.abc import Iterable
from typing import Protocol

import dagster as dg

from ys_platform.assets.keys import topic_asset_key
from ys_platform.assets.versions import CODE_VERSION
from ys_platform.assets.workers import WorkerOutput
from ys_platform.resources.kafka import KafkaResource
from ys_platform.streaming.app import Sink
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker

SINK_GROUP = "sinks"


class SinkRunConfig(dg.Config):
    namespace: str = ""
    """Topic/group/table/collection prefix: run a copy on isolated topics and stores (tests,
    replays)."""
    instance_id: str = "0"
    max_idle_s: float | None = None


class SinkBatching(Protocol):
    """What a sink's worker takes from its mapping file: how it batches its writes."""

    @property
    def batch_size(self) -> int: ...

    @property
    def flush_interval_ms(self) -> int: ...


def sink_asset(
    sink_key: dg.AssetKey, topics: Iterable[str], store_kind: str, description: str
):  # -> the asset decorator
    """The decorator of a sink's long-running asset: it reads ``topics``, writes a ``store_kind``
    store."""
    return dg.asset(
        key=sink_key,
        deps=[topic_asset_key(t) for t in topics],
        group_name=SINK_GROUP,
        kinds={"kafka", store_kind, "python"},
        description=description,
        code_version=CODE_VERSION,
    )


def sink_worker(
    kafka: KafkaResource, sink: Sink, mapping: SinkBatching, config: SinkRunConfig
) -> SinkWorker:
    """The worker of a sink's run: the mapping's batching, the run's namespace and replica."""
    return SinkWorker(
        kafka.connection,
        sink,
        SinkConfig(
            batch_size=mapping.batch_size,
            flush_interval_s=mapping.flush_interval_ms / 1000,
            namespace=config.namespace,
            instance_id=config.instance_id,
        ),
    )


def store_asset_spec(
    key: dg.AssetKey,
    sink_key: dg.AssetKey,
    topic: str,
    *,
    group_name: str,
    store_kind: str,
    description: str,
) -> dg.AssetSpec:
    """A table or collection the sink writes from ``topic``."""
    return dg.AssetSpec(
        key,
        # The sink writes it; the topic edge says which of the sink's inputs feeds it.
        deps=[sink_key, topic_asset_key(topic)],
        group_name=group_name,
        kinds={store_kind},
        description=description,
        metadata={"source_topic": topic},
        code_version=CODE_VERSION,
    )


def store_output(
    spec: dg.AssetSpec, target: str, version: dg.DataVersion, source_topic: str
) -> WorkerOutput:
    """The output a sink's run records for a store asset: ``target`` is the physical table or
    collection, ``source_topic`` the physical topic copied into it."""
    return WorkerOutput(
        spec.key,
        tuple(dep.asset_key for dep in spec.deps),
        target,
        version,
        source_topic=source_topic,
    )
