"""Constant-product AMM (Uniswap v2) maths in real numbers: swaps and optimal arbitrage sizes.

A pool holds ``x`` base and ``y`` quote; its spot price is y/x quote per base. A swap of Δin
pays the fee on the input: out = Δin·γ·R_out / (R_in + Δin·γ), γ = 1 − fee
(``UniswapV2Library.getAmountOut`` without the integer rounding). All functions accept numpy
arrays as well as floats (they broadcast), so many pools or sizes are evaluated at once.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

UNISWAP_V2_FEE = 0.003
"""Uniswap v2's LP fee: 0.3 % of the input (γ = 0.997)."""


def get_amount_out(
    amount_in: ArrayLike,
    reserve_in: ArrayLike,
    reserve_out: ArrayLike,
    fee: float = UNISWAP_V2_FEE,
) -> float | np.ndarray:
    """Output of swapping ``amount_in`` into a pool: Δin·γ·R_out / (R_in + Δin·γ)."""
    a, r_in, r_out = (np.asarray(v, dtype=np.float64) for v in (amount_in, reserve_in, reserve_out))
    _check_pool(r_in, r_out, fee)
    if np.any(a < 0):
        raise ValueError("amount_in must be >= 0")
    gamma = 1.0 - fee
    out = a * gamma * r_out / (r_in + a * gamma)
    return float(out) if out.ndim == 0 else out


def get_amount_in(
    amount_out: ArrayLike,
    reserve_in: ArrayLike,
    reserve_out: ArrayLike,
    fee: float = UNISWAP_V2_FEE,
) -> float | np.ndarray:
    """Input needed to receive ``amount_out``: R_in·out / (γ·(R_out − out)).

    The exact inverse of :func:`get_amount_out`. ``inf`` when ``amount_out >= reserve_out``:
    a constant-product pool can never be emptied.
    """
    b, r_in, r_out = (
        np.asarray(v, dtype=np.float64) for v in (amount_out, reserve_in, reserve_out)
    )
    _check_pool(r_in, r_out, fee)
    if np.any(b < 0):
        raise ValueError("amount_out must be >= 0")
    gamma = 1.0 - fee
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.where(b < r_out, r_in * b / (gamma * (r_out - b)), np.inf)
    return float(needed) if needed.ndim == 0 else needed


def spot_price(reserve_base: ArrayLike, reserve_quote: ArrayLike) -> float | np.ndarray:
    """Marginal price of the base in quote, before fees: y / x."""
    p = np.asarray(reserve_quote, dtype=np.float64) / np.asarray(reserve_base, dtype=np.float64)
    return float(p) if p.ndim == 0 else p


def optimal_base_in_against_price(
    reserve_base: float, reserve_quote: float, external_price: float, fee: float = UNISWAP_V2_FEE
) -> float:
    """Base to sell into the pool, bought back at ``external_price``: maximises profit in quote.

    Profit π(Δx) = γ·Δx·y/(x + γ·Δx) − p·Δx; π′ = 0 at (x + γΔx)² = γxy/p, so
    Δx* = (√(γ·x·y/p) − x)/γ, positive only when γ·y/x > p (the pool pays more than p after its
    fee). 0.0 when there is no profit. The external venue is taken as infinitely deep at p; to
    account for its fee, pass p·(1 + its fee) (the cost of buying the base back there).
    """
    x, y, p, gamma = reserve_base, reserve_quote, external_price, 1.0 - fee
    _check_pool(np.asarray(x), np.asarray(y), fee)
    if gamma * y / x <= p:
        return 0.0
    return (math.sqrt(gamma * x * y / p) - x) / gamma


