"""Portfolio risk: Aave health factor, LTV, concentration (HHI), parametric VaR, a risk score,
and alerts with hysteresis.

Units: amounts in token units, prices and values in USD, liquidation thresholds and volatilities
as fractions (0.825, not 8250 bps; 0.04 = 4 % daily).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Z_95_ONE_SIDED = 1.645
"""Standard normal quantile of the 95 % one-sided VaR (Φ⁻¹(0.95) = 1.64485…, as conventionally
rounded)."""

DAY_MS = 86_400_000


def health_factor(
    collateral_amounts: ArrayLike,
    collateral_prices_usd: ArrayLike,
    liquidation_thresholds: ArrayLike,
    debt_amounts: ArrayLike,
    debt_prices_usd: ArrayLike,
) -> float | None:
    """Aave health factor: Σ collateral·price·liquidation threshold / Σ debt·price.

    Below 1 the position is liquidatable. None without debt (Aave reports "infinite": there is
    nothing to liquidate).
    """
    debt_usd = float(np.dot(_as_array(debt_amounts), _as_array(debt_prices_usd)))
    if debt_usd <= 0:
        return None
    lt = _as_array(liquidation_thresholds)
    if np.any((lt < 0) | (lt > 1)):
        raise ValueError("liquidation thresholds are fractions in [0, 1] (Aave's bps / 10_000)")
    weighted = float(np.sum(_as_array(collateral_amounts) * _as_array(collateral_prices_usd) * lt))
    return weighted / debt_usd


def ltv(debt_usd: float, collateral_usd: float) -> float:
    """Loan-to-value: debt_usd / collateral_usd.

    0.0 without debt (even without collateral: nothing is borrowed). ``math.inf`` for debt with
    no collateral: unbounded leverage, which sorts and thresholds as the worst case (JSON
    encoders map it to null; pydantic does so by default).
    """
    if debt_usd <= 0:
        return 0.0
    if collateral_usd <= 0:
        return math.inf
    return debt_usd / collateral_usd


def hhi(values_usd: ArrayLike) -> float:
    """Herfindahl–Hirschman index of position values: Σ share², in (0, 1].

    Shares are of gross exposure (absolute values), so a debt position concentrates like a
    collateral one. 1/HHI is the effective number of equal positions: 1.0 = everything in one,
    1/n = n equal positions. 0.0 for an empty or all-zero portfolio (nothing to concentrate).
    """
    gross = np.abs(_as_array(values_usd))
    total = float(gross.sum())
    if total <= 0:
        return 0.0
    shares = gross / total
    return float(np.sum(shares * shares))


def hhi_by(values_usd: ArrayLike, groups: Sequence[Hashable]) -> float:
    """HHI after summing gross position values per group (protocol, chain, asset)."""
    gross = np.abs(_as_array(values_usd))
    if gross.size != len(groups):
        raise ValueError("one group per value")
    totals: dict[Hashable, float] = {}
    for g, v in zip(groups, gross.tolist(), strict=True):
        totals[g] = totals.get(g, 0.0) + v
    return hhi(list(totals.values()))


def scale_volatility(sigma: float, from_horizon_ms: float, to_horizon_ms: float) -> float:
    """Square-root-of-time scaling of a volatility (i.i.d. returns), e.g. per-tick → 1 day."""
    if from_horizon_ms <= 0 or to_horizon_ms <= 0:
        raise ValueError("horizons must be positive")
    return sigma * math.sqrt(to_horizon_ms / from_horizon_ms)


def volatility_1d_from_window(tick_volatility: float, ticks: int, window_ms: int) -> float:
    """Daily volatility from a window's per-tick volatility (``market.analytics``).

    The window's returns are (ticks − 1) returns over about ``window_ms``, so one return spans
    ``window_ms / (ticks − 1)`` on average; scale by √(day / that). 0.0 with fewer than 2 ticks.
    """
    if ticks < 2:
        return 0.0
    return scale_volatility(tick_volatility, window_ms / (ticks - 1), DAY_MS)


def var_95_1d_usd(
    exposures_usd: ArrayLike,
    volatilities_1d: ArrayLike,
    correlation: ArrayLike | None = None,
) -> float:
    """Parametric (delta-normal) one-day 95 % value at risk, in USD (a positive loss).

    ``exposures_usd`` are signed: collateral/holdings positive (long), debt negative (short the
    borrowed asset). With a ``correlation`` matrix: 1.645·√(eᵀ·Σ·e), Σ = σσᵀ∘ρ. Without one:
    1.645·Σ|eᵢ|·σᵢ, the worst case over all correlation matrices (triangle inequality): perfect
    correlation for a long-only book, and no credit for a hedge whose correlation is not known.
    Conservative by construction, which is what a risk alert wants when correlations are missing.
    """
    e = _as_array(exposures_usd)
    sigma = _as_array(volatilities_1d)
    if e.shape != sigma.shape:
        raise ValueError("one volatility per exposure")
    if np.any(sigma < 0):
        raise ValueError("volatilities must be >= 0")
    if correlation is None:
        return Z_95_ONE_SIDED * float(np.sum(np.abs(e) * sigma))
    rho = np.asarray(correlation, dtype=np.float64)
    if rho.shape != (e.size, e.size):
        raise ValueError("correlation must be an n×n matrix")
    risk = e * sigma
    variance = float(risk @ rho @ risk)
    return Z_95_ONE_SIDED * math.sqrt(max(variance, 0.0))  # max: rounding of a PSD form


# Risk score -------------------------------------------------------------------------------------

HF_SAFE = 2.0
"""HF at or above which liquidation contributes nothing to the risk score: a 50 % collateral
drawdown still leaves the position solvent."""

SIGMA_1D_MAX = 0.10
"""Daily volatility that saturates the volatility component: 10 %/day is extreme even for
crypto (majors run 2–5 %)."""

CONCENTRATION_WEIGHT = 0.3
VOLATILITY_WEIGHT = 0.5
"""How much of the remaining (non-liquidation) risk concentration and volatility can add: a
fully concentrated, extremely volatile portfolio without debt scores 1 − 0.7·0.5 = 0.65, below
any position that is at the point of liquidation (1.0)."""


def liquidation_component(hf: float | None, hf_safe: float = HF_SAFE) -> float:
    """0 at HF ≥ ``hf_safe`` (or no debt), 1 at HF ≤ 1, linear between."""
    if hf is None:
        return 0.0
    return float(min(1.0, max(0.0, (hf_safe - hf) / (hf_safe - 1.0))))


def risk_score(
    hf: float | None,
    concentration_hhi: float,
    volatility_1d: float,
    sigma_1d_max: float = SIGMA_1D_MAX,
) -> float:
    """Position risk in [0, 1]: a noisy-OR of liquidation, concentration and volatility.

    score = 1 − (1 − L)·(1 − 0.3·C)·(1 − 0.5·V), with L = :func:`liquidation_component`,
    C = HHI ∈ [0, 1], V = min(1, σ_1d/σ_max). Monotone: non-increasing in HF, non-decreasing in
    HHI and volatility. A liquidatable position (HF ≤ 1) scores 1 whatever else holds; no debt,
    full diversification and no volatility score 0.
    """
    liq = liquidation_component(hf)
    conc = min(1.0, max(0.0, concentration_hhi))
    vol = min(1.0, max(0.0, volatility_1d / sigma_1d_max))
    return 1.0 - (1.0 - liq) * (1.0 - CONCENTRATION_WEIGHT * conc) * (1.0 - VOLATILITY_WEIGHT * vol)


@dataclass(frozen=True, slots=True)
class Position:
    """One position of a portfolio, valued."""

    asset: str
    protocol: str
    chain: str
    amount: float
    price_usd: float
    is_debt: bool = False
    liquidation_threshold: float = 0.0
    """For collateral: the asset's liquidation threshold (0 = not usable as collateral)."""
    volatility_1d: float = 0.0


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    """The figures of one portfolio (one ``risk.assessments`` record, minus identity)."""

    collateral_usd: float
    debt_usd: float
    health_factor: float | None
    ltv: float
    hhi_assets: float
    hhi_protocols: float
    hhi_chains: float
    volatility_1d: float
    """Gross-exposure-weighted mean of the assets' daily volatilities."""
    var_95_1d_usd: float
    risk_score: float


