"""Message models, the codec and the JSON Schema export: the wire contract of every topic."""

from __future__ import annotations

import copy
import gc
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError

from ys_platform.catalog import (
    MODELS,
    TOPICS,
    VALUE_TYPES,
    BridgeQuote,
    DecodeError,
    GasPrice,
    MarketPrice,
    Message,
    decode,
    decode_batch,
    encode,
    format_utc,
    json_schemas,
    key_of,
    timestamp_ms,
    topic,
    topic_of,
    write_json_schemas,
)

TS = "2026-01-02T03:04:05.678Z"
TS2 = "2026-01-02T03:05:05.678Z"

# One good value per topic, in canonical wire form (what encode writes): an exact round trip.
SAMPLES: dict[str, dict[str, Any]] = {
    "defi.protocols": {
        "id": "aave-v3",
        "name": "Aave V3",
        "description": "Decentralized lending protocol",
        "category": "lending",
        "chains": ["ethereum", "arbitrum"],
        "tvl": 5200000000.0,
        "apy": 4.2,
        "risk_score": 0.3,
        "updated_at": TS,
    },
    "defi.tokens": {
        "address": "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
        "symbol": "WETH",
        "name": "Wrapped Ether",
        "chain": "ethereum",
        "decimals": 18,
        "price_usd": 3000.5,
        "market_cap_usd": None,
        "description": None,
        "updated_at": TS,
    },
    "defi.transactions": {
        "tx_hash": "0xabc",
        "user_id": "user-1",
        "protocol": "aave-v3",
        "chain": "ethereum",
        "action": "borrow",
        "asset": "USDC",
        "amount": 1500.0,
        "ts": TS,
    },
    "defi.liquidity-pools": {
        "pool_id": "uniswap-v3:eth-usdc-5",
        "protocol": "uniswap-v3",
        "chain": "ethereum",
        "token0": "WETH",
        "token1": "USDC",
        "reserve0": 1000.0,
        "reserve1": 3000000.0,
        "fee_bps": 5.0,
        "tvl_usd": 6000000.0,
        "ts": TS,
    },
    "defi.yields": {
        "strategy_id": "curve-3pool",
        "protocol": "curve",
        "chain": "ethereum",
        "asset": "USDC",
        "apy": 3.1,
        "tvl_usd": 250000000.0,
        "ts": TS,
    },
    "market.prices": {
        "symbol": "ETH/USD",
        "base": "ETH",
        "quote": "USD",
        "price": 3000.5,
        "volume": 12.5,
        "source": "uniswap-v3",
        "chain": "ethereum",
        "venue": "uniswap",
        "reserve_base": 1000.0,
        "reserve_quote": 3000500.0,
        "liquidity_usd": 6001000.0,
        "ts": TS,
    },
    "market.analytics": {
        "symbol": "ETH/USD",
        "window_start": TS,
        "window_end": TS2,
        "twap": 3001.25,
        "vwap": None,
        "volatility": 0.0012,
        "consolidated_price": 3001.0,
        "sources": 3,
        "ticks": 120,
    },
    "market.sentiment": {
        "source_id": "tweet-123",
        "source": "twitter",
        "symbol": "ETH",
        "text": "ETH looking strong",
        "score": 0.7,
        "ts": TS,
    },
    "users.events": {
        "event_id": "ev-1",
        "user_id": "user-1",
        "kind": "login",
        "attributes": {"ip_country": "DE"},
        "ts": TS,
    },
    "users.portfolios": {
        "user_id": "user-1",
        "positions": [
            {
                "protocol": "aave-v3",
                "chain": "ethereum",
                "asset": "WETH",
                "kind": "collateral",
                "amount": 10.0,
                "liquidation_threshold": 0.83,
            },
            {
                "protocol": "aave-v3",
                "chain": "ethereum",
                "asset": "USDC",
                "kind": "debt",
                "amount": 15000.0,
                "liquidation_threshold": None,
            },
        ],
        "ts": TS,
    },
    "system.alerts": {
        "alert_id": "al-1",
        "source": "price-aggregation-processor",
        "severity": "warning",
        "message": "consumer lag above 10000",
        "labels": {"topic": "market.prices"},
        "ts": TS,
    },
    "system.metrics": {
        "name": "consumer_lag",
        "value": 12.0,
        "labels": {"group": "clickhouse-sink"},
        "ts": TS,
    },
    "risk.assessments": {
        "user_id": "user-1",
        "health_factor": 1.66,
        "ltv": 0.5,
        "collateral_usd": 30000.0,
        "debt_usd": 15000.0,
        "risk_score": 0.4,
        "hhi": 0.5,
        "var_95_1d_usd": 1200.0,
        "assessed_at": TS,
    },
    "risk.alerts": {
        "alert_id": "ra-1",
        "user_id": "user-1",
        "kind": "liquidation_risk",
        "severity": "critical",
        "message": "health factor 1.05 below 1.1",
        "value": 1.05,
        "threshold": 1.1,
        "ts": TS,
    },
    "crosschain.events": {
        "type": "bridge_quote",
        "from_chain": "ethereum",
        "to_chain": "arbitrum",
        "asset": "USDC",
        "fee_usd": 2.5,
        "fee_bps": 4.0,
        "latency_s": 600.0,
        "ts": TS,
    },
    "crosschain.arbitrage": {
        "id": "arb-1",
        "symbol": "ETH/USDC",
        "buy_chain": "arbitrum",
        "buy_venue": "uniswap",
        "buy_price": 2990.0,
        "sell_chain": "ethereum",
        "sell_venue": "curve",
        "sell_price": 3010.0,
        "spread_bps": 66.9,
        "trade_size": 5.0,
        "expected_profit_usd": 80.0,
        "score": 0.8,
        "detected_at": TS,
        "expires_at": TS2,
    },
}
GAS = {"type": "gas", "chain": "arbitrum", "gas_usd": 0.05, "ts": TS}
CATALOG = [spec.name for spec in TOPICS]


