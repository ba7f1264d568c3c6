"""One pydantic v2 model per catalog topic value: the JSON contract of every message on the wire.

Conventions shared by every model (enforced by :class:`Message`):

- Unknown fields, wrong types, NaN/Infinity and out-of-range numbers fail validation, so a
  processor dead-letters a bad message instead of computing on it. Prices, amounts, reserves and
  USD values are never negative.
- Timestamps are timezone-aware and normalised to UTC (offset 0; after decoding the tzinfo is
  pydantic's ``TzInfo(0)``, named "UTC") at millisecond precision (Kafka record timestamps are
  milliseconds). **Naive datetimes are rejected**: a producer on a host with a
  non-UTC clock would otherwise shift event time silently. They serialise as ISO-8601 UTC with
  milliseconds and a ``Z``: ``2026-01-02T03:04:05.678Z``.
- Rates: ``apy`` is a percentage (``4.2`` = 4.2 %), ``*_bps`` are basis points, scores and
  thresholds in ``[0, 1]``.
- Models are frozen; sequences are tuples (a list on the wire).

The JSON field names are a contract with the processors and sinks: rename nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "MODELS",
    "VALUE_TYPES",
    "ArbitrageOpportunity",
    "BridgeQuote",
    "CrosschainEvent",
    "CrosschainEventValue",
    "DefiProtocol",
    "DefiToken",
    "DefiTransaction",
    "GasPrice",
    "LiquidityPool",
    "MarketAnalytics",
    "MarketPrice",
    "MarketSentiment",
    "Message",
    "Position",
    "RiskAlert",
    "RiskAssessment",
    "SystemAlert",
    "SystemMetric",
    "UserEvent",
    "UserPortfolio",
    "YieldStrategy",
    "format_utc",
]


# --- shared field types ------------------------------------------------------------------------


_ZERO = timedelta(0)


def _utc_millis(value: datetime) -> datetime:
    # Truncate to the millisecond the wire carries so encode -> decode is an exact round trip.
    # The common case (already UTC, whole milliseconds) returns the value untouched: this runs
    # once per timestamp of every decoded message, and a replace() costs a third of the decode.
    if value.utcoffset() == _ZERO and not value.microsecond % 1000:
        return value
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_utc(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: the wire form of every timestamp."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcDatetime = Annotated[
    AwareDatetime,
    Field(description="ISO-8601 with an offset; written as UTC with milliseconds and a Z."),
    AfterValidator(_utc_millis),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
# Tickers as venues and oracles spell them: WETH, USDC.e, stETH, 1INCH.
Ticker = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
Symbol = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}/[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"),
    Field(description="A pair as BASE/QUOTE, e.g. ETH/USD."),
]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]

MAX_QUANTITY = 1e30
"""The largest price, amount, reserve or USD value a message may carry. Real ones stay far
below (the largest token supplies are ~1e18 units, USD values ~1e14), and the processors'
products and sums of two of them stay far from the double's overflow: a tick of 1e308 made
the window's time-weighted sum infinite, and the price aggregation died building its output."""
Price = Annotated[float, Field(gt=0, le=MAX_QUANTITY)]
"""A price, reserve or other quantity that must be positive (quote units, token units)."""
Quantity = Annotated[float, Field(ge=0, le=MAX_QUANTITY)]
"""An amount, volume, TVL or USD value (non-negative)."""
Count = Annotated[int, Field(le=2**63 - 1)]
"""A count: an Int64 column in ClickHouse, so larger is refused by every consumer alike."""
Unit = Annotated[float, Field(ge=0, le=1)]
Bps = Annotated[float, Field(ge=0, le=10_000)]
Labels = dict[str, str]