def assess_positions(positions: Sequence[Position]) -> RiskAssessment:
    """All risk figures of a portfolio from its valued positions."""
    value = np.array([p.amount * p.price_usd for p in positions], dtype=np.float64)
    is_debt = np.array([p.is_debt for p in positions], dtype=bool)
    lt = np.array([p.liquidation_threshold for p in positions], dtype=np.float64)
    sigma = np.array([p.volatility_1d for p in positions], dtype=np.float64)
    collateral_usd = float(value[~is_debt].sum())
    debt_usd = float(value[is_debt].sum())
    hf = (
        health_factor(
            value[~is_debt],
            np.ones(int((~is_debt).sum())),
            lt[~is_debt],
            value[is_debt],
            np.ones(int(is_debt.sum())),
        )
        if positions
        else None
    )
    gross = np.abs(value)
    conc = hhi_by(gross, [p.asset for p in positions])
    vol = float(np.dot(gross, sigma) / gross.sum()) if gross.sum() > 0 else 0.0
    signed = np.where(is_debt, -value, value)
    return RiskAssessment(
        collateral_usd=collateral_usd,
        debt_usd=debt_usd,
        health_factor=hf,
        ltv=ltv(debt_usd, collateral_usd),
        hhi_assets=conc,
        hhi_protocols=hhi_by(gross, [p.protocol for p in positions]),
        hhi_chains=hhi_by(gross, [p.chain for p in positions]),
        volatility_1d=vol,
        var_95_1d_usd=var_95_1d_usd(signed, sigma),
        risk_score=risk_score(hf, conc, vol),
    )


# Alerts with hysteresis --------------------------------------------------------------------------