def optimal_quote_in_against_price(
    reserve_base: float, reserve_quote: float, external_price: float, fee: float = UNISWAP_V2_FEE
) -> float:
    """Quote to spend buying base from the pool, sold at ``external_price``: maximises profit.

    Profit π(Δy) = p·γ·Δy·x/(y + γ·Δy) − Δy; π′ = 0 at (y + γΔy)² = p·γ·x·y, so
    Δy* = (√(p·γ·x·y) − y)/γ, positive only when p·γ·x/y > 1. 0.0 when there is no profit. To
    account for the external venue's fee, pass p·(1 − its fee).
    """
    x, y, p, gamma = reserve_base, reserve_quote, external_price, 1.0 - fee
    _check_pool(np.asarray(x), np.asarray(y), fee)
    if p * gamma * x / y <= 1.0:
        return 0.0
    return (math.sqrt(p * gamma * x * y) - y) / gamma


def two_pool_round_trip(
    quote_in: ArrayLike,
    pool_a: tuple[float, float],
    pool_b: tuple[float, float],
    fee_a: float = UNISWAP_V2_FEE,
    fee_b: float = UNISWAP_V2_FEE,
) -> float | np.ndarray:
    """Quote received from buying base in pool A with ``quote_in`` and selling it in pool B.

    Pools are (reserve_base, reserve_quote). The composition of two constant-product swaps is
    again of the form a·Δ/(c + d·Δ) with a = γA·γB·xA·yB, c = yA·xB, d = γA·(xB + γB·xA).
    """
    a, c, d = _two_pool_coefficients(pool_a, pool_b, fee_a, fee_b)
    q = np.asarray(quote_in, dtype=np.float64)
    out = a * q / (c + d * q)
    return float(out) if out.ndim == 0 else out


def optimal_two_pool_quote_in(
    pool_a: tuple[float, float],
    pool_b: tuple[float, float],
    fee_a: float = UNISWAP_V2_FEE,
    fee_b: float = UNISWAP_V2_FEE,
    cost_per_quote: float = 0.0,
) -> tuple[float, float]:
    """Optimal quote input and its profit for buying base in pool A and selling it in pool B.

    With out(Δ) = a·Δ/(c + d·Δ) (see :func:`two_pool_round_trip`) and a proportional cost k per
    unit of input (``cost_per_quote``, e.g. a bridge fee in bps of notional / 10⁴), the profit
    π(Δ) = out(Δ) − (1 + k)·Δ is concave; π′ = a·c/(c + dΔ)² − (1 + k) = 0 gives
    Δ* = (√(a·c/(1 + k)) − c)/d and π* = (√a − √(c·(1 + k)))²/d. Profitable only when
    a > c·(1 + k), i.e. γA·γB·(yB/xB) > (1 + k)·(yA/xA): B's price after both fees exceeds A's.
    Returns (0.0, 0.0) when unprofitable.
    """
    a, c, d = _two_pool_coefficients(pool_a, pool_b, fee_a, fee_b)
    cost = 1.0 + cost_per_quote
    if a <= c * cost:
        return 0.0, 0.0
    size = (math.sqrt(a * c / cost) - c) / d
    profit = (math.sqrt(a) - math.sqrt(c * cost)) ** 2 / d
    return size, profit


def _two_pool_coefficients(
    pool_a: tuple[float, float], pool_b: tuple[float, float], fee_a: float, fee_b: float
) -> tuple[float, float, float]:
    (xa, ya), (xb, yb) = pool_a, pool_b
    _check_pool(np.asarray([ya, yb]), np.asarray([xa, xb]), fee_a)
    _check_pool(np.asarray(1.0), np.asarray(1.0), fee_b)
    ga, gb = 1.0 - fee_a, 1.0 - fee_b
    return ga * gb * xa * yb, ya * xb, ga * (xb + gb * xa)


def _check_pool(reserve_in: np.ndarray, reserve_out: np.ndarray, fee: float) -> None:
    if np.any(reserve_in <= 0) or np.any(reserve_out <= 0):
        raise ValueError("pool reserves must be positive")
    if not 0.0 <= fee < 1.0:
        raise ValueError("fee is a fraction in [0, 1)")