def raw(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def variant(topic_name: str, **changes: Any) -> bytes:
    """The topic's sample with fields changed (a value of ``...`` removes the field)."""
    payload = copy.deepcopy(SAMPLES[topic_name])
    for name, value in changes.items():
        if value is ...:
            payload.pop(name)
        else:
            payload[name] = value
    return raw(payload)


def rejected(topic_name: str, value: bytes | None) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode(topic_name, value)
    return caught.value


# --- the catalog has a model for every topic ---------------------------------------------------


def test_every_catalog_topic_has_a_model_and_a_sample() -> None:
    assert set(MODELS) == set(CATALOG) == set(SAMPLES)
    assert all(issubclass(model, Message) for model in MODELS.values())


def _concrete(topic_name: str) -> tuple[type[BaseModel], ...]:
    value_type = VALUE_TYPES[topic_name]
    if isinstance(value_type, type):
        return (value_type,)
    union = get_args(value_type)[0]  # Annotated[A | B, discriminator] -> A | B
    return get_args(union)


@pytest.mark.parametrize("topic_name", CATALOG)
def test_every_model_has_its_topic_key(topic_name: str) -> None:
    key = topic(topic_name).key
    for model in _concrete(topic_name):
        # A field, or (a bridge quote's chain) a property every instance answers.
        assert key in model.model_fields or isinstance(getattr(model, key, None), property), (
            f"{model.__name__} lacks {key!r}"
        )


# --- good values round-trip exactly ------------------------------------------------------------


@pytest.mark.parametrize("topic_name", CATALOG)
def test_round_trip_is_exact(topic_name: str) -> None:
    sample = SAMPLES[topic_name]
    message = decode(topic_name, raw(sample))
    assert topic_of(message) == topic_name

    key, value, headers = encode(message)
    key_field = topic(topic_name).key
    expected_key = sample["from_chain"] if topic_name == "crosschain.events" else sample[key_field]
    assert key == expected_key.encode()
    assert key_of(message) == expected_key
    assert headers == [("schema-version", b"1"), ("content-type", b"application/json")]
    assert json.loads(value) == sample  # the wire form is the contract, field for field
    assert decode(topic_name, value) == message


def test_encoded_value_is_compact_json() -> None:
    _, value, _ = encode(decode("market.prices", raw(SAMPLES["market.prices"])))
    assert value.startswith(b'{"symbol":"ETH/USD","base":"ETH"')
    assert b", " not in value and b": " not in value


def test_python_construction_round_trips() -> None:
    message = MarketPrice(
        symbol="BTC/USDC",
        base="BTC",
        quote="USDC",
        price=65000.0,
        source="binance",
        chain="offchain",
        venue="binance",
        ts=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )
    key, value, _ = encode(message)
    assert key == b"BTC/USDC"
    assert json.loads(value)["volume"] is None
    assert decode("market.prices", value) == message


# --- timestamps --------------------------------------------------------------------------------


def test_timestamps_are_utc_milliseconds_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    message = decode(
        "defi.transactions", variant("defi.transactions", ts="2026-01-02T05:04:05.678999+02:00")
    )
    assert message.ts == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert message.ts.utcoffset() == timedelta(0)
    assert json.loads(encode(message)[1])["ts"] == TS
    assert format_utc(datetime(2026, 1, 2, 5, 4, 5, 678000, tzinfo=plus_two)) == TS
    assert format_utc(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


def test_naive_timestamps_are_rejected() -> None:
    error = rejected("defi.transactions", variant("defi.transactions", ts="2026-01-02T03:04:05"))
    assert error.field == "ts"
    assert "timezone" in str(error)
    with pytest.raises(ValidationError):
        GasPrice(chain="ethereum", gas_usd=1.0, ts=datetime(2026, 1, 2))


def test_event_time_and_record_timestamp() -> None:
    analytics = decode("market.analytics", raw(SAMPLES["market.analytics"]))
    assert analytics.event_time == analytics.window_end  # type: ignore[attr-defined]
    expected = int(datetime(2026, 1, 2, 3, 5, 5, 678000, tzinfo=UTC).timestamp() * 1000)
    assert timestamp_ms(analytics) == expected
    assessment = decode("risk.assessments", raw(SAMPLES["risk.assessments"]))
    assert assessment.event_time == assessment.assessed_at  # type: ignore[attr-defined]


# --- bad values are rejected, naming the field -------------------------------------------------


def test_malformed_json() -> None:
    error = rejected("market.prices", b'{"symbol": "ETH/USD", ')
    assert error.field is None
    assert str(error).startswith("market.prices: Invalid JSON")


@pytest.mark.parametrize("value", [b"[1, 2]", b'"ETH/USD"', b"3000.5", b"null"])
def test_non_object_json(value: bytes) -> None:
    error = rejected("market.prices", value)
    assert str(error) == "market.prices: Input should be an object"


def test_tombstone() -> None:
    assert str(rejected("defi.protocols", None)) == "defi.protocols: no value (a tombstone)"


@pytest.mark.parametrize(
    ("topic_name", "changes", "field", "reason"),
    [
        ("market.prices", {"price": "3000.5"}, "price", "valid number"),
        ("market.prices", {"price": None}, "price", "valid number"),
        ("market.prices", {"price": -1.0}, "price", "greater than 0"),
        ("market.prices", {"price": 0.0}, "price", "greater than 0"),
        ("market.prices", {"volume": -0.5}, "volume", "greater than or equal to 0"),
        ("market.prices", {"price": ...}, "price", "Field required"),
        ("market.prices", {"ts": "yesterday"}, "ts", "datetime"),
        ("market.prices", {"foo": 1}, "foo", "Extra inputs are not permitted"),
        ("market.prices", {"symbol": "ETHUSD", "base": "ETHUSD"}, "symbol", "pattern"),
        ("market.analytics", {"ticks": 3.0}, "ticks", "valid integer"),
        ("market.analytics", {"sources": True}, "sources", "valid integer"),
        ("market.analytics", {"volatility": -0.1}, "volatility", "greater than or equal"),
        ("market.sentiment", {"score": 1.5}, "score", "less than or equal to 1"),
        ("defi.transactions", {"amount": -5.0}, "amount", "greater than or equal to 0"),
        ("defi.transactions", {"action": "steal"}, "action", "'deposit'"),
        ("defi.transactions", {"user_id": ""}, "user_id", "at least 1 character"),
        ("defi.tokens", {"decimals": 18.5}, "decimals", "valid integer"),
        ("risk.assessments", {"hhi": 1.2}, "hhi", "less than or equal to 1"),
        ("risk.alerts", {"severity": "info"}, "severity", "'warning' or 'critical'"),
        ("users.events", {"attributes": {"n": 1}}, "attributes.n", "valid string"),
        ("crosschain.arbitrage", {"buy_price": -2990.0}, "buy_price", "greater than 0"),
    ],
)
def test_bad_field_is_named(
    topic_name: str, changes: dict[str, Any], field: str, reason: str
) -> None:
    error = rejected(topic_name, variant(topic_name, **changes))
    assert error.field == field
    assert reason in error.reason
    assert str(error).startswith(f"{topic_name}: field '{field}': ")


@pytest.mark.parametrize(
    ("number", "literal"), [("nan", "NaN"), ("inf", "Infinity"), ("-inf", "-Infinity")]
)
def test_non_finite_price_is_rejected(number: str, literal: str) -> None:
    # Python's json writes these literals for float('nan') / float('inf'); they must not pass.
    value = json.dumps({**SAMPLES["market.prices"], "price": float(number)}).encode()
    assert literal.encode() in value
    error = rejected("market.prices", value)
    assert error.field == "price"
    assert "finite number" in str(error)


def test_non_finite_values_fail_in_python_too() -> None:
    with pytest.raises(ValidationError, match="finite number"):
        GasPrice(chain="ethereum", gas_usd=float("nan"), ts=datetime.now(UTC))


def test_symbol_must_match_base_and_quote() -> None:
    error = rejected("market.prices", variant("market.prices", base="BTC"))
    assert str(error) == "market.prices: symbol 'ETH/USD' does not match base/quote 'BTC/USD'"


def test_reserves_come_in_pairs() -> None:
    error = rejected("market.prices", variant("market.prices", reserve_quote=...))
    assert "reserve_base and reserve_quote" in str(error)


def test_collateral_needs_a_liquidation_threshold() -> None:
    payload = copy.deepcopy(SAMPLES["users.portfolios"])
    payload["positions"][0]["liquidation_threshold"] = None
    error = rejected("users.portfolios", raw(payload))
    assert error.field == "positions.0"
    assert "liquidation_threshold is required" in str(error)


def test_position_amount_is_non_negative() -> None:
    payload = copy.deepcopy(SAMPLES["users.portfolios"])
    payload["positions"][1]["amount"] = -1.0
    assert rejected("users.portfolios", raw(payload)).field == "positions.1.amount"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"health_factor": None}, "health_factor must be null exactly when debt_usd is 0"),
        ({"debt_usd": 0.0}, "health_factor must be null exactly when debt_usd is 0"),
    ],
)
def test_health_factor_is_null_exactly_without_debt(changes: dict[str, Any], fragment: str) -> None:
    assert fragment in str(rejected("risk.assessments", variant("risk.assessments", **changes)))
    no_debt = variant("risk.assessments", health_factor=None, debt_usd=0.0, ltv=0.0)
    assert decode("risk.assessments", no_debt).health_factor is None  # type: ignore[attr-defined]


