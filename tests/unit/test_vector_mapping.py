"""The vector sink's mapping file, text rendering, point ids, and writes into in-memory Qdrant.

Qdrant runs in qdrant-client's local mode (``:memory:``, the real client, no server) and the
embedder is the real model: no stand-ins.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ys_platform.catalog.models import DefiProtocol, Position, UserPortfolio
from ys_platform.catalog.topics import consumer_group
from ys_platform.clients.qdrant import client_factory
from ys_platform.embeddings import shared_embedder
from ys_platform.sinks.vector import (
    DEFAULT_MAPPING_PATH,
    META_FIELDS,
    SinkConfigError,
    VectorSink,
    VectorSinkMapping,
    collection_prefix,
    load_mapping,
    point_id,
    render_text,
)
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming.app import PartitionBatch

PROTOCOLS = "defi.protocols"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _raw() -> dict[str, Any]:
    return json.loads(DEFAULT_MAPPING_PATH.read_text())


def _write_config(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "vector-sink.json"
    path.write_text(json.dumps(raw))
    return path


# --- the mapping file ----------------------------------------------------------------------------


def test_shipped_mapping_covers_the_group() -> None:
    mapping = load_mapping()
    assert {t: m.collection for t, m in mapping.topics.items()} == {
        "defi.protocols": "protocols",
        "defi.tokens": "tokens",
        "users.portfolios": "user_behavior",
        "market.sentiment": "documents",
    }
    assert set(mapping.topics) == set(consumer_group("vector-sink").inputs)
    assert mapping.topics[PROTOCOLS].text == "{name}: {description} ({category})"
    assert mapping.consumer_group.group_id == "vector-sink"


def _mutate(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(_raw())
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            ("topics", PROTOCOLS, "text"),
            "{nme}: {description}",
            r"key 'topics\['defi.protocols'\].text': the template names unknown field 'nme'",
        ),
        (
            ("topics", PROTOCOLS, "payload"),
            ["id", "tvl_usd"],
            r"key 'topics\['defi.protocols'\].payload': unknown field 'tvl_usd'",
        ),
        (
            ("topics", PROTOCOLS, "text"),
            "{tvl:.2f}",
            r"topics\['defi.protocols'\]\.text.*format spec",
        ),
        (("topics", PROTOCOLS, "text"), "no fields", r"uses no field"),
        (
            ("topics", PROTOCOLS, "collection"),
            "bad/name",
            r"topics\['defi.protocols'\]\.collection.*'bad/name'",
        ),
        (
            ("topics", PROTOCOLS, "collection"),
            "tokens",
            r"key 'topics\['defi.tokens'\].collection': .*both map to collection 'tokens'",
        ),
        (("topics", PROTOCOLS, "colour"), "blue", r"topics\['defi.protocols'\]\.colour"),
        (("group",), "price-aggregation-processor", r"key 'group'.*a processor, not a sink"),
        (("batch_size",), 0, r"key 'batch_size'"),
    ],
)
def test_errors_name_the_bad_key(
    tmp_path: Path, path: tuple[str, ...], value: Any, expected: str
) -> None:
    config = _write_config(tmp_path, _mutate(path, value))
    with pytest.raises(SinkConfigError, match=expected) as info:
        load_mapping(config)
    assert str(config) in str(info.value)


def test_topic_must_be_an_input_of_the_group(tmp_path: Path) -> None:
    raw = _raw()
    raw["topics"]["market.prices"] = {"collection": "prices", "text": "{symbol}", "payload": []}
    with pytest.raises(
        SinkConfigError,
        match=r"key 'topics\['market.prices'\]': .*is not an input of consumer group",
    ):
        load_mapping(_write_config(tmp_path, raw))


def test_unknown_topic_and_bad_files(tmp_path: Path) -> None:
    raw = _raw()
    raw["topics"]["defi.nope"] = raw["topics"].pop(PROTOCOLS)
    with pytest.raises(SinkConfigError, match=r"'defi\.nope' is not a catalog topic"):
        load_mapping(_write_config(tmp_path, raw))
    with pytest.raises(SinkConfigError, match="does not exist"):
        load_mapping(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SinkConfigError, match="not valid JSON"):
        load_mapping(broken)


# --- rendering and ids ---------------------------------------------------------------------------


def _protocol(key: str = "aave-v3", description: str | None = "Lending market.") -> DefiProtocol:
    return DefiProtocol(
        id=key,
        name="Aave V3",
        description=description,
        category="lending",
        chains=("ethereum", "base"),
        tvl=22e9,
        apy=3.1,
        updated_at=NOW,
    )


def test_render_text() -> None:
    assert render_text("{name}: {description} ({category})", _protocol()) == (
        "Aave V3: Lending market. (lending)"
    )
    # A missing field leaves no "None" and no empty brackets behind.
    assert render_text("{name}: {description} ({category})", _protocol(description=None)) == (
        "Aave V3: (lending)"
    )
    assert render_text("{name} [{description}] on {chains}", _protocol(description=None)) == (
        "Aave V3 on ethereum, base"
    )
    portfolio = UserPortfolio(
        user_id="u1",
        positions=(
            Position(
                protocol="aave-v3",
                chain="ethereum",
                asset="ETH",
                kind="collateral",
                amount=2.5,
                liquidation_threshold=0.83,
            ),
            Position(protocol="aave-v3", chain="ethereum", asset="USDC", kind="debt", amount=1e3),
        ),
        ts=NOW,
    )
    assert render_text("{positions}", portfolio) == (
        "protocol aave-v3 chain ethereum asset ETH kind collateral amount 2.5 "
        "liquidation_threshold 0.83; protocol aave-v3 chain ethereum asset USDC kind debt "
        "amount 1000"
    )


def test_point_ids_are_deterministic_uuids() -> None:
    first = point_id(PROTOCOLS, "aave-v3")
    assert first == point_id(PROTOCOLS, "aave-v3")
    assert uuid.UUID(first).version == 5
    assert first != point_id(PROTOCOLS, "spark")
    assert first != point_id("defi.tokens", "aave-v3")
    # Pinned: a change would orphan every stored point (replays would duplicate them).
    assert first == "07ea2daf-e9cb-54a8-97be-96bf9fe5fe24"


def test_collection_prefix() -> None:
    assert collection_prefix("") == ""
    assert collection_prefix("t1a2b.") == "t1a2b_"
    assert collection_prefix("ns-1_") == "ns-1_"


# --- the sink on in-memory Qdrant ----------------------------------------------------------------


@pytest.fixture
def sink() -> VectorSink:
    with VectorSink(
        client_factory(path=":memory:"), load_mapping(), shared_embedder(), namespace="unit."
    ) as opened:
        yield opened


def _count(sink: VectorSink, topic_name: str) -> int:
    assert sink._client is not None
    return sink._client.count(sink.collection(topic_name), exact=True).count


def test_open_creates_the_collections(sink: VectorSink) -> None:
    assert sink._client is not None
    names = {c.name for c in sink._client.get_collections().collections}
    assert names == {"unit_protocols", "unit_tokens", "unit_user_behavior", "unit_documents"}
    info = sink._client.get_collection("unit_protocols").config.params.vectors
    assert info.size == 384 and info.distance.value == "Cosine"
    assert sink.resume_offsets([(PROTOCOLS, 0)]) == {}


def test_writes_are_idempotent_and_updates_overwrite(sink: VectorSink) -> None:
    protocols = MarketSimulator(seed=7).protocols()
    offsets = list(range(len(protocols)))
    assert sink.write((PROTOCOLS, 0), protocols, offsets) == len(protocols)
    assert _count(sink, PROTOCOLS) == len(protocols)
    sink.write((PROTOCOLS, 0), protocols, offsets)  # a replay
    assert _count(sink, PROTOCOLS) == len(protocols)

    # Two versions of one key in one write: the later offset wins.
    old = _protocol("aave-v3", "Old text.")
    new = _protocol("aave-v3", "Money market for lending and borrowing.")
    assert sink.write((PROTOCOLS, 3), [old, new], [100, 101]) == 1
    assert _count(sink, PROTOCOLS) == len(protocols)
    assert sink._client is not None
    (record,) = sink._client.retrieve("unit_protocols", [point_id(PROTOCOLS, "aave-v3")])
    payload = record.payload
    assert payload is not None
    assert payload["description"] == "Money market for lending and borrowing."
    assert {k: payload[k] for k in META_FIELDS} == {
        "_topic": PROTOCOLS,
        "_partition": 3,
        "_offset": 101,
        "_key": "aave-v3",
    }
    assert payload["chains"] == ["ethereum", "base"]
    assert payload["updated_at"] == "2026-01-01T00:00:00.000Z"
    assert set(payload) == set(load_mapping().topics[PROTOCOLS].payload) | set(META_FIELDS)


def test_write_many_delete_and_search(sink: VectorSink) -> None:
    sim = MarketSimulator(seed=7)
    protocols, tokens = sim.protocols(), sim.tokens()[:30]
    written = sink.write_many(
        [
            PartitionBatch((PROTOCOLS, 0), protocols[:10], list(range(10))),
            PartitionBatch((PROTOCOLS, 1), protocols[10:], list(range(len(protocols) - 10))),
            PartitionBatch(("defi.tokens", 0), tokens, list(range(len(tokens)))),
        ]
    )
    assert written == len(protocols) + len(tokens)
    assert _count(sink, "defi.tokens") == len(tokens)

    hits = sink.search("protocols", "liquid staking of ether", limit=3)
    assert len(hits) == 3 and hits[0][0] >= hits[1][0] >= hits[2][0]
    assert hits[0][1]["id"] == "lido"

    assert sink.delete(PROTOCOLS, ["lido", "not-there"]) == 2
    assert _count(sink, PROTOCOLS) == len(protocols) - 1
    assert sink.search("protocols", "liquid staking of ether", limit=1)[0][1]["id"] != "lido"


def test_misuse_is_explained(sink: VectorSink) -> None:
    with pytest.raises(KeyError, match=r"'market\.prices' is not mapped by the vector sink"):
        sink.write(("market.prices", 0), [_protocol()], [0])
    with pytest.raises(KeyError, match="'nope' is not a vector sink collection"):
        sink.search("nope", "x")
    with pytest.raises(ValueError, match="1 messages but 2 offsets"):
        sink.write((PROTOCOLS, 0), [_protocol()], [0, 1])
    closed = VectorSink(client_factory(path=":memory:"), load_mapping(), shared_embedder())
    with pytest.raises(RuntimeError, match="not open"):
        closed.write((PROTOCOLS, 0), [_protocol()], [0])


def test_mapping_model_is_frozen() -> None:
    mapping = VectorSinkMapping.model_validate(_raw())
    with pytest.raises(ValueError):
        mapping.batch_size = 3  # type: ignore[misc]


def sqlite_journal_mode(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        connection.close()


@pytest.mark.parametrize("durable_batches", [True, False])
def test_on_disk_points_survive_reopening(tmp_path: Path, durable_batches: bool) -> None:
    store = tmp_path / "qdrant"
    protocols = MarketSimulator(seed=7).protocols()
    sink = VectorSink(
        client_factory(path=store),
        load_mapping(),
        shared_embedder(),
        durable_batches=durable_batches,
    )
    with sink:
        assert sink.commit_mode == ("per-write" if durable_batches else "per-point")
        sink.write((PROTOCOLS, 0), protocols, list(range(len(protocols))))
        assert sink.delete(PROTOCOLS, [protocols[0].id]) == 1
    journal = sqlite_journal_mode(store / "collection" / "protocols" / "storage.sqlite")
    assert journal == ("wal" if durable_batches else "delete")
    with VectorSink(client_factory(path=store), load_mapping(), shared_embedder()) as reopened:
        assert _count(reopened, PROTOCOLS) == len(protocols) - 1
        assert reopened.search("protocols", "oracle price feeds", limit=1)[0][1]["id"] == (
            "chainlink"
        )