class AlertLevel(StrEnum):
    """Severity of an alert condition; ``OK`` = no alert."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class HysteresisBands:
    """Thresholds of one alert kind, for a metric where ``higher_is_worse`` (or lower is).

    Stated for "lower is worse" (health factor): enter WARNING when value < ``warning``, enter
    CRITICAL when value < ``critical``; leave CRITICAL for WARNING only when value >
    ``critical_clear``, leave any alert for OK only when value > ``clear``. The gaps
    (``warning``→``clear``, ``critical``→``critical_clear``) are the hysteresis: a value
    oscillating inside a gap changes nothing. For "higher is worse" every comparison flips.
    """

    warning: float
    critical: float
    clear: float
    critical_clear: float
    higher_is_worse: bool = False

    def __post_init__(self) -> None:
        s = -1.0 if self.higher_is_worse else 1.0  # map to the "lower is worse" orientation
        ok = (
            s * self.critical <= s * self.critical_clear <= s * self.clear
            and s * self.critical <= s * self.warning <= s * self.clear
        )
        if not ok:
            raise ValueError(f"inconsistent hysteresis bands: {self}")

    def next_level(self, level: AlertLevel, value: float | None) -> AlertLevel:
        """The level after observing ``value`` (None = metric undefined, e.g. HF without debt,
        which clears: there is nothing at risk)."""
        if value is None or math.isnan(value):
            return AlertLevel.OK
        v = -value if self.higher_is_worse else value
        s = -1.0 if self.higher_is_worse else 1.0
        critical, critical_clear = s * self.critical, s * self.critical_clear
        warning, clear = s * self.warning, s * self.clear
        if v < critical:
            return AlertLevel.CRITICAL
        if level is AlertLevel.CRITICAL:
            if v > clear:
                return AlertLevel.OK
            return AlertLevel.WARNING if v > critical_clear else AlertLevel.CRITICAL
        if level is AlertLevel.WARNING:
            return AlertLevel.OK if v > clear else AlertLevel.WARNING
        return AlertLevel.WARNING if v < warning else AlertLevel.OK


LIQUIDATION_BANDS = HysteresisBands(warning=1.2, critical=1.05, clear=1.3, critical_clear=1.1)
"""Health factor: warn under 1.2, critical under 1.05 (5 % from liquidation), all clear over 1.3;
critical steps down to warning over 1.1."""

VOLATILITY_BANDS = HysteresisBands(
    warning=0.05, critical=0.10, clear=0.04, critical_clear=0.08, higher_is_worse=True
)
"""Daily volatility: warn over 5 %/day (the top of the usual range of crypto majors), critical over
10 %/day; clear under 4 %, critical steps down under 8 %."""

CONCENTRATION_BANDS = HysteresisBands(
    warning=0.5, critical=0.8, clear=0.45, critical_clear=0.75, higher_is_worse=True
)
"""HHI: warn when the portfolio is worth fewer than 2 equal positions (HHI > 0.5), critical when
one position is ~90 % of it (0.9² + 0.1² = 0.82 > 0.8)."""


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """An alert state change: what a ``risk.alerts`` record reports."""

    key: Hashable
    kind: str
    previous: AlertLevel
    level: AlertLevel
    value: float | None


class AlertState:
    """Alert levels per (entity, kind); reports only transitions, so alerts do not flap."""

    def __init__(self, bands: dict[str, HysteresisBands] | None = None) -> None:
        self.bands = bands or {
            "liquidation_risk": LIQUIDATION_BANDS,
            "volatility": VOLATILITY_BANDS,
            "concentration": CONCENTRATION_BANDS,
        }
        self._levels: dict[tuple[str, str], AlertLevel] = {}

    def level(self, key: str, kind: str) -> AlertLevel:
        """The current level of ``kind`` for ``key`` (OK if never alerted)."""
        return self._levels.get((key, kind), AlertLevel.OK)

    def update(self, key: str, kind: str, value: float | None) -> AlertTransition | None:
        """Observe a value; returns the transition if the level changed, else None."""
        previous = self.level(key, kind)
        level = self.bands[kind].next_level(previous, value)
        if level is previous:
            return None
        if level is AlertLevel.OK:
            self._levels.pop((key, kind), None)  # keep only alerting entities in the state
        else:
            self._levels[(key, kind)] = level
        return AlertTransition(key, kind, previous, level, value)

    def update_many(
        self, observations: Iterable[tuple[str, str, float | None]]
    ) -> list[AlertTransition]:
        """:meth:`update` for each (key, kind, value), returning the transitions in order."""
        out = []
        for key, kind, value in observations:
            transition = self.update(key, kind, value)
            if transition is not None:
                out.append(transition)
        return out

    def to_state(self) -> list[list[Any]]:
        """JSON-able snapshot: [key, kind, level] for every entity not at OK."""
        return [[k, kind, lvl.value] for (k, kind), lvl in sorted(self._levels.items())]

    @classmethod
    def from_state(
        cls, state: Iterable[Sequence[Any]], bands: dict[str, HysteresisBands] | None = None
    ) -> AlertState:
        """Rebuild from :meth:`to_state` output."""
        self = cls(bands)
        for key, kind, level in state:
            self._levels[(key, kind)] = AlertLevel(level)
        return self


def _as_array(x: ArrayLike) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, dtype=np.float64))