def test_windows_and_expiry_are_ordered() -> None:
    early = variant("market.analytics", window_start=TS2, window_end=TS)
    assert "window_end is before window_start" in str(rejected("market.analytics", early))
    stale = variant("crosschain.arbitrage", detected_at=TS2, expires_at=TS)
    assert "expires_at is before detected_at" in str(rejected("crosschain.arbitrage", stale))


def test_several_problems_are_counted() -> None:
    error = rejected("market.prices", variant("market.prices", price=-1.0, volume=-1.0))
    assert str(error).endswith("(and 1 more)")
    assert [e["loc"] for e in error.errors] == [("price",), ("volume",)]


def test_messages_are_frozen() -> None:
    message = decode("market.prices", raw(SAMPLES["market.prices"]))
    with pytest.raises(ValidationError):
        message.price = 1.0  # type: ignore[misc]


# --- crosschain.events: a discriminated union --------------------------------------------------


def test_union_picks_the_variant_by_type() -> None:
    quote = decode("crosschain.events", raw(SAMPLES["crosschain.events"]))
    gas = decode("crosschain.events", raw(GAS))
    assert isinstance(quote, BridgeQuote) and quote.chain == "ethereum"
    assert isinstance(gas, GasPrice) and gas.chain == "arbitrum"
    assert topic_of(quote) == topic_of(gas) == "crosschain.events"
    assert encode(quote)[0] == b"ethereum"  # a quote is keyed by the chain it leaves
    assert encode(gas)[0] == b"arbitrum"
    assert json.loads(encode(gas)[1]) == GAS


