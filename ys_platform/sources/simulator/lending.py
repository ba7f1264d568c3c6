"""Lending users: positions, their transactions, liquidations and portfolio snapshots.

``users`` lending users, each on one market (protocol, chain) since a health factor is per
market: collateral (liquidation threshold 0.75-0.85), debt, sometimes a Lido stake. About a fifth
have no debt, a fifth sit close to liquidation (health factor 1.02-1.28 at start), the rest are
comfortable (1.5-4). Borrowers steer back to their target health factor as prices move them.

* **users.portfolios**: every user gets a snapshot at the start of the stream, then users are
  snapshotted round-robin.
* **defi.transactions**: deposits, withdrawals, borrows, repays and swaps, applied to the
  positions as they are emitted (never withdrawing or repaying more than held, never borrowing
  or withdrawing below the user's target health factor), plus liquidations by a keeper (Aave
  rules: close factor 50 %, 5 % bonus) emitted as a ``liquidation`` (collateral seized) then a
  ``repay``. So a snapshot always equals the previous one plus the transactions between them.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ys_platform.catalog.models import DefiTransaction, Position, UserPortfolio
from ys_platform.sources.simulator.anomalies import Anomaly, AnomalyLog
from ys_platform.sources.simulator.clock import datetime_of
from ys_platform.sources.simulator.reference import CHAINS, QUOTE, SWAP_VENUES, Universe

# Aave v3's liquidation thresholds for the assets it lists (rounded); others draw one in range.
_LIQUIDATION_THRESHOLDS: Mapping[str, float] = MappingProxyType(
    {"ETH": 0.83, "BTC": 0.78, "USDC": 0.78, "USDT": 0.78, "DAI": 0.77, "LINK": 0.75, "AAVE": 0.76}
)
_LT_RANGE = (0.75, 0.85)
_COLLATERAL_ASSETS = frozenset(
    {"ETH", "BTC", "SOL", "LINK", "AAVE", "UNI", "ARB", "OP", "LDO", "MKR", "USDC", "DAI", "CRV"}
)
_STABLES = frozenset({"USDC", "USDT", "DAI"})

# Lending markets (protocol, chains) users borrow on; ids match the defi.protocols reference.
_LENDING_MARKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aave-v3", CHAINS),
    ("compound-v3", ("ethereum", "arbitrum", "optimism", "base", "polygon")),
    ("spark", ("ethereum",)),
    ("morpho-blue", ("ethereum", "base")),
)
# Aave v3's liquidation rules: repay at most half the debt, seize collateral worth 105 %.
_CLOSE_FACTOR = 0.5
_LIQUIDATION_BONUS = 0.05
# How often (event time) the keeper scans for health factors below 1.
_KEEPER_SCAN_MS = 5_000
# Action mix of a user's transaction (a liquidation comes from the keeper, not this mix).
_ACTIONS = ("deposit", "withdraw", "borrow", "repay", "swap")
_ACTION_WEIGHTS = (0.25, 0.15, 0.2, 0.2, 0.2)
# ... of a borrower well above (lever up) or below (defend) their target health factor.
_LEVER_UP_WEIGHTS = (0.1, 0.15, 0.5, 0.05, 0.2)
_DEFEND_WEIGHTS = (0.35, 0.05, 0.05, 0.35, 0.2)
# A planned transaction: (action, asset, amount, protocol, chain).
_Plan = tuple[str, str, float, str, str]
# A position left below this fraction of a unit after a partial repay/withdraw is dust: dropped.
_DUST = 1e-9


@dataclass
class User:
    user_id: str
    protocol: str
    chain: str
    target_hf: float
    positions: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    """(protocol, chain, asset, kind) -> amount in asset units."""


def liquidation_thresholds(universe: Universe, rng: np.random.Generator) -> Mapping[str, float]:
    """Each asset's liquidation threshold: Aave's where it lists the asset, else drawn."""
    drawn = np.round(rng.uniform(*_LT_RANGE, len(universe.assets)), 4).tolist()
    return MappingProxyType(
        {
            ticker: _LIQUIDATION_THRESHOLDS.get(ticker, lt)
            for ticker, lt in zip(universe.tickers, drawn, strict=True)
        }
    )


class LendingBook:
    """The users of a universe's lending markets and what they do, at given event times.

    ``thresholds`` come from :func:`liquidation_thresholds`; ``setup_rng`` draws the users here
    (once), ``rng`` is the simulator's shared scalar stream; ``mid_prices`` values positions at
    the current mids.
    """

    def __init__(
        self,
        universe: Universe,
        thresholds: Mapping[str, float],
        users: int,
        *,
        start_ms: int,
        setup_rng: np.random.Generator,
        rng: random.Random,
        mid_prices: Callable[[], dict[str, float]],
        log: AnomalyLog,
    ) -> None:
        self._universe = universe
        self._lt = thresholds
        self._rng = rng
        self._mid_prices = mid_prices
        self._log = log
        self._setup_users(users, setup_rng)
        self._snapshot_turn = 0
        self._next_keeper_scan_ms = start_ms
        self._liquidation_queue: deque[User] = deque()
        self._pending_transactions: deque[tuple[User, str, str, float]] = deque()

    @property
    def user_ids(self) -> tuple[str, ...]:
        return tuple(u.user_id for u in self._users)

    def user_health_factor(self, user_id: str) -> float | None:
        """A user's Aave health factor at the current mids (None without debt)."""
        user = next(u for u in self._users if u.user_id == user_id)
        return health_factor(user, self._mid_prices(), self._lt)

    def initial_snapshots(self, at_ms: int) -> Iterator[UserPortfolio]:
        """One snapshot of every user, at ``at_ms``, each taken as it is yielded."""
        for user in self._users:
            yield self.snapshot(user, at_ms)

    def _setup_users(self, count: int, rng: np.random.Generator) -> None:
        universe = self._universe
        tickers = list(universe.tickers)
        collateral = [t for t in tickers if t in _COLLATERAL_ASSETS] or tickers[:1]
        debt = [t for t in tickers if t in _STABLES] or tickers[:1]
        markets = [
            (protocol, chain)
            for protocol, chains in _LENDING_MARKETS
            for chain in chains
            if chain in universe.chains
        ]
        self._collateral_assets = collateral
        self._debt_assets = debt
        prices = self._mid_prices()
        weights = np.array([universe.symbol_weights[universe.symbol_index[t]] for t in collateral])
        users: list[User] = []
        for number in range(count):
            protocol, chain = markets[int(rng.integers(len(markets)))]
            profile = rng.random()
            if profile < 0.2:  # savers: no debt
                target = math.inf
            elif profile < 0.4:  # close to liquidation
                target = float(rng.uniform(1.02, 1.28))
            else:
                target = float(rng.uniform(1.5, 4.0))
            user = User(f"user-{number:05d}", protocol, chain, target)
            # Portfolio size: lognormal around $25k (a retail-to-whale spread), capped at $20M.
            size_usd = min(float(np.exp(rng.normal(math.log(25_000), 1.3))), 20e6)
            n_coll = int(rng.integers(1, min(3, len(collateral)) + 1))
            chosen = rng.choice(len(collateral), n_coll, replace=False, p=weights / weights.sum())
            split = rng.dirichlet(np.ones(n_coll))
            for index, share in zip(chosen.tolist(), split.tolist(), strict=True):
                asset = collateral[index]
                key = (protocol, chain, asset, "collateral")
                user.positions[key] = size_usd * share / prices[asset]
            if math.isfinite(target):
                borrow_usd = self._weighted_collateral_usd(user, prices) / target
                n_debt = 1 if len(debt) == 1 or rng.random() < 0.7 else 2
                chosen = rng.choice(len(debt), n_debt, replace=False)
                split = rng.dirichlet(np.ones(n_debt))
                for index, share in zip(chosen.tolist(), split.tolist(), strict=True):
                    asset = debt[index]
                    user.positions[(protocol, chain, asset, "debt")] = (
                        borrow_usd * share / prices[asset]
                    )
            if "ETH" in prices and "ethereum" in universe.chains and rng.random() < 0.2:
                # Some users also hold staked ETH: value at risk but no borrowing power here.
                stake_usd = size_usd * float(rng.uniform(0.1, 0.5))
                user.positions[("lido", "ethereum", "ETH", "stake")] = stake_usd / prices["ETH"]
            users.append(user)
        self._users = users

    # --- snapshots and transactions -----------------------------------------------------------

    def _weighted_collateral_usd(self, user: User, prices: Mapping[str, float]) -> float:
        return sum(
            amount * prices[asset] * self._lt[asset]
            for (_, _, asset, kind), amount in user.positions.items()
            if kind == "collateral"
        )

    def snapshot(self, user: User, at_ms: int) -> UserPortfolio:
        positions = tuple(
            Position(
                protocol=protocol,
                chain=chain,
                asset=asset,
                kind=kind,  # type: ignore[arg-type]
                amount=amount,
                liquidation_threshold=self._lt[asset] if kind == "collateral" else None,
            )
            for (protocol, chain, asset, kind), amount in sorted(user.positions.items())
        )
        return UserPortfolio(user_id=user.user_id, positions=positions, ts=datetime_of(at_ms))

    def next_snapshot(self, at_ms: int) -> UserPortfolio:
        user = self._users[self._snapshot_turn % len(self._users)]
        self._snapshot_turn += 1
        return self.snapshot(user, at_ms)

    def transaction(self, at_ms: int) -> DefiTransaction:
        if at_ms >= self._next_keeper_scan_ms:
            self._keeper_scan()
            self._next_keeper_scan_ms = at_ms + _KEEPER_SCAN_MS
        if self._pending_transactions:
            user, action, asset, amount = self._pending_transactions.popleft()
            return self._tx(user, action, asset, amount, user.protocol, user.chain, at_ms)
        while self._liquidation_queue:
            user = self._liquidation_queue.popleft()
            tx = self._liquidate(user, at_ms)
            if tx is not None:
                return tx
        rng = self._rng
        user = self._users[rng.randrange(len(self._users))]
        prices = self._mid_prices()
        action = rng.choices(_ACTIONS, self._action_weights(user, prices))[0]
        plan = {
            "deposit": self._plan_deposit,
            "withdraw": self._plan_withdraw,
            "borrow": self._plan_borrow,
            "repay": self._plan_repay,
            "swap": self._plan_swap,
        }[action]
        planned = plan(user, prices)
        if planned is None:  # nothing to withdraw/borrow/repay: deposit instead
            planned = self._plan_deposit(user, prices)
        return self._tx(user, *planned, at_ms)

    def _tx(
        self,
        user: User,
        action: str,
        asset: str,
        amount: float,
        protocol: str,
        chain: str,
        at_ms: int,
    ) -> DefiTransaction:
        """The transaction, its effect applied to the user's positions as it is emitted (so a
        snapshot always equals the initial one plus the transactions before it)."""
        if action != "swap":  # wallet balances are not modelled: a swap moves no position
            kind = "debt" if action in ("borrow", "repay") else "collateral"
            key = (protocol, chain, asset, kind)
            held = user.positions.get(key, 0.0)
            if action in ("deposit", "borrow"):
                user.positions[key] = held + amount
            else:  # withdraw, repay, liquidation: never more than held
                amount = min(amount, held)
                if held - amount <= held * _DUST:
                    amount = held
                    user.positions.pop(key, None)
                else:
                    user.positions[key] = held - amount
        return DefiTransaction(
            tx_hash=self._tx_hash(),
            user_id=user.user_id,
            protocol=protocol,
            chain=chain,
            action=action,  # type: ignore[arg-type]
            asset=asset,
            amount=amount,
            ts=datetime_of(at_ms),
        )

    def _action_weights(self, user: User, prices: Mapping[str, float]) -> tuple[float, ...]:
        # Borrowers steer back to their target health factor: they lever up when prices have
        # carried them above it and defend (repay, add collateral) below it. This keeps the
        # risky fifth of users near liquidation for the whole run while prices push them around.
        if not math.isfinite(user.target_hf):
            return _ACTION_WEIGHTS
        hf = health_factor(user, prices, self._lt)
        if hf is None or hf > user.target_hf * 1.15:
            return _LEVER_UP_WEIGHTS
        if hf < user.target_hf * 0.95:
            return _DEFEND_WEIGHTS
        return _ACTION_WEIGHTS

    def _tx_hash(self) -> str:
        return f"0x{self._rng.getrandbits(256):064x}"

    def _usd_amount(self) -> float:
        # A transaction's size: lognormal around $2,000.
        return math.exp(self._rng.gauss(math.log(2_000), 1.0))

    def _held(self, user: User, kind: str) -> list[tuple[str, float]]:
        return [
            (asset, amount)
            for (protocol, chain, asset, k), amount in user.positions.items()
            if k == kind and protocol == user.protocol and chain == user.chain
        ]

    def _plan_deposit(self, user: User, prices: Mapping[str, float]) -> _Plan:
        rng = self._rng
        held = self._held(user, "collateral")
        if held and rng.random() < 0.7:
            asset = rng.choice(held)[0]
        else:
            asset = rng.choice(self._collateral_assets)
        return "deposit", asset, self._usd_amount() / prices[asset], user.protocol, user.chain

    def _plan_withdraw(self, user: User, prices: Mapping[str, float]) -> _Plan | None:
        held = self._held(user, "collateral")
        if not held:
            return None
        rng = self._rng
        asset, amount = rng.choice(held)
        debt_usd = self._debt_usd(user, prices)
        if debt_usd > 0:
            # Keep the health factor at or above the user's comfort level after withdrawing.
            spare = self._weighted_collateral_usd(user, prices) - debt_usd * user.target_hf
            amount = min(amount, max(spare, 0.0) / (prices[asset] * self._lt[asset]))
            if amount <= 0:
                return None
            return "withdraw", asset, amount * rng.uniform(0.1, 1.0), user.protocol, user.chain
        if rng.random() < 0.3:  # close the position
            return "withdraw", asset, amount, user.protocol, user.chain
        return "withdraw", asset, amount * rng.uniform(0.1, 0.9), user.protocol, user.chain

    def _plan_borrow(self, user: User, prices: Mapping[str, float]) -> _Plan | None:
        if not math.isfinite(user.target_hf):  # savers do not borrow
            return None
        room_usd = self._weighted_collateral_usd(user, prices) / user.target_hf
        room_usd -= self._debt_usd(user, prices)
        if room_usd <= 0:
            return None
        rng = self._rng
        held = self._held(user, "debt")
        asset = rng.choice(held)[0] if held else rng.choice(self._debt_assets)
        usd = room_usd * rng.uniform(0.3, 1.0)
        return "borrow", asset, usd / prices[asset], user.protocol, user.chain

    def _plan_repay(self, user: User, prices: Mapping[str, float]) -> _Plan | None:
        held = self._held(user, "debt")
        if not held:
            return None
        rng = self._rng
        asset, amount = rng.choice(held)
        if rng.random() > 0.2:  # most repayments are partial
            amount *= rng.uniform(0.05, 0.5)
        return "repay", asset, amount, user.protocol, user.chain

    def _plan_swap(self, user: User, prices: Mapping[str, float]) -> _Plan:
        rng = self._rng
        asset = self._universe.tickers[self._universe.pick_symbol(rng)]
        venue = rng.choice(SWAP_VENUES[user.chain])
        return "swap", asset, self._usd_amount() / prices[asset], venue, user.chain

    def _debt_usd(self, user: User, prices: Mapping[str, float]) -> float:
        return sum(
            amount * prices[asset]
            for (_, _, asset, kind), amount in user.positions.items()
            if kind == "debt"
        )

    def _keeper_scan(self) -> None:
        prices = self._mid_prices()
        queued = {u.user_id for u in self._liquidation_queue}
        for user in self._users:
            hf = health_factor(user, prices, self._lt)
            if hf is not None and hf < 1.0 and user.user_id not in queued:
                self._liquidation_queue.append(user)

    def _liquidate(self, user: User, at_ms: int) -> DefiTransaction | None:
        prices = self._mid_prices()
        hf = health_factor(user, prices, self._lt)
        if hf is None or hf >= 1.0:
            return None
        debts = self._held(user, "debt")
        collaterals = self._held(user, "collateral")
        if not debts or not collaterals:
            return None
        debt_asset, debt_amount = max(debts, key=lambda d: d[1] * prices[d[0]])
        coll_asset, coll_amount = max(collaterals, key=lambda c: c[1] * prices[c[0]])
        repay_usd = debt_amount * prices[debt_asset] * _CLOSE_FACTOR
        seize = repay_usd * (1.0 + _LIQUIDATION_BONUS) / prices[coll_asset]
        if seize > coll_amount:  # not enough collateral: seize it all, repay what it covers
            seize = coll_amount
            repay_usd = seize * prices[coll_asset] / (1.0 + _LIQUIDATION_BONUS)
        repay = repay_usd / prices[debt_asset]
        self._log.record(
            Anomaly(
                "liquidation",
                at_ms,
                at_ms,
                symbol=f"{coll_asset}/{QUOTE}",
                source=user.protocol,
                chain=user.chain,
                magnitude=repay_usd,
            )
        )
        # The liquidator's repayment of the debt is the next transaction of the stream.
        self._pending_transactions.append((user, "repay", debt_asset, repay))
        return self._tx(user, "liquidation", coll_asset, seize, user.protocol, user.chain, at_ms)


def health_factor(
    user: User, prices: Mapping[str, float], thresholds: Mapping[str, float]
) -> float | None:
    """Aave's health factor: Σ collateral × price × threshold / Σ debt × price."""
    collateral = 0.0
    debt = 0.0
    for (_, _, asset, kind), amount in user.positions.items():
        if kind == "collateral":
            collateral += amount * prices[asset] * thresholds[asset]
        elif kind == "debt":
            debt += amount * prices[asset]
    return collateral / debt if debt > 0 else None