class Message(BaseModel):
    """Base of every topic value.

    ``EVENT_TIME_FIELD`` names the field holding the event time, which producers also put in the
    Kafka record timestamp (see :attr:`event_time`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    SCHEMA_VERSION: ClassVar[int] = 1
    EVENT_TIME_FIELD: ClassVar[str] = "ts"

    @property
    def event_time(self) -> datetime:
        """When the event happened (UTC)."""
        value: datetime = getattr(self, self.EVENT_TIME_FIELD)
        return value


def _fail(kind: str, text: str, **context: Any) -> PydanticCustomError:
    # A custom error keeps pydantic's "Value error, " prefix out of the DLQ reason.
    return PydanticCustomError(kind, text, context or None)


# --- defi.* ------------------------------------------------------------------------------------


class DefiProtocol(Message):
    """``defi.protocols``: latest metadata of a protocol (compacted, keyed by ``id``)."""

    EVENT_TIME_FIELD: ClassVar[str] = "updated_at"

    id: NonEmptyStr
    name: NonEmptyStr
    description: str | None = None
    category: NonEmptyStr
    chains: tuple[NonEmptyStr, ...] = ()
    tvl: Quantity = Field(description="Total value locked, USD.")
    apy: NonNegative | None = Field(default=None, description="Headline APY, percent.")
    risk_score: Unit | None = None
    updated_at: UtcDatetime


class DefiToken(Message):
    """``defi.tokens``: a token's metadata and USD price, keyed by contract ``address``."""

    EVENT_TIME_FIELD: ClassVar[str] = "updated_at"

    address: NonEmptyStr
    symbol: Ticker
    name: NonEmptyStr
    chain: NonEmptyStr
    decimals: int = Field(ge=0, le=255)
    price_usd: Quantity
    market_cap_usd: Quantity | None = None
    description: str | None = None
    updated_at: UtcDatetime


class DefiTransaction(Message):
    """``defi.transactions``: one user action on a protocol, keyed by ``user_id``."""

    tx_hash: NonEmptyStr
    user_id: NonEmptyStr
    protocol: NonEmptyStr
    chain: NonEmptyStr
    action: Literal["deposit", "withdraw", "borrow", "repay", "swap", "liquidation"]
    asset: Ticker
    amount: Quantity = Field(description="In units of the asset.")
    ts: UtcDatetime


class LiquidityPool(Message):
    """``defi.liquidity-pools``: a snapshot of an AMM pool, keyed by ``pool_id``."""

    pool_id: NonEmptyStr
    protocol: NonEmptyStr
    chain: NonEmptyStr
    token0: Ticker
    token1: Ticker
    reserve0: Quantity
    reserve1: Quantity
    fee_bps: Bps
    tvl_usd: Quantity
    ts: UtcDatetime


class YieldStrategy(Message):
    """``defi.yields``: a yield strategy's APY and TVL, keyed by ``strategy_id``."""

    strategy_id: NonEmptyStr
    protocol: NonEmptyStr
    chain: NonEmptyStr
    asset: Ticker
    apy: NonNegative = Field(description="Percent.")
    tvl_usd: Quantity
    ts: UtcDatetime


# --- market.* ----------------------------------------------------------------------------------


class MarketPrice(Message):
    """``market.prices``: one price tick from one source, keyed by ``symbol``.

    ``reserve_base``/``reserve_quote`` are an AMM pool's reserves (for price impact): both or
    neither.
    """

    symbol: Symbol
    base: Ticker
    quote: Ticker
    price: Price = Field(description="Quote units per base unit.")
    volume: Quantity | None = Field(default=None, description="Base units traded.")
    source: NonEmptyStr
    chain: NonEmptyStr
    venue: NonEmptyStr
    reserve_base: Price | None = None
    reserve_quote: Price | None = None
    liquidity_usd: Quantity | None = None
    ts: UtcDatetime

    @model_validator(mode="after")
    def _consistent(self) -> MarketPrice:
        pair = f"{self.base}/{self.quote}"
        if self.symbol != pair:
            raise _fail(
                "symbol_mismatch",
                "symbol '{symbol}' does not match base/quote '{pair}'",
                symbol=self.symbol,
                pair=pair,
            )
        if (self.reserve_base is None) != (self.reserve_quote is None):
            raise _fail("reserves_incomplete", "reserve_base and reserve_quote go together")
        return self


class MarketAnalytics(Message):
    """``market.analytics``: one window's aggregates for a symbol; event time is the window end."""

    EVENT_TIME_FIELD: ClassVar[str] = "window_end"

    symbol: Symbol
    window_start: UtcDatetime
    window_end: UtcDatetime
    twap: Positive
    vwap: Positive | None = Field(description="None when no tick carried volume.")
    volatility: NonNegative = Field(description="Std-dev of log returns over the window.")
    consolidated_price: Positive | None = Field(
        description="Outlier-filtered median across sources; None with too few sources."
    )
    sources: Count = Field(ge=0, description="Sources behind consolidated_price (0 when None).")
    ticks: Count = Field(ge=1)

    @model_validator(mode="after")
    def _window(self) -> MarketAnalytics:
        if self.window_end < self.window_start:
            raise _fail("window_order", "window_end is before window_start")
        return self


