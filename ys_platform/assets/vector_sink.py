"""The vector sink and its collections: topics → vector-sink → ``["qdrant", collection]``.

Built from the sink's connector file when the code location loads (not at import).
"""

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg

from ys_platform.assets.keys import qdrant_collection_key, sink_asset_key, topic_asset_key
from ys_platform.assets.versions import CODE_VERSION, data_version
from ys_platform.assets.workers import (
    StoreCounter,
    WorkerOutput,
    run_worker_in_dagster,
    worker_job,
)
from ys_platform.catalog.topics import consumer_group
from ys_platform.embeddings.model import DIMENSION, DISTANCE, MODEL_ID
from ys_platform.resources.kafka import KafkaResource
from ys_platform.resources.qdrant import QdrantResource
from ys_platform.sinks.vector import (
    CollectionMapping,
    VectorSink,
    VectorSinkMapping,
    ensure_collection,
)
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker

SINK_GROUP = "sinks"
COLLECTION_GROUP = "qdrant"


class VectorSinkRunConfig(dg.Config):
    namespace: str = ""
    """Topic/group/collection prefix: run a copy on isolated topics (tests, replays)."""
    instance_id: str = "0"
    max_idle_s: float | None = None


def collection_data_version(spec: CollectionMapping) -> dg.DataVersion:
    """A collection's definition (model, vectors, text and payload): see
    :mod:`~ys_platform.assets.versions`."""
    return data_version("qdrant", spec.model_dump(mode="json"), MODEL_ID, DIMENSION, DISTANCE)


def point_counter(qdrant: QdrantResource, collections: Sequence[str]) -> StoreCounter:
    """Points per collection. A server is counted while the sink runs; local mode allows one
    client per directory, the sink's, so it is counted once the sink has closed it."""

    def count(running: bool) -> Mapping[str, Mapping[str, dg.MetadataValue]]:
        if running and qdrant.url is None:
            return {}
        with qdrant.get_client() as client:
            return {
                name: {"points": dg.MetadataValue.int(client.count(name, exact=True).count)}
                for name in collections
                if client.collection_exists(name)
            }

    return count


def vector_sink_definitions(
    mapping: VectorSinkMapping,
) -> tuple[list[dg.AssetsDefinition], list[object]]:
    """The sink's long-running asset, its job, and the collection assets it feeds."""
    sink_key = sink_asset_key(mapping.group)
    topics = {topic: spec.collection for topic, spec in mapping.topics.items()}
    versions = {topic: collection_data_version(spec) for topic, spec in mapping.topics.items()}
    collection_assets = {
        topic: dg.AssetSpec(
            qdrant_collection_key(collection),
            # The sink writes it; the topic edge says which of the sink's inputs feeds it.
            deps=[sink_key, topic_asset_key(topic)],
            group_name=COLLECTION_GROUP,
            kinds={"qdrant"},
            description=f"Embeddings of {topic} (384-d, cosine), one point per key.",
            metadata={"source_topic": topic},
            code_version=CODE_VERSION,
        )
        for topic, collection in topics.items()
    }

    @dg.asset(
        key=sink_key,
        deps=[topic_asset_key(t) for t in topics],
        group_name=SINK_GROUP,
        kinds={"kafka", "qdrant", "python"},
        description="Embeds protocols, tokens, portfolios and sentiment (all-MiniLM-L6-v2, "
        "384-d) and upserts them with deterministic point ids, so replays are idempotent.",
        code_version=CODE_VERSION,
    )
    def vector_sink(
        context: dg.AssetExecutionContext,
        kafka: KafkaResource,
        qdrant: QdrantResource,
        config: VectorSinkRunConfig,
    ) -> dg.MaterializeResult:
        # Local mode: searches from other processes (`ys-platform search`) are answered by the
        # sink, which holds the store.
        sink = VectorSink(
            qdrant.get_client, mapping, namespace=config.namespace, serve_at=qdrant.owner_socket
        )
        worker = SinkWorker(
            kafka.connection,
            sink,
            SinkConfig(
                # Embedding is the slow step (~200-400 texts/s): small flushes keep each poll
                # well inside Kafka's max.poll.interval.
                batch_size=mapping.batch_size,
                flush_interval_s=mapping.flush_interval_ms / 1000,
                namespace=config.namespace,
                instance_id=config.instance_id,
            ),
        )
        outputs = [
            WorkerOutput(
                collection_assets[t].key,
                tuple(dep.asset_key for dep in collection_assets[t].deps),
                sink.collection(t),
                versions[t],
                source_topic=f"{config.namespace}{t}",
            )
            for t in topics
        ]
        counter = point_counter(qdrant, [o.target for o in outputs])
        return run_worker_in_dagster(context, worker, outputs, config.max_idle_s, counter)

    @dg.multi_asset(
        name="qdrant_collections",
        specs=list(collection_assets.values()),
        can_subset=True,
        description="Create the collections (idempotent) and report their point counts.",
    )
    def qdrant_collections(
        context: dg.AssetExecutionContext, qdrant: QdrantResource
    ) -> Iterator[dg.MaterializeResult]:
        with qdrant.get_client() as client:
            for topic, collection in topics.items():
                key = qdrant_collection_key(collection)
                if key not in context.selected_asset_keys:
                    continue
                created = ensure_collection(client, collection)
                points = client.count(collection, exact=True).count
                yield dg.MaterializeResult(
                    asset_key=key,
                    data_version=versions[topic],
                    metadata={
                        "points": dg.MetadataValue.int(points),
                        "created": dg.MetadataValue.bool(created),
                    },
                )

    job = worker_job(consumer_group(mapping.group), sink_key)
    return [vector_sink, qdrant_collections], [job]