def test_union_errors_name_the_variant_and_field() -> None:
    error = rejected("crosschain.events", raw({**GAS, "gas_usd": -1.0}))
    assert error.variant == "gas" and error.field == "gas_usd"
    assert str(error).startswith("crosschain.events (gas): field 'gas_usd': ")
    # A field of the other variant is unknown here, not silently dropped.
    assert rejected("crosschain.events", raw({**GAS, "from_chain": "x"})).field == "from_chain"


@pytest.mark.parametrize(
    "payload", [{"chain": "x", "gas_usd": 1.0, "ts": TS}, {**GAS, "type": "x"}]
)
def test_union_needs_a_known_type(payload: dict[str, Any]) -> None:
    error = rejected("crosschain.events", raw(payload))
    assert "'type'" in str(error)


# --- decode_batch ------------------------------------------------------------------------------


def test_decode_batch_keeps_order_and_reports_indices() -> None:
    good = raw(SAMPLES["market.prices"])
    other = variant("market.prices", price=3100.0)
    values = [good, b"not json", other, variant("market.prices", price=-1.0), None, good]
    assert gc.isenabled()
    messages, failures = decode_batch("market.prices", values)
    assert gc.isenabled()  # paused for the batch only
    assert [m.price for m in messages] == [3000.5, 3100.0, 3000.5]  # type: ignore[attr-defined]
    assert [index for index, _ in failures] == [1, 3, 4]
    assert failures[1][1].field == "price"
    assert "tombstone" in str(failures[2][1])
    assert decode_batch("market.prices", []) == ([], [])