class MarketSentiment(Message):
    """``market.sentiment``: one scored social/news item, keyed by its ``source_id``."""

    source_id: NonEmptyStr
    source: NonEmptyStr
    symbol: NonEmptyStr | None = Field(default=None, description="The asset it is about, if any.")
    text: str
    score: float = Field(ge=-1, le=1, description="-1 bearish .. 1 bullish.")
    ts: UtcDatetime


# --- users.* -----------------------------------------------------------------------------------


class UserEvent(Message):
    """``users.events``: a user activity event, keyed by ``user_id``."""

    event_id: NonEmptyStr
    user_id: NonEmptyStr
    kind: NonEmptyStr
    attributes: Labels = Field(default_factory=dict)
    ts: UtcDatetime


class Position(BaseModel):
    """One position of a portfolio; collateral needs its ``liquidation_threshold``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    protocol: NonEmptyStr
    chain: NonEmptyStr
    asset: Ticker
    kind: Literal["collateral", "debt", "lp", "stake"]
    amount: Quantity = Field(description="In units of the asset.")
    liquidation_threshold: Unit | None = None

    @model_validator(mode="after")
    def _threshold(self) -> Position:
        if self.kind == "collateral" and self.liquidation_threshold is None:
            raise _fail(
                "threshold_missing", "liquidation_threshold is required for a collateral position"
            )
        return self


class UserPortfolio(Message):
    """``users.portfolios``: a full snapshot of a user's positions, keyed by ``user_id``."""

    user_id: NonEmptyStr
    positions: tuple[Position, ...]
    ts: UtcDatetime

    @field_validator("positions", mode="before")
    @classmethod
    def _positions_from_json_text(cls, value: Any) -> Any:
        # Debezium (CDC of the portfolios table) sends a JSONB column as a string holding the
        # JSON document. Parse it here with the same strict rules as the rest of the message;
        # Position instances then pass the field's own (strict) validation unchanged.
        if isinstance(value, str):
            return _POSITIONS_JSON.validate_json(value, strict=True)
        if isinstance(value, list):
            # A before-validator hands the field the JSON array as a Python list, which strict
            # tuple validation refuses; the elements are still validated strictly after this.
            return tuple(value)
        return value


# Built once when the module loads (no I/O): the validator of a JSON-text positions document.
_POSITIONS_JSON: TypeAdapter[tuple[Position, ...]] = TypeAdapter(tuple[Position, ...])


# --- system.* ----------------------------------------------------------------------------------


class SystemAlert(Message):
    """``system.alerts``: an operational notification, keyed by ``alert_id``."""

    alert_id: NonEmptyStr
    source: NonEmptyStr
    severity: Literal["info", "warning", "critical"]
    message: str
    labels: Labels = Field(default_factory=dict)
    ts: UtcDatetime


class SystemMetric(Message):
    """``system.metrics``: one sample of an application metric, keyed by ``name``."""

    name: NonEmptyStr
    value: float
    labels: Labels = Field(default_factory=dict)
    ts: UtcDatetime


# --- risk.* ------------------------------------------------------------------------------------


class RiskAssessment(Message):
    """``risk.assessments``: a user's risk figures; ``health_factor`` is null iff debt is 0."""

    EVENT_TIME_FIELD: ClassVar[str] = "assessed_at"

    user_id: NonEmptyStr
    health_factor: NonNegative | None
    ltv: NonNegative = Field(description="debt_usd / collateral_usd; above 1 when under water.")
    collateral_usd: NonNegative
    debt_usd: NonNegative
    risk_score: Unit
    hhi: Unit = Field(description="Herfindahl-Hirschman concentration index.")
    var_95_1d_usd: NonNegative = Field(description="Parametric 95 % one-day value at risk.")
    assessed_at: UtcDatetime

    @model_validator(mode="after")
    def _health_factor(self) -> RiskAssessment:
        if (self.health_factor is None) != (self.debt_usd == 0):
            raise _fail(
                "health_factor_inconsistent",
                "health_factor must be null exactly when debt_usd is 0",
            )
        return self


