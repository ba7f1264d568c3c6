"""Risk figures against hand-computed vectors; alert hysteresis."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ys_platform.processing.risk import (
    LIQUIDATION_BANDS,
    AlertLevel,
    AlertState,
    HysteresisBands,
    Position,
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


def test_health_factor_and_ltv() -> None:
    # Collateral: 10 ETH @ 2000 × LT 0.825 = 16_500 ; 5000 USDC @ 1 × LT 0.87 = 4_350 → 20_850
    # Debt: 12_000 USDC @ 1 + 0.1 WBTC @ 30_000 = 15_000 → HF = 20_850 / 15_000 = 1.39
    hf = health_factor([10, 5_000], [2_000, 1], [0.825, 0.87], [12_000, 0.1], [1, 30_000])
    assert hf == pytest.approx(1.39, rel=1e-15)
    # LTV = 15_000 / (20_000 + 5_000) = 0.6
    assert ltv(15_000, 25_000) == 0.6


def test_health_factor_and_ltv_edges() -> None:
    assert health_factor([10], [2_000], [0.8], [], []) is None  # no debt: nothing to liquidate
    assert health_factor([], [], [], [100], [1]) == 0.0  # debt without collateral
    with pytest.raises(ValueError):
        health_factor([1], [1], [8250], [1], [1])  # bps instead of a fraction
    assert ltv(0, 0) == 0.0
    assert ltv(0, 1_000) == 0.0
    assert ltv(100, 0) == math.inf


def test_hhi() -> None:
    assert hhi([50, 30, 20]) == pytest.approx(0.25 + 0.09 + 0.04)  # 0.38
    assert hhi([100]) == 1.0
    assert hhi([25, 25, 25, 25]) == 0.25  # four equal positions: 1/4
    assert hhi([]) == 0.0
    assert hhi([60, -40]) == pytest.approx(0.36 + 0.16)  # gross: debt concentrates too
    # Per protocol: aave 50 + 30 = 80, compound 20 → 0.8² + 0.2² = 0.68
    assert hhi_by([50, 30, 20], ["aave", "aave", "compound"]) == pytest.approx(0.68)


def test_var_95_1d() -> None:
    e, s = [10_000, 5_000], [0.04, 0.02]  # per-asset 1-day risk: 400 and 100 USD
    assert var_95_1d_usd(e, s) == pytest.approx(1.645 * 500)  # worst case: 822.5
    assert var_95_1d_usd(e, s, np.ones((2, 2))) == pytest.approx(822.5)  # perfect correlation
    # Independent: √(400² + 100²) = √170_000 = 412.31…
    assert var_95_1d_usd(e, s, np.eye(2)) == pytest.approx(1.645 * math.sqrt(170_000))
    # A perfect hedge (long and short the same asset) with its correlation known: no risk;
    # without it, no credit for the hedge: 1.645 × (400 + 400).
    hedge = [10_000, -10_000]
    assert var_95_1d_usd(hedge, [0.04, 0.04], np.ones((2, 2))) == pytest.approx(0.0, abs=1e-9)
    assert var_95_1d_usd(hedge, [0.04, 0.04]) == pytest.approx(1_316.0)


def test_var_default_bounds_every_correlation() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        e = rng.normal(0, 1_000, 4)
        s = rng.uniform(0, 0.1, 4)
        a = rng.normal(size=(4, 4))
        cov = a @ a.T
        rho = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        assert var_95_1d_usd(e, s, rho) <= var_95_1d_usd(e, s) + 1e-9


def test_scale_volatility() -> None:
    # 1 % per hour → ×√24 per day
    assert scale_volatility(0.01, 3_600_000, 86_400_000) == pytest.approx(0.01 * math.sqrt(24))


def test_volatility_1d_from_window() -> None:
    # 13 ticks in 60 s: 12 returns of 5 s each; a day has 17_280 of them → × √17_280
    assert volatility_1d_from_window(0.001, 13, 60_000) == pytest.approx(0.001 * math.sqrt(17_280))
    assert volatility_1d_from_window(0.001, 1, 60_000) == 0.0


def test_risk_score_vectors_and_monotonicity() -> None:
    assert risk_score(None, 0.0, 0.0) == 0.0
    assert risk_score(1.0, 0.0, 0.0) == 1.0
    assert risk_score(0.8, 1.0, 1.0) == 1.0
    # L = (2 − 1.5)/(2 − 1) = 0.5 ; 1 − 0.3·0.5 = 0.85 ; V = 0.05/0.10 = 0.5 → 1 − 0.5·0.5 = 0.75
    # score = 1 − 0.5 · 0.85 · 0.75 = 1 − 0.31875
    assert risk_score(1.5, 0.5, 0.05) == pytest.approx(0.68125)
    grid = [0.9, 1.0, 1.1, 1.5, 2.0, 3.0]
    for hf_lo, hf_hi in itertools.pairwise(grid):
        assert risk_score(hf_lo, 0.4, 0.03) >= risk_score(hf_hi, 0.4, 0.03)
    for c_lo, c_hi in itertools.pairwise([0.0, 0.2, 0.5, 1.0]):
        assert risk_score(1.4, c_lo, 0.03) <= risk_score(1.4, c_hi, 0.03)
    for v_lo, v_hi in itertools.pairwise([0.0, 0.02, 0.1, 0.5]):
        assert risk_score(1.4, 0.4, v_lo) <= risk_score(1.4, 0.4, v_hi)
    assert 0.0 <= risk_score(None, 1.0, 10.0) <= 1.0


def test_assess_positions() -> None:
    positions = [
        Position(
            "ETH", "aave", "ethereum", 10, 2_000, liquidation_threshold=0.825, volatility_1d=0.04
        ),
        Position("USDC", "aave", "arbitrum", 5_000, 1, liquidation_threshold=0.87),
        Position("USDC", "aave", "ethereum", 15_000, 1, is_debt=True),
    ]
    a = assess_positions(positions)
    # HF = (16_500 + 4_350) / 15_000 = 1.39 ; LTV = 15_000 / 25_000
    assert a.health_factor == pytest.approx(1.39)
    assert a.ltv == 0.6
    # Gross by asset: ETH 20_000, USDC 20_000 → 0.5 ; by chain: ethereum 35_000, arbitrum 5_000
    assert a.hhi_assets == pytest.approx(0.5)
    assert a.hhi_protocols == 1.0
    assert a.hhi_chains == pytest.approx((35 / 40) ** 2 + (5 / 40) ** 2)
    # σ weighted by gross: 0.04 · 20_000 / 40_000 = 0.02 ; VaR = 1.645 · 20_000 · 0.04
    assert a.volatility_1d == pytest.approx(0.02)
    assert a.var_95_1d_usd == pytest.approx(1.645 * 800)
    assert a.risk_score == pytest.approx(risk_score(1.39, 0.5, 0.02))


def test_liquidation_alert_hysteresis_no_flapping() -> None:
    state = AlertState()
    seq = [1.5, 1.19, 1.21, 1.25, 1.19, 1.29, 1.31, 1.2, 1.19, 1.04, 1.06, 1.04, 1.11, 1.04, 1.35]
    levels = []
    for hf in seq:
        transition = state.update("user-1", "liquidation_risk", hf)
        levels.append(None if transition is None else transition.level)
    W, C, OK = AlertLevel.WARNING, AlertLevel.CRITICAL, AlertLevel.OK
    assert levels == [
        None,  # 1.5  ok
        W,  # 1.19 < 1.2 → warning
        None,
        None,
        None,
        None,  # 1.21 1.25 1.19 1.29: inside the 1.2–1.3 band: no flapping
        OK,  # 1.31 > 1.3 → clear
        None,  # 1.2 is not < 1.2
        W,  # 1.19
        C,  # 1.04 < 1.05
        None,  # 1.06: not above critical_clear 1.1 → stays critical
        None,  # 1.04
        W,  # 1.11 > 1.1 → back to warning
        C,  # 1.04
        OK,  # 1.35 > 1.3 → straight to ok
    ]


def test_oscillation_around_threshold_emits_once() -> None:
    state = AlertState()
    transitions = state.update_many(("u", "liquidation_risk", hf) for hf in [1.19, 1.21] * 50)
    assert [t.level for t in transitions] == [AlertLevel.WARNING]


def test_no_debt_clears_and_higher_is_worse_bands() -> None:
    state = AlertState()
    assert state.update("u", "liquidation_risk", 1.0).level is AlertLevel.CRITICAL  # type: ignore[union-attr]
    assert state.update("u", "liquidation_risk", None).level is AlertLevel.OK  # type: ignore[union-attr]
    vol = [0.03, 0.06, 0.045, 0.055, 0.039, 0.11, 0.09, 0.07]
    got = [t.level if (t := state.update("u", "volatility", v)) else None for v in vol]
    W, C, OK = AlertLevel.WARNING, AlertLevel.CRITICAL, AlertLevel.OK
    # 0.06 > 0.05 warn; 0.045, 0.055 inside the band; 0.039 < 0.04 clear; 0.11 > 0.10 critical;
    # 0.09 not below 0.08: stays; 0.07 < 0.08 → warning
    assert got == [None, W, None, None, OK, C, None, W]
    conc = [0.3, 0.55, 0.47, 0.85]
    got = [t.level if (t := state.update("u", "concentration", c)) else None for c in conc]
    assert got == [None, W, None, C]


def test_alert_state_snapshot_restore() -> None:
    state = AlertState()
    state.update("a", "liquidation_risk", 1.1)
    state.update("b", "volatility", 0.2)
    restored = AlertState.from_state(state.to_state())
    assert (
        restored.to_state()
        == state.to_state()
        == [
            ["a", "liquidation_risk", "warning"],
            ["b", "volatility", "critical"],
        ]
    )
    assert restored.update("a", "liquidation_risk", 1.25) is None  # still inside the band


def test_inconsistent_bands_rejected() -> None:
    with pytest.raises(ValueError):
        HysteresisBands(warning=1.2, critical=1.05, clear=1.1, critical_clear=1.1)  # clear < warn
    assert LIQUIDATION_BANDS.next_level(AlertLevel.OK, float("nan")) is AlertLevel.OK
