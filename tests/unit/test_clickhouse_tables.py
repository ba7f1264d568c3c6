"""ClickHouse tables from the catalog, the sink's mapping file and its exactly-once planning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ys_platform.catalog.models import DefiToken, UserPortfolio
from ys_platform.catalog.tables import (
    DEDUPLICATION_WINDOW,
    PROGRESS_TABLE,
    column_type,
    progress_table_ddl,
    table_spec,
)
from ys_platform.sinks.clickhouse import (
    DEFAULT_MAPPING_PATH,
    RangeState,
    SinkConfigError,
    SinkRangeError,
    load_mapping,
    plan_partition,
    token_for,
)

DT = "DateTime64(3, 'UTC')"
LC = "LowCardinality(String)"
PROVENANCE = [("_topic", LC), ("_partition", "UInt16"), ("_offset", "UInt64")]

EXPECTED = {
    "defi.transactions": (
        "transactions",
        [
            ("tx_hash", "String"),
            ("user_id", "String"),
            ("protocol", LC),
            ("chain", LC),
            ("action", LC),
            ("asset", LC),
            ("amount", "Float64"),
            ("ts", DT),
        ],
        "(user_id, tx_hash)",
        "toDate(ts)",
    ),
    "market.prices": (
        "market_data",
        [
            ("symbol", LC),
            ("base", LC),
            ("quote", LC),
            ("price", "Float64"),
            ("volume", "Nullable(Float64)"),
            ("source", LC),
            ("chain", LC),
            ("venue", LC),
            ("reserve_base", "Nullable(Float64)"),
            ("reserve_quote", "Nullable(Float64)"),
            ("liquidity_usd", "Nullable(Float64)"),
            ("ts", DT),
        ],
        "(symbol, ts)",
        "toDate(ts)",
    ),
    "market.analytics": (
        "analytics",
        [
            ("symbol", LC),
            ("window_start", DT),
            ("window_end", DT),
            ("twap", "Float64"),
            ("vwap", "Nullable(Float64)"),
            ("volatility", "Float64"),
            ("consolidated_price", "Nullable(Float64)"),
            ("sources", "UInt64"),
            ("ticks", "UInt64"),
        ],
        "(symbol, window_end)",
        "toYYYYMM(window_end)",
    ),
    "defi.yields": (
        "yield_data",
        [
            ("strategy_id", "String"),
            ("protocol", LC),
            ("chain", LC),
            ("asset", LC),
            ("apy", "Float64"),
            ("tvl_usd", "Float64"),
            ("ts", DT),
        ],
        "(protocol, strategy_id, ts)",
        "toYYYYMM(ts)",
    ),
    "risk.assessments": (
        "risk_data",
        [
            ("user_id", "String"),
            ("health_factor", "Nullable(Float64)"),
            ("ltv", "Float64"),
            ("collateral_usd", "Float64"),
            ("debt_usd", "Float64"),
            ("risk_score", "Float64"),
            ("hhi", "Float64"),
            ("var_95_1d_usd", "Float64"),
            ("assessed_at", DT),
        ],
        "(user_id, assessed_at)",
        "toYYYYMM(assessed_at)",
    ),
    "crosschain.arbitrage": (
        "crosschain_data",
        [
            ("id", "String"),
            ("symbol", LC),
            ("buy_chain", LC),
            ("buy_venue", LC),
            ("buy_price", "Float64"),
            ("sell_chain", LC),
            ("sell_venue", LC),
            ("sell_price", "Float64"),
            ("spread_bps", "Float64"),
            ("trade_size", "Float64"),
            ("expected_profit_usd", "Float64"),
            ("score", "Float64"),
            ("detected_at", DT),
            ("expires_at", DT),
        ],
        "(symbol, detected_at)",
        "toYYYYMM(detected_at)",
    ),
}


# Change-stream tables keep the latest version of a row; transactions also store deletes.
ENGINES = {
    "defi.transactions": "ReplacingMergeTree(_offset, _is_deleted)",
    "defi.yields": "ReplacingMergeTree(_offset)",
}
DELETED = {"defi.transactions": [("_is_deleted", "UInt8")]}


@pytest.mark.parametrize("topic_name", sorted(EXPECTED))
def test_table_ddl_from_the_model(topic_name):
    name, columns, order_by, partition_by = EXPECTED[topic_name]
    spec = table_spec(topic_name, name)
    expected_columns = columns + PROVENANCE + DELETED.get(topic_name, [])
    assert [(c.name, c.type) for c in spec.columns] == expected_columns
    ddl = spec.ddl()
    assert ddl.startswith(f"CREATE TABLE IF NOT EXISTS `{name}`\n(\n")
    body = re.findall(r"^    `(\w+)` (.+?),?$", ddl, re.M)
    assert body == expected_columns
    assert f"\nENGINE = {ENGINES.get(topic_name, 'MergeTree')}\n" in ddl
    assert spec.versioned == (topic_name in ENGINES)
    assert spec.keeps_deletes == (topic_name in DELETED)
    assert f"\nORDER BY {order_by}\n" in ddl
    assert f"\nPARTITION BY {partition_by}\n" in ddl
    assert ddl.endswith(f"SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}")
    assert spec.ddl("t1_").startswith("CREATE TABLE IF NOT EXISTS `t1_" + name + "`")


def test_the_mapping_file_names_the_seed_tables():
    mapping = load_mapping()
    assert mapping.topics == {t: name for t, (name, *_) in EXPECTED.items()}
    assert mapping.group == "clickhouse-sink"
    assert mapping.batch_size > 0 and mapping.flush_interval_ms > 0


def test_other_types():
    decimals = DefiToken.model_fields["decimals"]
    assert column_type("decimals", decimals.annotation, decimals.metadata) == "UInt8"
    assert column_type("positions", UserPortfolio.model_fields["positions"].annotation) == "String"
    assert column_type("chain", str | None) == "LowCardinality(Nullable(String))"
    assert column_type("value", int) == "Int64"
    with pytest.raises(TypeError, match="'x'"):
        column_type("x", complex)


def test_progress_table():
    ddl = progress_table_ddl("ns_")
    assert ddl.startswith(f"CREATE TABLE IF NOT EXISTS `ns_{PROGRESS_TABLE}`")
    assert "`state` Enum8('BEFORE' = 1, 'AFTER' = 2)" in ddl
    assert "ENGINE = ReplacingMergeTree(version)\nORDER BY (topic, partition)" in ddl


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"topics": {"market.pricez": "x"}}, "topics", "'market.pricez'"),
        ({"topics": {"defi.tokens": "tokens"}}, "topics", "'defi.tokens'"),
        ({"topics": {"market.prices": "market-data"}}, "topics", "'market-data'"),
        ({"topics": {"market.prices": "t", "defi.yields": "t"}}, "topics", "both map"),
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"batchsize": 10}, "batchsize", "Extra inputs"),
        ({"group": "vector-sinc"}, "group", "'vector-sinc'"),
        ({"group": "price-aggregation-processor"}, "group", "not a sink"),
    ],
)
def test_a_bad_mapping_fails_naming_the_key(tmp_path: Path, change, key, words):
    raw = json.loads(DEFAULT_MAPPING_PATH.read_text())
    raw.update(change)
    path = tmp_path / "clickhouse-sink.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(SinkConfigError) as info:
        load_mapping(path)
    text = str(info.value)
    assert text.startswith(f"{path}: key '{key}': ")
    assert words in text
    assert "\n" not in text


def test_a_missing_or_broken_file(tmp_path: Path):
    with pytest.raises(SinkConfigError, match="does not exist"):
        load_mapping(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SinkConfigError, match="not valid JSON"):
        load_mapping(tmp_path / "bad.json")


# --- tokens and plans ---------------------------------------------------------------------------


def tok(lo: int, hi: int) -> str:
    return token_for("market.prices", 3, lo, hi)


def test_token_is_a_function_of_the_range_alone():
    assert token_for("a.b", 1, 10, 20) == token_for("a.b", 1, 10, 20)
    tokens = {
        token_for("a.b", 1, 10, 20),
        token_for("a.b", 2, 10, 20),
        token_for("a.c", 1, 10, 20),
        token_for("a.b", 1, 11, 20),
        token_for("a.b", 1, 10, 21),
        token_for("a.b", 11, 0, 20),  # no ambiguity across the separators
    }
    assert len(tokens) == 6


def chunks(plan):
    return [(c.start, c.stop, c.min_offset, c.max_offset, c.replay) for c in plan.chunks]


def test_no_state_is_one_new_batch():
    plan = plan_partition(None, [5, 6, 8], tok)
    assert plan.dropped == 0 and chunks(plan) == [(0, 3, 5, 8, False)]
    assert plan.chunks[0].token == tok(5, 8)
    assert plan_partition(None, [], tok).chunks == ()


def test_after_drops_what_is_stored():
    state = RangeState(0, 9, "AFTER", tok(0, 9))
    assert chunks(plan_partition(state, [7, 8, 9, 10, 12], tok)) == [(3, 5, 10, 12, False)]
    assert plan_partition(state, [3, 9], tok).chunks == ()
    # Past trailing records that failed to decode: they are skipped too.
    beyond = RangeState(0, 9, "AFTER", tok(0, 9), next_offset=12)
    assert beyond.resume_offset == 12
    assert chunks(plan_partition(beyond, [10, 11, 12, 13], tok)) == [(2, 4, 12, 13, False)]


def test_before_same_range_is_replayed_with_its_token():
    state = RangeState(10, 14, "BEFORE", tok(10, 14))
    assert state.resume_offset == 10
    plan = plan_partition(state, [10, 11, 13, 14], tok)
    assert chunks(plan) == [(0, 4, 10, 14, True)]
    assert plan.chunks[0].token == tok(10, 14)


def test_before_overlapping_batch_is_split():
    state = RangeState(10, 14, "BEFORE", tok(10, 14))
    plan = plan_partition(state, [8, 9, 10, 11, 14, 15, 17], tok)
    assert plan.dropped == 2
    assert chunks(plan) == [(2, 5, 10, 14, True), (5, 7, 15, 17, False)]
    assert [c.token for c in plan.chunks] == [tok(10, 14), tok(15, 17)]


def test_before_incomplete_range_is_held():
    state = RangeState(10, 14, "BEFORE", tok(10, 14))
    plan = plan_partition(state, [9, 10, 11], tok)
    assert plan.chunks == () and plan.dropped == 1 and plan.held == 2
    # Only older records: nothing to do, nothing held.
    assert plan_partition(state, [3, 9], tok) == plan_partition(state, [3, 9], tok)
    assert plan_partition(state, [3, 9], tok).held == 0


def test_before_that_cannot_be_rebuilt_stops():
    state = RangeState(10, 14, "BEFORE", tok(10, 14))
    with pytest.raises(SinkRangeError, match="start at offset 11"):
        plan_partition(state, [11, 12, 14], tok)  # offset 10 is gone
    with pytest.raises(SinkRangeError, match="offset 14 is no longer"):
        plan_partition(state, [10, 13, 15], tok)  # 14 is not a record any more
    with pytest.raises(SinkRangeError):
        plan_partition(state, [20, 21], tok)  # the consumer did not rewind


def test_version_grows_with_progress():
    before = RangeState(10, 14, "BEFORE", "t")
    after = RangeState(10, 14, "AFTER", "t")
    skipped = RangeState(10, 14, "AFTER", "t", next_offset=20)
    following = RangeState(20, 20, "BEFORE", "u")
    versions = [s.version for s in (before, after, skipped, following)]
    assert versions == sorted(versions) and len(set(versions)) == 4


def test_change_stream_tables_store_deletes_as_versions_or_leave_them_out():
    from datetime import UTC, datetime

    from ys_platform.catalog.models import DefiTransaction, YieldStrategy
    from ys_platform.sinks.clickhouse import build_arrow

    at = datetime(2026, 11, 27, 12, tzinfo=UTC)
    txs = [
        DefiTransaction(
            tx_hash=f"0x{i}",
            user_id="user-1",
            protocol="aave-v3",
            chain="ethereum",
            action="deposit",
            asset="WETH",
            amount=float(i),
            ts=at,
        )
        for i in range(3)
    ]
    table = build_arrow(
        table_spec("defi.transactions", "transactions"), txs, "t", 0, [10, 11, 12], {11}
    )
    assert table.column("_is_deleted").to_pylist() == [0, 1, 0]
    assert table.column("tx_hash").to_pylist() == ["0x0", "0x1", "0x2"]

    yields = [
        YieldStrategy(
            strategy_id="y-1",
            protocol="aave-v3",
            chain="ethereum",
            asset="USDC",
            apy=4.0 + i,
            tvl_usd=1e8,
            ts=at,
        )
        for i in range(3)
    ]
    table = build_arrow(table_spec("defi.yields", "yield_data"), yields, "t", 0, [5, 6, 7], {6})
    assert "_is_deleted" not in table.column_names
    assert table.column("_offset").to_pylist() == [5, 7]
    assert table.column("apy").to_pylist() == [4.0, 6.0]


def test_keeping_deletes_needs_versions():
    from ys_platform.catalog.tables import TableLayout

    with pytest.raises(ValueError, match="keeps_deletes needs versioned"):
        TableLayout(("id",), keeps_deletes=True)