class RiskAlert(Message):
    """``risk.alerts``: a risk threshold crossed by a user, keyed by ``user_id``."""

    alert_id: NonEmptyStr
    user_id: NonEmptyStr
    kind: Literal["liquidation_risk", "volatility", "concentration"]
    severity: Literal["warning", "critical"]
    message: str
    value: float
    threshold: float
    ts: UtcDatetime


# --- crosschain.* ------------------------------------------------------------------------------


def _require_type(schema: dict[str, Any]) -> None:
    required = schema.setdefault("required", [])
    if "type" in schema.get("properties", {}) and "type" not in required:
        required.insert(0, "type")


class CrosschainEvent(Message):
    """``crosschain.events``: a tagged union on ``type`` (:class:`BridgeQuote`, :class:`GasPrice`).

    The topic is keyed by ``chain``; every variant exposes ``chain`` (a bridge quote's is its
    ``from_chain``), so ``key_of`` reads the same attribute for all of them.
    """

    # ``type`` has a default for convenience in Python, but the wire always carries it (it picks
    # the variant), so the published schema requires it.
    model_config = ConfigDict(json_schema_extra=_require_type)


class BridgeQuote(CrosschainEvent):
    """The cost and latency of moving ``asset`` from ``from_chain`` to ``to_chain``."""

    type: Literal["bridge_quote"] = "bridge_quote"
    from_chain: NonEmptyStr
    to_chain: NonEmptyStr
    asset: Ticker
    fee_usd: Quantity
    fee_bps: Bps
    latency_s: NonNegative
    ts: UtcDatetime

    @property
    def chain(self) -> str:
        """The source chain: a quote is keyed (and ordered) with the chain it leaves."""
        return self.from_chain


class GasPrice(CrosschainEvent):
    """The USD cost of a typical transaction on ``chain``."""

    type: Literal["gas"] = "gas"
    chain: NonEmptyStr
    gas_usd: Quantity
    ts: UtcDatetime


CrosschainEventValue = Annotated[BridgeQuote | GasPrice, Field(discriminator="type")]


class ArbitrageOpportunity(Message):
    """``crosschain.arbitrage``: buy ``symbol`` on one chain/venue, sell on another."""

    EVENT_TIME_FIELD: ClassVar[str] = "detected_at"

    id: NonEmptyStr
    symbol: Symbol
    buy_chain: NonEmptyStr
    buy_venue: NonEmptyStr
    buy_price: Positive
    sell_chain: NonEmptyStr
    sell_venue: NonEmptyStr
    sell_price: Positive
    spread_bps: NonNegative = Field(description="Gross spread, before costs.")
    trade_size: Positive = Field(description="Base units.")
    expected_profit_usd: float = Field(description="Net of bridge fee, gas and price impact.")
    score: Unit
    detected_at: UtcDatetime
    expires_at: UtcDatetime

    @model_validator(mode="after")
    def _expiry(self) -> ArbitrageOpportunity:
        if self.expires_at < self.detected_at:
            raise _fail("expiry_order", "expires_at is before detected_at")
        return self


# Topic name -> model class. ``crosschain.events`` maps to the union's base class (what
# ``isinstance`` checks want); VALUE_TYPES holds what each topic's value validates as.
MODELS: Mapping[str, type[Message]] = MappingProxyType(
    {
        "defi.protocols": DefiProtocol,
        "defi.tokens": DefiToken,
        "defi.transactions": DefiTransaction,
        "defi.liquidity-pools": LiquidityPool,
        "defi.yields": YieldStrategy,
        "market.prices": MarketPrice,
        "market.analytics": MarketAnalytics,
        "market.sentiment": MarketSentiment,
        "users.events": UserEvent,
        "users.portfolios": UserPortfolio,
        "system.alerts": SystemAlert,
        "system.metrics": SystemMetric,
        "risk.assessments": RiskAssessment,
        "risk.alerts": RiskAlert,
        "crosschain.events": CrosschainEvent,
        "crosschain.arbitrage": ArbitrageOpportunity,
    }
)

VALUE_TYPES: Mapping[str, Any] = MappingProxyType(
    {**MODELS, "crosschain.events": CrosschainEventValue}
)
