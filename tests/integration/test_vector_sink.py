"""The vector sink for real: simulator protocols and tokens through the local broker, the sink
runtime and the embedding model into Qdrant local mode on disk; replays add no points; search
finds protocols by paraphrase."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest
from kafka_helpers import create_namespaced_topics, read_topic

from ys_platform.catalog.codec import decode, encode, topic_of
from ys_platform.catalog.models import Message
from ys_platform.catalog.topics import consumer_group
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.clients.qdrant import client_factory
from ys_platform.embeddings import shared_embedder
from ys_platform.sinks.vector import VectorSink, load_mapping, point_id
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GROUP = consumer_group("vector-sink")
PARTITIONS = 3  # fewer than the catalog's 12: the same code paths, less broker work
PROTOCOLS = "defi.protocols"
TOKENS = "defi.tokens"
TOKEN_COUNT = 60
# Exit once nothing arrived for this long: the whole input is produced before each run, and the
# first flush (loading the model, ~1 s) is inside it.
MAX_IDLE_S = 4.0

# Paraphrases of simulator protocol descriptions in other words, with the protocol that must
# rank first among all 25. Each was checked to win by at least 0.08 cosine over the runner-up
# (e.g. "across" 0.50 vs 0.33, "1inch" 0.50 vs 0.33).
PARAPHRASES = {
    "move tokens between blockchains quickly, relayers front the money": "across",
    "price data from independent node operators delivered to smart contracts": "chainlink",
    "trade stablecoins with minimal slippage": "curve",
    "find the best price by routing a swap through several exchanges": "1inch",
    "use already staked ETH to secure other networks": "eigenlayer",
    "mint a dollar stablecoin by locking collateral in a vault": "makerdao",
    "get boosted rewards on Curve liquidity without locking CRV yourself": "convex",
}


def _produce(connection: KafkaConnection, namespace: str, messages: Iterable[Message]) -> int:
    producer = connection.producer(linger_ms=5)
    count = 0
    for message in messages:
        key, value, headers = encode(message)
        producer.produce(f"{namespace}{topic_of(message)}", value, key, headers=headers)
        count += 1
    assert producer.flush(30) == 0
    return count


def _run_worker(connection: KafkaConnection, namespace: str, store: Path) -> tuple[int, int]:
    sink = VectorSink(client_factory(path=store), load_mapping(), shared_embedder(), namespace)
    config = SinkConfig(batch_size=500, flush_interval_s=0.5, namespace=namespace)
    metrics = SinkWorker(connection, sink, config).run(threading.Event(), max_idle_s=MAX_IDLE_S)
    return metrics.consumed, metrics.produced


def _counts(store: Path, namespace: str) -> dict[str, int]:
    with VectorSink(
        client_factory(path=store), load_mapping(), shared_embedder(), namespace
    ) as sink:
        assert sink._client is not None
        return {
            topic_name: sink._client.count(name, exact=True).count
            for topic_name, name in sink.collections().items()
        }


@pytest.fixture(scope="module")
def connection(local_stack) -> KafkaConnection:
    return local_stack.kafka


def test_protocols_become_points_once_and_are_found_by_paraphrase(
    kafka_target, tmp_path: Path
) -> None:
    namespace = kafka_target.namespace()
    connection = kafka_target.settings.kafka
    names = [*GROUP.inputs, GROUP.dead_letter_topic]
    create_namespaced_topics(connection.admin(), namespace, names, PARTITIONS)
    sim = MarketSimulator(seed=11)
    protocols = sim.protocols()
    tokens = sim.tokens()[:TOKEN_COUNT]
    assert len(protocols) >= 20
    sent = _produce(connection, namespace, [*protocols, *tokens])
    store = tmp_path / "qdrant"

    consumed, written = _run_worker(connection, namespace, store)
    assert (consumed, written) == (sent, sent)
    counts = _counts(store, namespace)
    assert counts[PROTOCOLS] == len(protocols)
    assert counts[TOKENS] == len(tokens)

    # Every point is the latest record of its key, with the payload the mapping keeps.
    records = read_topic(connection, f"{namespace}{PROTOCOLS}", idle_s=1.0)
    assert len(records) == len(protocols)
    with VectorSink(
        client_factory(path=store), load_mapping(), shared_embedder(), namespace
    ) as sink:
        assert sink._client is not None
        stored = sink._client.retrieve(
            sink.collection(PROTOCOLS), [point_id(PROTOCOLS, p.id) for p in protocols]
        )
        by_key = {point.payload["_key"]: point.payload for point in stored if point.payload}
        for record in records:
            message = decode(PROTOCOLS, record.value())
            payload = by_key[record.key().decode()]
            assert payload["_partition"] == record.partition()
            assert payload["_offset"] == record.offset()
            assert payload["_topic"] == PROTOCOLS
            assert payload["name"] == message.name
            assert payload["description"] == message.description

    # A replay: the same records produced again go through the sink; no point is added.
    assert _produce(connection, namespace, [*protocols, *tokens]) == sent
    consumed, written = _run_worker(connection, namespace, store)
    assert (consumed, written) == (sent, sent)
    assert _counts(store, namespace) == counts

    # And a replay from offset 0 written straight into the sink (as after a lost commit).
    with VectorSink(
        client_factory(path=store), load_mapping(), shared_embedder(), namespace
    ) as sink:
        all_records = read_topic(connection, f"{namespace}{PROTOCOLS}", idle_s=1.0)
        assert len(all_records) == 2 * len(protocols)
        for partition in range(PARTITIONS):
            mine = [r for r in all_records if r.partition() == partition]
            sink.write(
                (PROTOCOLS, partition),
                [decode(PROTOCOLS, r.value()) for r in mine],
                [r.offset() for r in mine],
            )
        assert sink._client is not None
        assert sink._client.count(sink.collection(PROTOCOLS), exact=True).count == len(protocols)

        # Search: each paraphrase finds its protocol first among all of them.
        for query, expected in PARAPHRASES.items():
            hits = sink.search("protocols", query, limit=3)
            assert hits[0][1]["id"] == expected, (query, hits)
            assert hits[0][0] > hits[1][0]

    assert not read_topic(connection, f"{namespace}{GROUP.dead_letter_topic}", idle_s=0.5)


def test_tombstone_deletes_the_point(connection: KafkaConnection, tmp_path: Path) -> None:
    """A tombstone on compacted defi.protocols (a protocol deleted at the source) removes its
    point; the other protocols stay, nothing is dead-lettered, and a later record of the same
    key brings the point back."""
    namespace = f"t{uuid.uuid4().hex[:8]}."
    names = [*GROUP.inputs, GROUP.dead_letter_topic]
    create_namespaced_topics(connection.admin(), namespace, names, PARTITIONS)
    protocols = MarketSimulator(seed=11).protocols()[:5]
    _produce(connection, namespace, protocols)
    producer = connection.producer()
    producer.produce(f"{namespace}{PROTOCOLS}", None, protocols[0].id.encode())
    assert producer.flush(30) == 0
    store = tmp_path / "qdrant"

    consumed, _ = _run_worker(connection, namespace, store)
    assert consumed == 6
    assert _counts(store, namespace)[PROTOCOLS] == 4
    assert not read_topic(connection, f"{namespace}{GROUP.dead_letter_topic}", idle_s=0.5)

    _produce(connection, namespace, protocols[:1])
    _run_worker(connection, namespace, store)
    assert _counts(store, namespace)[PROTOCOLS] == 5


def test_a_cdc_delete_of_a_token_removes_its_point(
    connection: KafkaConnection, tmp_path: Path
) -> None:
    """On defi.tokens (a change stream, not compacted) Debezium sends a delete as the deleted row
    with the header ys.cdc.op=d: the sink deletes that token's point and keeps the others; the
    same header on an update (u) is an upsert."""
    from ys_platform.catalog.codec import CDC_OP_HEADER

    namespace = f"t{uuid.uuid4().hex[:8]}."
    names = [*GROUP.inputs, GROUP.dead_letter_topic]
    create_namespaced_topics(connection.admin(), namespace, names, PARTITIONS)
    tokens = MarketSimulator(seed=11).tokens()[:4]
    producer = connection.producer()
    for token, op in zip(tokens, (b"r", b"r", b"u", b"r"), strict=True):
        key, value, headers = encode(token)
        producer.produce(
            f"{namespace}{TOKENS}", value, key, headers=[*headers, (CDC_OP_HEADER, op)]
        )
    key, value, headers = encode(tokens[1])
    producer.produce(f"{namespace}{TOKENS}", value, key, headers=[*headers, (CDC_OP_HEADER, b"d")])
    assert producer.flush(30) == 0
    store = tmp_path / "qdrant"

    consumed, _ = _run_worker(connection, namespace, store)
    assert consumed == 5
    assert _counts(store, namespace)[TOKENS] == 3
    with VectorSink(
        client_factory(path=store), load_mapping(), shared_embedder(), namespace
    ) as sink:
        assert sink._client is not None
        collection = sink.collections()[TOKENS]
        found = sink._client.retrieve(collection, [point_id(TOKENS, t.address) for t in tokens])
    assert sorted(str(p.id) for p in found) == sorted(
        str(point_id(TOKENS, t.address)) for t in tokens if t is not tokens[1]
    )
    assert not read_topic(connection, f"{namespace}{GROUP.dead_letter_topic}", idle_s=0.5)