def test_decode_batch_of_union() -> None:
    messages, failures = decode_batch(
        "crosschain.events", [raw(GAS), raw(SAMPLES["crosschain.events"])]
    )
    assert [type(m) for m in messages] == [GasPrice, BridgeQuote] and not failures


# --- misuse is a programming error, not bad data -----------------------------------------------


def test_unknown_and_dead_letter_topics_are_key_errors() -> None:
    with pytest.raises(KeyError, match=re.escape("'market.price' is not a catalog topic")):
        decode("market.price", b"{}")
    with pytest.raises(KeyError, match="no message model"):
        decode_batch("dlq.clickhouse-sink", [b"{}"])


def test_topic_of_rejects_foreign_models() -> None:
    class Other(BaseModel):
        x: int = 1

    with pytest.raises(TypeError, match="Other is not a catalog message model"):
        topic_of(Other())


# --- JSON Schema export ------------------------------------------------------------------------


def _properties(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a value may match: the model, or each variant of a union."""
    if "properties" in schema:
        return [schema]
    return [schema["$defs"][ref["$ref"].rsplit("/", 1)[1]] for ref in schema["oneOf"]]


def test_json_schemas_cover_every_topic() -> None:
    schemas = json_schemas()
    assert list(schemas) == CATALOG
    assert json.loads(json.dumps(schemas)) == schemas  # plain JSON, nothing Python-only
    for name, schema in schemas.items():
        assert schema["$id"] == f"urn:ys-platform:schema:{name}:v1"
        assert schema["title"] == f"{name} v1"
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        for shape in _properties(schema):
            assert shape["additionalProperties"] is False


@pytest.mark.parametrize("topic_name", CATALOG)
def test_samples_fit_their_schema(topic_name: str) -> None:
    # Without a JSON Schema validator at hand: every required field is present and no field is
    # unknown, for the sample and (on the union) the gas variant.
    schema = json_schemas()[topic_name]
    payloads = [SAMPLES[topic_name]] + ([GAS] if topic_name == "crosschain.events" else [])
    shapes = _properties(schema)
    for payload in payloads:
        assert any(
            set(shape["required"]) <= set(payload) <= set(shape["properties"]) for shape in shapes
        )


def test_union_schema_requires_the_tag() -> None:
    schema = json_schemas()["crosschain.events"]
    assert schema["discriminator"]["propertyName"] == "type"
    for shape in _properties(schema):
        assert shape["required"][0] == "type"


def test_write_json_schemas(tmp_path: Any) -> None:
    paths = write_json_schemas(tmp_path / "schemas")
    assert sorted(p.name for p in paths) == sorted(f"{name}.schema.json" for name in CATALOG)
    schemas = json_schemas()
    for path in paths:
        assert json.loads(path.read_text()) == schemas[path.name.removesuffix(".schema.json")]


def test_prices_and_quantities_are_bounded_so_the_windows_stay_finite():
    from ys_platform.catalog.codec import DecodeError, decode, encode
    from ys_platform.catalog.models import MAX_QUANTITY, MarketPrice
    from ys_platform.processing.windows import SlidingWindowState
    from ys_platform.processors.price_aggregation import ticks_of, to_message

    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    ticks = [
        MarketPrice(
            symbol="ETH/USD",
            base="ETH",
            quote="USD",
            price=MAX_QUANTITY if i % 3 else 1.0,
            volume=MAX_QUANTITY,
            source="s",
            chain="ethereum",
            venue="v",
            ts=start + timedelta(seconds=i),
        )
        for i in range(200)
    ]
    # At the bound the aggregates stay finite: the outputs are valid messages (a price of
    # 1e308, which the models took, made the time-weighted sum infinite and the output raise).
    windows, _ = SlidingWindowState().process(ticks_of(ticks))
    outputs = [to_message(w) for w in windows]
    assert outputs and all(m.twap <= MAX_QUANTITY for m in outputs)
    value = encode(ticks[1])[1].replace(b'"price":1e+30', b'"price":1e308')
    assert b"1e308" in value
    with pytest.raises(DecodeError, match="field 'price': Input should be less than or equal to"):
        decode("market.prices", value)
