"""The vector sink and its collections: topics → vector-sink → ``["qdrant", collection]``.

Built from the sink's connector file when the code location loads (not at import).
"""

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg

from ys_platform.assets.keys import qdrant_collection_key, sink_asset_key
from ys_platform.assets.sinks import (
    SinkRunConfig,
    sink_asset,
    sink_worker,
    store_asset_spec,
    store_output,
)
from ys_platform.assets.versions import data_version
from ys_platform.assets.workers import StoreCounter, run_worker_in_dagster, worker_job
from ys_platform.clients.owner import OwnerNotAnsweringError
from ys_platform.embeddings.model import DIMENSION, DISTANCE, MODEL_ID
from ys_platform.resources.kafka import KafkaResource
from ys_platform.resources.qdrant import QdrantResource
from ys_platform.sinks.vector import (
    CollectionMapping,
    VectorSink,
    VectorSinkMapping,
    ensure_collection,
)
from ys_platform.sinks.vector_search import count_from_owner

COLLECTION_GROUP = "qdrant"


def collection_data_version(spec: CollectionMapping) -> dg.DataVersion:
    """A collection's definition (model, vectors, text and payload): see
    :mod:`~ys_platform.assets.versions`."""
    return data_version("qdrant", spec.model_dump(mode="json"), MODEL_ID, DIMENSION, DISTANCE)


def point_counter(qdrant: QdrantResource, collections: Sequence[str]) -> StoreCounter:
    """Points per collection. A server is counted directly; local mode allows one client per
    directory, so while the sink holds it the sink is asked (its reader door, as for search)."""

    def count(running: bool) -> Mapping[str, Mapping[str, dg.MetadataValue]]:
        try:
            counts = _counts_from_sink(qdrant, collections)
        except OwnerNotAnsweringError:
            return {}  # the sink is busy past the answer bound: counted at the next report
        if counts is None:
            if running and qdrant.url is None:
                return {}  # the sink holds the store and has not opened its door yet
            with qdrant.get_client() as client:
                counts = {
                    name: client.count(name, exact=True).count
                    for name in collections
                    if client.collection_exists(name)
                }
        return {
            name: {"points": dg.MetadataValue.int(points)}
            for name, points in counts.items()
            if points is not None
        }

    return count


def _counts_from_sink(
    qdrant: QdrantResource, collections: Sequence[str]
) -> Mapping[str, int | None] | None:
    """The counts a vector sink holding the local store gives; None with a server or no sink."""
    if qdrant.url is not None or qdrant.owner_socket is None or qdrant.path is None:
        return None
    return count_from_owner(qdrant.path, collections)


def vector_sink_definitions(
    mapping: VectorSinkMapping,
) -> tuple[list[dg.AssetsDefinition], list[object]]:
    """The sink's long-running asset, its job, and the collection assets it feeds."""
    sink_key = sink_asset_key(mapping.group)
    topics = {topic: spec.collection for topic, spec in mapping.topics.items()}
    versions = {topic: collection_data_version(spec) for topic, spec in mapping.topics.items()}
    collection_assets = {
        topic: store_asset_spec(
            qdrant_collection_key(collection),
            sink_key,
            topic,
            group_name=COLLECTION_GROUP,
            store_kind="qdrant",
            description=f"Embeddings of {topic} (384-d, cosine), one point per key.",
        )
        for topic, collection in topics.items()
    }

    @sink_asset(
        sink_key,
        topics,
        "qdrant",
        "Embeds protocols, tokens, portfolios and sentiment (all-MiniLM-L6-v2, 384-d) and "
        "upserts them with deterministic point ids, so replays are idempotent.",
    )
    def vector_sink(
        context: dg.AssetExecutionContext,
        kafka: KafkaResource,
        qdrant: QdrantResource,
        config: SinkRunConfig,
    ) -> dg.MaterializeResult:
        # Local mode: searches from other processes (`ys-platform search`) are answered by the
        # sink, which holds the store.
        sink = VectorSink(
            qdrant.get_client, mapping, namespace=config.namespace, serve_at=qdrant.owner_socket
        )
        # Embedding is the slow step (~200-400 texts/s): the mapping's small flushes keep each
        # poll well inside Kafka's max.poll.interval.
        worker = sink_worker(kafka, sink, mapping, config)
        outputs = [
            store_output(
                collection_assets[t], sink.collection(t), versions[t], f"{config.namespace}{t}"
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
        selected = {
            topic: collection
            for topic, collection in topics.items()
            if qdrant_collection_key(collection) in context.selected_asset_keys
        }
        # While the vector sink holds a local store it creates the collections itself and
        # answers the counts; otherwise the store is opened here.
        counts = _counts_from_sink(qdrant, list(selected.values()))
        if counts is not None and all(counts[c] is not None for c in selected.values()):
            for topic, collection in selected.items():
                yield dg.MaterializeResult(
                    asset_key=qdrant_collection_key(collection),
                    data_version=versions[topic],
                    metadata={
                        "points": dg.MetadataValue.int(counts[collection] or 0),
                        "created": dg.MetadataValue.bool(False),
                    },
                )
            return
        with qdrant.get_client() as client:
            for topic, collection in selected.items():
                key = qdrant_collection_key(collection)
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

    job = worker_job(mapping.consumer_group, sink_key)
    return [vector_sink, qdrant_collections], [job]
