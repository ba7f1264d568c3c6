"""Price analytics of one symbol over one window: TWAP, VWAP, volatility, consolidation.

These are the *reference* definitions, written for clarity on one symbol's ticks. The streaming
and backfill paths (``windows.py``) compute the same quantities for many symbols and window ends
at once with a vectorised kernel; the unit tests hold the two implementations to agree.

Conventions (the contract of ``market.analytics``):

* Times are epoch milliseconds (int64).
* A window ending at ``window_end_ms`` is the half-open interval
  ``(window_end_ms - window_ms, window_end_ms]``: a tick exactly at the window start belongs to
  the previous window (it is this window's *prior* tick, see :func:`twap`), a tick exactly at the
  window end belongs to this one.
* Event-time order is ``(ts_ms, input position)``: ticks with equal timestamps keep the order in
  which they were given (for a Kafka partition, log order), so the last one given is the latest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

WINDOW_MS = 60_000
"""The analytics window: one minute of event time (the seed's "1-minute sliding window")."""

DEFAULT_MAX_STALENESS_MS = 30_000
"""A source whose latest price is older than this at the window end is not consolidated: half the
window, so a fresh source has ticked at least once in the most recent half of the window."""

DEFAULT_MAX_DEVIATION = 0.02
"""Sources more than 2 % away from the median of all fresh sources are outliers. Liquid majors
agree across venues to a few basis points; 2 % is far outside normal dispersion yet well inside
the moves of a broken or manipulated feed."""


DEFAULT_MAX_CARRY_MS = 300_000
"""How old the prior tick may be and still hold into a window: 5 minutes. A symbol no source
ticked for longer has no current price to carry; bounding the carry also bounds how much input a
restarted processor replays to rebuild its state exactly."""


def event_time_order(ts_ms: ArrayLike) -> np.ndarray:
    """Indices putting ticks in event-time order (timestamp, then input position)."""
    return np.argsort(np.asarray(ts_ms, dtype=np.int64), kind="stable")


def twap(
    ts_ms: ArrayLike,
    prices: ArrayLike,
    window_end_ms: int,
    window_ms: int = WINDOW_MS,
    max_carry_ms: int = DEFAULT_MAX_CARRY_MS,
) -> float | None:
    """Arithmetic time-weighted average price over ``(window_end_ms - window_ms, window_end_ms]``.

    ``ts_ms``/``prices`` are all known ticks of one symbol (any source, any order; ticks after the
    window are ignored). Each price holds from its tick until the next tick in event-time order.
    The last tick at or before the window start (the *prior* tick) holds from the window start
    until the first tick inside, if it is less than ``max_carry_ms`` older than the window
    start; without one, the window starts at its first tick. The last tick inside holds until
    the window end, so a tick exactly at the window end holds for zero time (it still counts as
    a tick of the window). Of ticks with equal timestamps only the last given holds (the others
    hold for zero time).

    Returns None when no tick falls inside the window. When the covered time is zero (the only
    ticks inside are at the window end and there is no prior tick) the TWAP is the price of the
    last such tick: the limit of the time-weighted mean over a vanishing interval.
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    px = np.asarray(prices, dtype=np.float64)
    order = event_time_order(ts)
    ts, px = ts[order], px[order]
    window_start_ms = window_end_ms - window_ms
    lo = int(np.searchsorted(ts, window_start_ms, side="right"))  # first tick > start
    hi = int(np.searchsorted(ts, window_end_ms, side="right"))  # first tick > end
    if hi == lo:
        return None
    weighted = 0.0
    for i in range(lo, hi):
        holds_until = int(ts[i + 1]) if i + 1 < hi else window_end_ms
        weighted += float(px[i]) * (holds_until - int(ts[i]))
    covered_ms = window_end_ms - int(ts[lo])
    has_prior = lo > 0 and int(ts[lo - 1]) > window_start_ms - max_carry_ms
    if has_prior:  # the prior tick holds from the window start to the first tick inside
        weighted += float(px[lo - 1]) * (int(ts[lo]) - window_start_ms)
        covered_ms = window_ms
    if covered_ms == 0:
        return float(px[hi - 1])
    return weighted / covered_ms


def vwap(prices: ArrayLike, volumes: ArrayLike) -> float | None:
    """Σ price·volume / Σ volume over the ticks of a window that carry a volume.

    A tick "carries a volume" when its volume is a positive number; NaN means "no volume" (price
    feeds such as oracles report none). None when no tick of the window carries a volume.
    """
    px = np.asarray(prices, dtype=np.float64)
    vol = np.asarray(volumes, dtype=np.float64)
    with_volume = vol > 0  # NaN compares False: ticks without volume drop out
    if not with_volume.any():
        return None
    return float(np.sum(px[with_volume] * vol[with_volume]) / np.sum(vol[with_volume]))


def log_return_volatility(prices: ArrayLike) -> float:
    """Sample standard deviation (ddof=1) of log returns between consecutive ticks.

    ``prices`` are the ticks inside one window in event-time order (all sources). The figure is
    per tick-to-tick return, not annualised: the tick rate of a symbol varies, and a consumer
    that needs a horizon scales it (see ``risk.scale_volatility``). ddof=1 because the window's
    returns are a sample of the process, not its population. Fewer than 2 returns (fewer than 3
    ticks) give 0.0: a single return has no dispersion estimate, and 0.0 keeps the field numeric
    for every emitted window.
    """
    log_prices = np.log(np.asarray(prices, dtype=np.float64))
    returns = np.diff(log_prices)
    if returns.size < 2:
        return 0.0
    return float(np.std(returns, ddof=1))


@dataclass(frozen=True, slots=True)
class ConsolidatedPrice:
    """A Chainlink-style consolidated price and how many sources agreed on it."""

    price: float
    sources: int


def median_without_outliers(
    prices: ArrayLike, max_deviation: float = DEFAULT_MAX_DEVIATION
) -> ConsolidatedPrice | None:
    """Median of ``prices`` after dropping values more than ``max_deviation`` from their median.

    Two passes: the median of all values, then the median of the values within
    ``|p - median| <= max_deviation * median``. None when there are no values, or when every
    value is an outlier (possible with two disagreeing sources: neither can be trusted, so no
    consensus price is published).
    """
    px = np.sort(np.asarray(prices, dtype=np.float64))
    if px.size == 0:
        return None
    first_median = _sorted_median(px)
    kept = px[np.abs(px - first_median) <= max_deviation * first_median]
    if kept.size == 0:
        return None
    return ConsolidatedPrice(price=_sorted_median(kept), sources=int(kept.size))


def consolidated_price(
    sources: ArrayLike,
    ts_ms: ArrayLike,
    prices: ArrayLike,
    as_of_ms: int,
    max_staleness_ms: int = DEFAULT_MAX_STALENESS_MS,
    max_deviation: float = DEFAULT_MAX_DEVIATION,
) -> ConsolidatedPrice | None:
    """Consolidated price of one symbol at ``as_of_ms`` (a window end), Chainlink style.

    Each source contributes its latest tick at or before ``as_of_ms`` (event-time order, so of
    equal timestamps the last given), if that tick is fresh: ``as_of_ms - ts <= max_staleness_ms``.
    The result is :func:`median_without_outliers` of those prices. None if no source is fresh.
    """
    src = np.asarray(sources)
    ts = np.asarray(ts_ms, dtype=np.int64)
    px = np.asarray(prices, dtype=np.float64)
    latest: dict[object, tuple[int, float]] = {}
    for i in event_time_order(ts):
        if ts[i] <= as_of_ms:
            latest[src[i].item()] = (int(ts[i]), float(px[i]))
    fresh = [p for t, p in latest.values() if as_of_ms - t <= max_staleness_ms]
    return median_without_outliers(fresh, max_deviation)


def _sorted_median(sorted_values: np.ndarray) -> float:
    """Median of an ascending array: the middle value, or the mean of the two middle values."""
    n = sorted_values.size
    return float((sorted_values[(n - 1) // 2] + sorted_values[n // 2]) / 2)
