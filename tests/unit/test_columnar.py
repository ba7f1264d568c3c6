"""The columnar decoder with exact values: the fast path, the fallback, the schema derivation."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

import pyarrow as pa
import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ys_platform.catalog import MODELS, MarketPrice, encode
from ys_platform.catalog.codec import decode_batch
from ys_platform.catalog.columnar import (
    ColumnarSchemaError,
    arrow_schema,
    decode_columns,
    is_columnar,
)
from ys_platform.catalog.models import NonEmptyStr, Positive, Ticker, UtcDatetime
from ys_platform.sources.simulator import MarketSimulator

PRICES = "market.prices"
ETH = (
    b'{"symbol":"ETH/USD","base":"ETH","quote":"USD","price":2000.5,"volume":1.25,'
    b'"source":"binance","chain":"offchain","venue":"binance","ts":"2026-01-02T03:04:05.678Z"}'
)
POOL = (
    b'{"symbol":"WBTC/USDC","base":"WBTC","quote":"USDC","price":60000,"source":"uniswap-v3",'
    b'"chain":"ethereum","venue":"uniswap-v3","reserve_base":12.5,"reserve_quote":750000.0,'
    b'"liquidity_usd":1500000.0,"ts":"2026-01-02T03:04:06Z"}'
)
ORACLE = (
    b'{"symbol":"1INCH/USD","base":"1INCH","quote":"USD","price":0.25,"volume":null,'
    b'"source":"chainlink","chain":"polygon","venue":"chainlink","reserve_base":null,'
    b'"reserve_quote":null,"liquidity_usd":null,"ts":"2026-01-02T03:04:05.5Z"}'
)

ETH_ROW = {
    "symbol": "ETH/USD",
    "base": "ETH",
    "quote": "USD",
    "price": 2000.5,
    "volume": 1.25,
    "source": "binance",
    "chain": "offchain",
    "venue": "binance",
    "reserve_base": None,
    "reserve_quote": None,
    "liquidity_usd": None,
    "ts": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
}
POOL_ROW = {
    "symbol": "WBTC/USDC",
    "base": "WBTC",
    "quote": "USDC",
    "price": 60000.0,
    "volume": None,
    "source": "uniswap-v3",
    "chain": "ethereum",
    "venue": "uniswap-v3",
    "reserve_base": 12.5,
    "reserve_quote": 750000.0,
    "liquidity_usd": 1500000.0,
    "ts": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
}
ORACLE_ROW = {
    "symbol": "1INCH/USD",
    "base": "1INCH",
    "quote": "USD",
    "price": 0.25,
    "volume": None,
    "source": "chainlink",
    "chain": "polygon",
    "venue": "chainlink",
    "reserve_base": None,
    "reserve_quote": None,
    "liquidity_usd": None,
    "ts": datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),
}


def rows(batch) -> list[dict]:
    return batch.table.to_pylist()


def reasons(batch) -> list[tuple[int, str]]:
    return [(index, str(error)) for index, error in batch.failures]


# --- schemas -------------------------------------------------------------------------------------


def test_market_prices_schema_is_the_models_fields_in_order():
    assert arrow_schema(PRICES) == pa.schema(
        [
            pa.field("symbol", pa.string(), nullable=False),
            pa.field("base", pa.string(), nullable=False),
            pa.field("quote", pa.string(), nullable=False),
            pa.field("price", pa.float64(), nullable=False),
            pa.field("volume", pa.float64()),
            pa.field("source", pa.string(), nullable=False),
            pa.field("chain", pa.string(), nullable=False),
            pa.field("venue", pa.string(), nullable=False),
            pa.field("reserve_base", pa.float64()),
            pa.field("reserve_quote", pa.float64()),
            pa.field("liquidity_usd", pa.float64()),
            pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        ]
    )


def test_flat_topics_are_columnar_and_the_others_are_not():
    columnar = {name for name in MODELS if is_columnar(name)}
    assert columnar == {
        "defi.tokens",
        "defi.transactions",
        "defi.liquidity-pools",
        "defi.yields",
        "market.prices",
        "market.analytics",
        "market.sentiment",
        "risk.assessments",
        "risk.alerts",
        "crosschain.arbitrage",
    }
    # Tuples (protocol chains, portfolio positions), dicts (labels, attributes), a union.
    with pytest.raises(ValueError, match=r"'crosschain\.events' is not columnar"):
        decode_columns("crosschain.events", [b"{}"])
    with pytest.raises(ValueError, match=r"'users\.portfolios' is not columnar"):
        arrow_schema("users.portfolios")


def test_other_schemas_map_int_literal_and_required_optional_fields():
    analytics = arrow_schema("market.analytics")
    assert analytics.field("sources").type == pa.int64()
    assert not analytics.field("ticks").nullable
    assert analytics.field("vwap").nullable  # required, but may be null
    assert analytics.field("window_start").type == pa.timestamp("ms", tz="UTC")
    assert arrow_schema("defi.transactions").field("action").type == pa.string()
    assert arrow_schema("defi.tokens").field("description").nullable


def test_unknown_topics_are_a_key_error():
    with pytest.raises(KeyError, match=r"'market\.nope' is not a catalog topic"):
        decode_columns("market.nope", [])


# --- the fast path -------------------------------------------------------------------------------


def test_a_clean_batch_takes_the_fast_path_with_exact_values():
    batch = decode_columns(PRICES, [ETH, POOL, ORACLE])
    assert batch.fast
    assert rows(batch) == [ETH_ROW, POOL_ROW, ORACLE_ROW]
    assert batch.indices.tolist() == [0, 1, 2]
    assert batch.failures == []
    assert len(batch) == 3
    assert batch.table.schema == arrow_schema(PRICES)
    assert all(column.num_chunks == 1 for column in batch.table.columns)
    # Epoch milliseconds as the window kernel reads them.
    assert batch.table["ts"].cast(pa.int64()).to_pylist() == [
        1767323045678,
        1767323046000,
        1767323045500,
    ]


def test_the_fast_path_models_are_the_models_of_decode_batch():
    batch = decode_columns(PRICES, [ETH, POOL, ORACLE])
    expected, failures = decode_batch(PRICES, [ETH, POOL, ORACLE])
    assert failures == []
    assert batch.messages() == expected
    assert [m.ts.tzinfo for m in batch.messages()] == [m.ts.tzinfo for m in expected]
    assert batch.messages() is batch.messages()  # built once


def test_the_simulators_ticks_take_the_fast_path():
    values = [value for _, value, _ in MarketSimulator(seed=1).encoded_price_ticks(2000)]
    batch = decode_columns(PRICES, values)
    messages, failures = decode_batch(PRICES, values)
    assert batch.fast and failures == []
    assert batch.table.num_rows == 2000
    assert batch.table["price"].to_pylist() == [m.price for m in messages]
    assert batch.table["volume"].to_pylist() == [m.volume for m in messages]
    assert batch.table["ts"].to_pylist() == [m.ts for m in messages]
    assert batch.table["symbol"].to_pylist() == [m.symbol for m in messages]


def test_threads_and_blocks_change_nothing_in_the_table():
    # 20,000 ticks are ~5 MB: several 1 MB blocks with threads, one 8 MB block without.
    values = [value for _, value, _ in MarketSimulator(seed=2).encoded_price_ticks(20_000)]
    single = decode_columns(PRICES, values)
    threaded = decode_columns(PRICES, values, threads=True)
    assert single.fast and threaded.fast
    assert threaded.table.equals(single.table)
    assert [c.num_chunks for c in threaded.table.columns] == [1] * 12
    assert not decode_columns(PRICES, [*values, b"{}"], threads=True).fast


def test_an_empty_batch_is_an_empty_table():
    batch = decode_columns(PRICES, [])
    assert batch.fast
    assert batch.table.num_rows == 0
    assert batch.table.schema == arrow_schema(PRICES)
    assert batch.indices.tolist() == []
    assert batch.failures == []
    assert batch.messages() == []


def test_a_required_optional_field_may_be_null_but_not_missing():
    window = (
        b'{"symbol":"ETH/USD","window_start":"2026-01-02T03:04:00.000Z",'
        b'"window_end":"2026-01-02T03:05:00.000Z","twap":2000.0,"vwap":null,"volatility":0.01,'
        b'"consolidated_price":null,"sources":0,"ticks":3}'
    )
    batch = decode_columns("market.analytics", [window, window])
    assert batch.fast
    assert batch.table["vwap"].to_pylist() == [None, None]
    assert batch.table["ticks"].to_pylist() == [3, 3]
    missing = window.replace(b'"vwap":null,', b"")
    batch = decode_columns("market.analytics", [window, missing])
    assert not batch.fast
    assert reasons(batch) == [(1, "market.analytics: field 'vwap': Field required")]
    assert batch.indices.tolist() == [0]


# --- the fallback --------------------------------------------------------------------------------


def test_a_batch_with_bad_values_falls_back_with_the_reasons_of_decode_batch():
    values = [
        ETH,
        None,
        ETH.replace(b"2000.5", b"0"),
        ETH.replace(b'"symbol":"ETH/USD"', b'"symbol":"BTC/USD"'),
        ETH.replace(b'"volume":1.25', b'"reserve_base":5.0'),
        POOL,
        b'{"symbol"',
        ETH.replace(b"2000.5", b"NaN"),
        ETH.replace(b"2000.5", b"true"),
        ORACLE,
    ]
    batch = decode_columns(PRICES, values)
    assert not batch.fast
    assert reasons(batch) == [
        (1, "market.prices: no value (a tombstone)"),
        (2, "market.prices: field 'price': Input should be greater than 0"),
        (3, "market.prices: symbol 'BTC/USD' does not match base/quote 'ETH/USD'"),
        (4, "market.prices: reserve_base and reserve_quote go together"),
        (6, "market.prices: Invalid JSON: EOF while parsing an object at line 1 column 9"),
        (7, "market.prices: field 'price': Input should be a finite number"),
        (8, "market.prices: field 'price': Input should be a valid number"),
    ]
    assert batch.indices.tolist() == [0, 5, 9]
    assert rows(batch) == [ETH_ROW, POOL_ROW, ORACLE_ROW]
    assert batch.table.schema == arrow_schema(PRICES)
    expected, _ = decode_batch(PRICES, values)
    assert batch.messages() == expected


def test_the_fallback_builds_the_table_the_fast_path_builds():
    clean = [ETH, POOL, ORACLE]
    fast = decode_columns(PRICES, clean)
    slow = decode_columns(PRICES, [*clean, None])
    assert fast.fast and not slow.fast
    assert slow.table.equals(fast.table)
    assert slow.table.schema == fast.table.schema
    assert [c.num_chunks for c in slow.table.columns] == [1] * 12


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        # Valid for pydantic, but not in the canonical form: pydantic decides.
        (ETH.replace(b".678Z", b".678+00:00"), "ts", ETH_ROW["ts"]),
        (ETH.replace(b".678Z", b".678+01:00"), "ts", datetime(2026, 1, 2, 2, 4, 5, 678000, UTC)),
        (ETH.replace(b".678Z", b".678999Z"), "ts", ETH_ROW["ts"]),  # truncated to the ms
        (ETH.replace(b"T03", b" 03"), "ts", ETH_ROW["ts"]),
        (ETH.replace(b"Z", b"z"), "ts", ETH_ROW["ts"]),
        (b" " + ETH, "price", 2000.5),  # leading whitespace
        (ETH.replace(b'"price":', b'"price":\n'), "price", 2000.5),  # a newline between tokens
        (ETH.replace(b"1.25", b"-0"), "volume", 0.0),  # pydantic: +0.0; Arrow would say -0.0
        (ETH.replace(b"1.25", b"-0.0"), "volume", -0.0),
        (ETH[:-1] + b',"price":1.5}', "price", 1.5),  # a repeated key: pydantic keeps the last
        (ETH[:-1] + b',"pr\\u0069ce":7.5}', "price", 7.5),  # repeated, spelled with an escape
    ],
)
def test_values_the_fast_path_doubts_fall_back_to_the_models_answer(value, field, expected):
    batch = decode_columns(PRICES, [ETH, value])
    assert not batch.fast
    assert batch.failures == []
    assert batch.indices.tolist() == [0, 1]
    got = batch.table[field][1].as_py()
    assert got == expected
    if isinstance(expected, float):
        assert math.copysign(1, got) == math.copysign(1, expected)
    assert batch.messages()[1] == decode_batch(PRICES, [value])[0][0]


def test_escapes_and_unicode_decode_on_the_fast_path_as_in_the_models():
    sources = [
        (b'"bin\\u0061nce"', "binance"),
        (b'"\\ud83d\\ude80 moon"', "\U0001f680 moon"),
        ('"café ☕"'.encode(), "café ☕"),
        (b'"a\\/b\\\\c\\"d\\te"', 'a/b\\c"d\te'),
        (b'"nul\\u0000"', "nul\x00"),
    ]
    values = [ETH.replace(b'"binance"', raw, 1) for raw, _ in sources]
    values.append(ETH.replace(b'"symbol"', b'"sym\\u0062ol"'))  # a key with an escape
    values.append(ETH.replace(b'"ETH/USD"', b'"ETH\\/USD"'))
    batch = decode_columns(PRICES, values)
    assert batch.fast
    expected_sources = [text for _, text in sources] + ["binance", "binance"]
    assert batch.table["source"].to_pylist() == expected_sources
    assert batch.table["symbol"].to_pylist() == ["ETH/USD"] * len(values)
    assert batch.messages() == decode_batch(PRICES, values)[0]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (ETH.replace(b".678Z", b".678"), "field 'ts': Input should have timezone info"),
        (
            ETH.replace(b"01-02T", b"02-30T"),
            "field 'ts': Input should be a valid datetime, day value is outside expected range",
        ),
        (ETH.replace(b'"binance",', b'"\xffbinance",', 1), "Invalid JSON: invalid unicode code "),
        (b"\xef\xbb\xbf" + ETH, "Invalid JSON: expected value at line 1 column 1"),
        (ETH + b"\n" + ETH, "Invalid JSON: trailing characters at line 2 column 1"),
        (ETH + ETH, "Invalid JSON: trailing characters at line 1 column 165"),
        (ETH + b" null", "Invalid JSON: trailing characters at line 1 column 166"),
        (b"null", "Input should be an object"),
        (b"", "Invalid JSON: EOF while parsing a value at line 1 column 0"),
        (ETH[:-1] + b',"price":null}', "field 'price': Input should be a valid number"),
        (ETH[:-1] + b',"bid":1.0}', "field 'bid': Extra inputs are not permitted"),
        (ETH.replace(b'"source":"binance",', b""), "field 'source': Field required"),
        (ETH.replace(b'"binance"', b"17", 1), "field 'source': Input should be a valid string"),
        (ETH.replace(b'"binance"', b'""', 1), "field 'source': String should have at least 1 c"),
        (ETH.replace(b'"ETH/USD"', b'"ETH/USD\\n"'), "field 'symbol': String should match pat"),
        (ETH.replace(b'"ETH"', b'"\xc3\x89TH"'), "field 'base': String should match pattern"),
        (ETH.replace(b"2000.5", b'"2000.5"'), "field 'price': Input should be a valid number"),
        (ETH.replace(b"2000.5", b"1e400"), "field 'price': Input should be a finite number"),
        (ETH.replace(b"2000.5", b"-1"), "field 'price': Input should be greater than 0"),
    ],
)
def test_bad_values_fail_exactly_as_in_decode_batch(value, reason):
    batch = decode_columns(PRICES, [ETH, value, POOL])
    assert not batch.fast
    _, expected = decode_batch(PRICES, [ETH, value, POOL])
    assert reasons(batch) == [(index, str(error)) for index, error in expected]
    assert len(batch.failures) == 1
    index, error = batch.failures[0]
    assert index == 1
    assert str(error).startswith(f"market.prices: {reason}")
    assert batch.indices.tolist() == [0, 2]
    assert rows(batch) == [ETH_ROW, POOL_ROW]


def test_integers_beyond_int64_fail_alike_in_both_decoders():
    window = (
        b'{"symbol":"ETH/USD","window_start":"2026-01-02T03:04:00.000Z",'
        b'"window_end":"2026-01-02T03:05:00.000Z","twap":2000.0,"vwap":null,"volatility":0.01,'
        b'"consolidated_price":null,"sources":0,"ticks":TICKS}'
    )
    values = [window.replace(b"TICKS", str(t).encode()) for t in (3, 2**63, 2**63 - 1)]
    # The catalog's counts are Int64 (models.Count): a larger one was accepted by the models
    # and refused by the columns, so one consumer of a topic took what another dead-lettered.
    reason = "market.analytics: field 'ticks': Input should be less than or equal to " + str(
        2**63 - 1
    )
    assert [(i, str(e)) for i, e in decode_batch("market.analytics", values)[1]] == [(1, reason)]
    batch = decode_columns("market.analytics", values)
    assert reasons(batch) == [(1, reason)]
    assert batch.indices.tolist() == [0, 2]
    assert batch.table["ticks"].to_pylist() == [3, 2**63 - 1]
    assert [m.ticks for m in batch.messages()] == [3, 2**63 - 1]


def test_encoded_models_of_another_flat_topic_take_the_fast_path():
    from ys_platform.catalog import DefiTransaction

    tx = DefiTransaction(
        tx_hash="0xabc",
        user_id="user-7",
        protocol="aave-v3",
        chain="ethereum",
        action="borrow",
        asset="USDC.e",
        amount=250.0,
        ts=datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
    )
    value = encode(tx)[1]
    batch = decode_columns("defi.transactions", [value, value.replace(b"borrow", b"lend")])
    assert not batch.fast
    assert reasons(batch) == [
        (
            1,
            "defi.transactions: field 'action': Input should be 'deposit', 'withdraw', 'borrow', "
            "'repay', 'swap' or 'liquidation'",
        )
    ]
    batch = decode_columns("defi.transactions", [value])
    assert batch.fast
    assert rows(batch) == [
        {
            "tx_hash": "0xabc",
            "user_id": "user-7",
            "protocol": "aave-v3",
            "chain": "ethereum",
            "action": "borrow",
            "asset": "USDC.e",
            "amount": 250.0,
            "ts": datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
        }
    ]
    assert batch.messages() == [tx]


# --- the schema derivation refuses what it cannot check ------------------------------------------


def derive(model: type[BaseModel]):
    from ys_platform.catalog import columnar

    return columnar._derive("test.topic", model)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def test_a_model_validator_without_a_vectorised_equivalent_is_refused():
    class Quote(_Strict):
        bid: Positive
        ask: Positive

        @model_validator(mode="after")
        def _ordered(self):
            if self.ask < self.bid:
                raise ValueError("ask below bid")
            return self

    with pytest.raises(ColumnarSchemaError, match=r"validator .*_ordered \(on model\) has no"):
        derive(Quote)


def test_a_field_validator_without_a_vectorised_equivalent_is_refused():
    class Named(_Strict):
        name: NonEmptyStr

        @field_validator("name")
        @classmethod
        def _lower(cls, value: str) -> str:
            return value.lower()

    with pytest.raises(ColumnarSchemaError, match=r"validator .*_lower \(on name\) has no"):
        derive(Named)


def test_an_unknown_constraint_is_refused():
    class Lots(_Strict):
        size: float = Field(multiple_of=0.5)

    with pytest.raises(ColumnarSchemaError, match=r"Lots.size: core schema keys \['multiple_of'\]"):
        derive(Lots)


def test_a_transforming_string_constraint_is_refused():
    from pydantic import StringConstraints

    class Upper(_Strict):
        code: Annotated[str, StringConstraints(to_upper=True)]

    with pytest.raises(ColumnarSchemaError, match=r"Upper.code: core schema keys \['to_upper'\]"):
        derive(Upper)


def test_a_model_that_ignores_unknown_fields_is_refused():
    class Lax(BaseModel):
        name: str

    with pytest.raises(ColumnarSchemaError, match="extra='forbid'"):
        derive(Lax)


def test_nested_fields_make_a_model_not_columnar():
    from ys_platform.catalog import columnar

    class WithTuple(_Strict):
        chains: tuple[str, ...]

    class WithDict(_Strict):
        labels: dict[str, str]

    class WithModel(_Strict):
        inner: WithTuple

    for model in (WithTuple, WithDict, WithModel):
        with pytest.raises(columnar._NotFlat):
            derive(model)


def test_enums_literals_and_bools_are_columnar():
    class Side(StrEnum):
        BUY = "buy"
        SELL = "sell"

    class Order(_Strict):
        side: Side
        kind: Literal["limit", "market"] | None = None
        post_only: bool
        asset: Ticker
        ts: UtcDatetime

    layout = derive(Order)
    assert layout.schema == pa.schema(
        [
            pa.field("side", pa.string(), nullable=False),
            pa.field("kind", pa.string()),
            pa.field("post_only", pa.bool_(), nullable=False),
            pa.field("asset", pa.string(), nullable=False),
            pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        ]
    )
    from ys_platform.catalog import columnar

    value = (
        b'{"side":"sell","kind":null,"post_only":true,"asset":"ETH","ts":"2026-01-01T00:00:00Z"}'
    )
    table = columnar._fast(layout, [value, value.replace(b"null", b'"limit"')])
    assert table is not None
    assert table.to_pylist()[1] == {
        "side": "sell",
        "kind": "limit",
        "post_only": True,
        "asset": "ETH",
        "ts": datetime(2026, 1, 1, tzinfo=UTC),
    }
    for bad in (b'"hold"', b"1"):
        assert columnar._fast(layout, [value.replace(b'"sell"', bad)]) is None
    assert columnar._fast(layout, [value.replace(b"true", b"1")]) is None
    assert columnar._table_of(layout, [Order.model_validate_json(value)]).equals(
        columnar._fast(layout, [value])
    )


def test_every_catalog_validator_of_a_flat_model_has_its_check():
    # Deriving every topic raises nothing: each flat model's validators are registered.
    from ys_platform.catalog import columnar

    assert columnar._layout("market.prices").validator_checks == (
        columnar._market_price_consistent,
    )
    assert columnar._layout("defi.transactions").validator_checks == ()
    for name, model in MODELS.items():
        layout = columnar._layout(name)
        if layout is not None:
            validators = model.__pydantic_decorators__.model_validators
            assert len(layout.validator_checks) == len(validators), name
    assert MarketPrice.__pydantic_decorators__.model_validators.keys() == {"_consistent"}


def test_a_registered_validator_check_is_applied(monkeypatch):
    import pyarrow.compute as pc

    from ys_platform.catalog import columnar

    class Quote(_Strict):
        bid: Positive
        ask: Positive

        @model_validator(mode="after")
        def _ordered(self):
            if self.ask < self.bid:
                raise ValueError("ask below bid")
            return self

    monkeypatch.setitem(
        columnar._VALIDATOR_CHECKS,
        (Quote, "_ordered"),
        lambda table: pc.greater_equal(table["ask"], table["bid"]),
    )
    layout = derive(Quote)
    assert layout.validator_checks == (columnar._VALIDATOR_CHECKS[(Quote, "_ordered")],)
    table = columnar._fast(layout, [b'{"bid":1.0,"ask":1.5}', b'{"bid":2,"ask":2}'])
    assert table.to_pylist() == [{"bid": 1.0, "ask": 1.5}, {"bid": 2.0, "ask": 2.0}]
    assert columnar._fast(layout, [b'{"bid":1.0,"ask":1.5}', b'{"bid":2,"ask":1}']) is None


def test_nulls_fall_back_unless_the_field_decodes_a_missing_key_to_none():
    from ys_platform.catalog import columnar

    class Defaults(_Strict):
        size: float = 1.0  # missing: 1.0; null: an error
        limit: float | None = 5.0  # missing: 5.0; null: None
        note: str | None = None  # missing or null: None
        tag: str | None  # null: None; missing: an error

    layout = derive(Defaults)
    full = b'{"size":2.0,"limit":3.0,"note":"n","tag":"t"}'
    assert columnar._fast(layout, [full]).to_pylist() == [
        {"size": 2.0, "limit": 3.0, "note": "n", "tag": "t"}
    ]
    assert columnar._fast(layout, [b'{"size":2.0,"limit":3.0,"tag":null}']).to_pylist() == [
        {"size": 2.0, "limit": 3.0, "note": None, "tag": None}
    ]
    for doubtful in (
        b'{"limit":3.0,"note":"n","tag":"t"}',  # size missing
        b'{"size":null,"limit":3.0,"note":"n","tag":"t"}',
        b'{"size":2.0,"note":"n","tag":"t"}',  # limit missing
        b'{"size":2.0,"limit":null,"note":"n","tag":"t"}',
        b'{"size":2.0,"limit":3.0,"note":"n"}',  # tag missing
        b'{"size":2.0, "limit":3.0,"note":"n","tag" :null}',  # tag null, but spelled apart
    ):
        assert columnar._fast(layout, [full, doubtful]) is None, doubtful


def test_non_finite_floats_fall_back_even_where_the_model_allows_them():
    from ys_platform.catalog import columnar

    class Loose(BaseModel):
        model_config = ConfigDict(extra="forbid")  # allow_inf_nan defaults to True
        x: float

    layout = derive(Loose)
    assert columnar._fast(layout, [b'{"x":1.5}']).to_pylist() == [{"x": 1.5}]
    assert columnar._fast(layout, [b'{"x":NaN}']) is None
    assert columnar._fast(layout, [b'{"x":-Infinity}']) is None
    assert math.isnan(Loose.model_validate_json(b'{"x":NaN}', strict=True).x)


WINDOW = (
    b'{"symbol":"ETH/USD","window_start":"2026-01-02T03:04:00.000Z",'
    b'"window_end":"2026-01-02T03:05:00.000Z","twap":TWAP,"vwap":null,"volatility":0.01,'
    b'"consolidated_price":null,"sources":0,"ticks":TICKS}'
)


@pytest.mark.parametrize(
    ("twap", "ticks", "fast", "outcome"),
    [
        # An integer token for a float field: accepted, correctly rounded, on both paths.
        (b"2", b"3", True, ("twap", 2.0)),
        (str(2**70).encode(), b"3", True, ("twap", 1.1805916207174113e21)),
        (b"123456789012345678901234567890", b"3", True, ("twap", 1.2345678901234568e29)),
        # A float token for an int field: rejected.
        (b"2.5", b"3.0", False, "field 'ticks': Input should be a valid integer"),
        (b"2.5", b"3e0", False, "field 'ticks': Input should be a valid integer"),
        (b"2.5", b"true", False, "field 'ticks': Input should be a valid integer"),
        # Bools for numbers, overflow to infinity, NaN tokens: rejected.
        (b"true", b"3", False, "field 'twap': Input should be a valid number"),
        (b"1e400", b"3", False, "field 'twap': Input should be a finite number"),
        (b"NaN", b"3", False, "field 'twap': Input should be a finite number"),
        (b"-0.0", b"3", False, "field 'twap': Input should be greater than 0"),
    ],
)
def test_pydantic_strict_json_numbers_and_the_fast_path_agree(twap, ticks, fast, outcome):
    value = WINDOW.replace(b"TWAP", twap).replace(b"TICKS", ticks)
    batch = decode_columns("market.analytics", [value])
    messages, failures = decode_batch("market.analytics", [value])
    assert batch.fast is fast
    assert reasons(batch) == [(i, str(e)) for i, e in failures]
    if isinstance(outcome, tuple):
        field, expected = outcome
        assert batch.table[field].to_pylist() == [expected] == [getattr(messages[0], field)]
    else:
        assert reasons(batch) == [(0, f"market.analytics: {outcome}")]
