"""Pure processing logic of the streaming processors: no Kafka, no Dagster, no I/O.

* ``prices``: reference TWAP, VWAP, volatility and Chainlink-style consolidation of one symbol.
* ``windows``: the vectorised one-minute sliding windows of many symbols, streaming
  (``SlidingWindowState``) and backfill (``compute_windows``) through one kernel.
* ``risk``: health factor, LTV, HHI, VaR, risk score, alerts with hysteresis.
* ``amm``: constant-product swaps and optimal arbitrage sizes.
* ``arbitrage``: spreads, sized opportunities after fees/bridge/gas, scoring, de-duplication.

Times are epoch milliseconds (int64) throughout.
"""

from ys_platform.processing.amm import (
    get_amount_in,
    get_amount_out,
    optimal_base_in_against_price,
    optimal_quote_in_against_price,
    optimal_two_pool_quote_in,
    spot_price,
    two_pool_round_trip,
)
from ys_platform.processing.arbitrage import (
    ArbitrageOpportunity,
    BridgeCost,
    OpportunityTracker,
    VenueQuote,
    evaluate_pair,
    expected_profit_usd,
    find_opportunities,
    liquidity_adjusted_score,
    spread_bps,
)
from ys_platform.processing.prices import (
    ConsolidatedPrice,
    consolidated_price,
    log_return_volatility,
    median_without_outliers,
    twap,
    vwap,
)
from ys_platform.processing.risk import (
    AlertLevel,
    AlertState,
    AlertTransition,
    HysteresisBands,
    Position,
    RiskAssessment,
    assess_positions,
    health_factor,
    hhi,
    hhi_by,
    ltv,
    risk_score,
    scale_volatility,
    var_95_1d_usd,
    volatility_1d_from_window,
)
from ys_platform.processing.windows import (
    IngestResult,
    SlidingWindowState,
    TickBatch,
    WindowAnalytics,
    WindowConfig,
    compute_windows,
)

__all__ = [
    "AlertLevel",
    "AlertState",
    "AlertTransition",
    "ArbitrageOpportunity",
    "BridgeCost",
    "ConsolidatedPrice",
    "HysteresisBands",
    "IngestResult",
    "OpportunityTracker",
    "Position",
    "RiskAssessment",
    "SlidingWindowState",
    "TickBatch",
    "VenueQuote",
    "WindowAnalytics",
    "WindowConfig",
    "assess_positions",
    "compute_windows",
    "consolidated_price",
    "evaluate_pair",
    "expected_profit_usd",
    "find_opportunities",
    "get_amount_in",
    "get_amount_out",
    "health_factor",
    "hhi",
    "hhi_by",
    "liquidity_adjusted_score",
    "log_return_volatility",
    "ltv",
    "median_without_outliers",
    "optimal_base_in_against_price",
    "optimal_quote_in_against_price",
    "optimal_two_pool_quote_in",
    "risk_score",
    "scale_volatility",
    "spot_price",
    "spread_bps",
    "twap",
    "two_pool_round_trip",
    "var_95_1d_usd",
    "volatility_1d_from_window",
    "vwap",
]
