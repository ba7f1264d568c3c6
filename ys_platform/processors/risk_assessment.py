"""Risk assessment: per user, the Aave health factor, LTV, concentration, VaR and a risk score of
their positions at the latest market prices (``risk.assessments``), and alerts with hysteresis
when a threshold is crossed (``risk.alerts``).

Inputs
------
* ``users.portfolios`` — a full snapshot of a user's positions: it *replaces* the user's state.
* ``defi.transactions`` — applied to the positions of ``(protocol, chain, asset)``: ``deposit``
  adds collateral, ``withdraw`` and ``liquidation`` (collateral seized) remove collateral,
  ``borrow`` adds debt, ``repay`` removes debt. A ``swap`` is ignored: the message names one asset
  only (no counter asset, no price), and the simulator does not model wallet balances either — a
  swap moves no lending position. Removals never go below zero, and a remainder at or below
  :data:`DUST` of the position drops it, exactly as the simulator does, so replaying its
  transactions on its snapshots gives bit-identical amounts.
* ``market.analytics`` — broadcast reference data (every worker reads it whole): per ``ASSET/USD``
  the latest window's ``consolidated_price`` (``twap`` when there is no consolidated price) and
  its volatility, scaled to one day for VaR (:func:`risk.volatility_1d_from_window`: the window's
  per-tick std of log returns times √(day / mean tick spacing), i.i.d. returns). Stablecoins
  (:data:`STABLECOINS`) are taken at 1.0 USD with no volatility until analytics quote them.

Snapshots and transactions of one user travel on different topics, so they interleave in any
order. Event time orders them: a transaction at or before the user's snapshot is already in it
(ignored); the transactions after it are kept in a per-user log, so a snapshot that arrives after
later transactions is rebuilt as snapshot + those transactions. A user is assessed only once a
snapshot is known (transactions alone do not tell the starting positions).

Figures (one ``risk.assessments`` record per assessed user)
-----------------------------------------------------------
* ``health_factor`` = Σ collateral·price·liquidation threshold / Σ debt·price; null without debt.
* ``collateral_usd`` / ``debt_usd``: the value of ``collateral`` / ``debt`` positions. ``stake`` and
  ``lp`` positions are exposure (HHI, VaR, volatility) but not collateral: a lending market does
  not count them. ``ltv`` = debt / collateral, capped at :data:`LTV_CAP` (debt without collateral
  has an infinite LTV, which the wire format cannot carry; its health factor of 0 says it).
* ``hhi`` over assets: gross value (collateral and debt alike) summed per asset, as
  :func:`risk.hhi_by`.
* ``var_95_1d_usd``: delta-normal, exposures netted per asset (a loan and collateral in the same
  asset hedge exactly), then the worst case over correlations across assets
  (:func:`risk.var_95_1d_usd` without a correlation matrix).
* ``risk_score``: :func:`risk.risk_score` of HF, HHI and the gross-weighted daily volatility.

A user whose positions include an asset without a price (or collateral without a known
liquidation threshold) is not assessed; :attr:`RiskAssessmentProcessor.stats` counts it.

When users are assessed
-----------------------
After each slice of input that changed their positions, and — on each slice — when the price of
an asset they hold moved more than :data:`PRICE_MOVE_TRIGGER` since their last assessment (users
are indexed by asset, so only holders of moved assets are looked at). ``assessed_at`` is the event
time of the trigger (the latest transaction/snapshot of the user in the slice, or the window end of
the price that moved), never the wall clock. Prices are the latest known when the slice is
processed: a reference-data join, so a replay reproduces the output only with the same
interleaving of prices and positions.

Alerts
------
:class:`risk.AlertState` per (user, kind) with the hysteresis bands of :mod:`risk`:
``liquidation_risk`` on the health factor, ``volatility`` on the portfolio's daily volatility,
``concentration`` on the HHI. A record is emitted on each transition *into* ``warning`` or
``critical`` (including critical stepping down to warning); clearing emits nothing (the alert
topic has no "ok" severity: the user's next assessment shows the value back inside the band).
Values oscillating inside a hysteresis gap change nothing, so alerts do not flap. ``alert_id`` is
a uuid5 of (user, kind, severity, assessed_at): a replay emits the same ids.

State and partitioning
----------------------
``defi.transactions`` (24 partitions) and ``users.portfolios`` (6) are both keyed by ``user_id``
but not co-partitioned: a user's records sit in unrelated partition numbers of the two topics, so
state cannot live per input partition as :mod:`streaming.app` assumes. It is kept per user across
every partition this worker owns, which is only correct when one worker owns them all: **run this
processor as a single replica** until the inputs are co-partitioned. For the same reason a
revocation drops *all* state (and the alert levels, which must be rebuilt from committed input
only after an aborted batch): with the client's eager rebalancing every partition is revoked and
reassigned together, and the restore replays all of them.

Restore replays :data:`RESTORE_SPAN_MS` of both inputs. The simulator snapshots its users
round-robin with 5 % of its messages (every ``users / (0.05 · rate)`` s: 20 s for 200 users at
the default 200 msg/s, 500 s for 5 000 users), so 15 minutes cover a snapshot of every user up to
~9 000 users at that rate. A user with no snapshot inside the span is rebuilt only from its next
snapshot (its transactions wait in the log until then).
"""

from __future__ import annotations

import bisect
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from ys_platform.catalog.models import (
    DefiTransaction,
    MarketAnalytics,
    Message,
    RiskAlert,
    RiskAssessment,
    UserPortfolio,
)
from ys_platform.catalog.topics import consumer_group
from ys_platform.processing.risk import (
    Z_95_ONE_SIDED,
    AlertLevel,
    AlertState,
    AlertTransition,
    ltv,
    risk_score,
    volatility_1d_from_window,
)
from ys_platform.streaming.app import ProcessResult, Rejected, TopicPartitionId

GROUP = consumer_group("risk-assessment-processor")

MINUTE_MS = 60_000
RESTORE_SPAN_MS = 15 * MINUTE_MS
"""Replayed on restore: covers a snapshot of every simulated user (see the module docstring)."""
BROADCAST_LOOKBACK_MS = 15 * MINUTE_MS
"""Analytics read at start: price-aggregation emits every symbol that ticks every 5 s, so this
finds a price for everything traded in the last quarter hour while skipping stale history."""
LOG_SPAN_MS = RESTORE_SPAN_MS
"""How far out of order a snapshot may arrive behind the transactions of its user (the skew
between the two topics' consumption). Older log entries are folded into the positions; a snapshot
older than a folded transaction is ignored as stale."""
LOG_PRUNE_INTERVAL_MS = MINUTE_MS
"""Event time between two folds of the transaction logs: keeps the scan off the per-slice path."""

PRICE_MOVE_TRIGGER = 0.005
"""Relative price move (0.5 %) of a held asset since a user's last assessment that re-assesses
them. It moves a health factor near 1.2 by at most ~0.006, small against the 0.15 between the
warning (1.2) and critical (1.05) levels: a crossing is reported within that of its threshold."""
STABLECOINS = frozenset({"USDC", "USDT", "DAI"})
"""Priced at their 1.0 USD peg (no volatility) until market.analytics quotes them."""
QUOTE = "USD"
DUST = 1e-9
"""A removal leaving at most this fraction of a position drops it (the simulator's rule)."""
LTV_CAP = 1e6
"""LTV reported for debt with (next to) no collateral: a million times under water sorts as the
worst case while staying a finite JSON number."""

COLLATERAL, DEBT = "collateral", "debt"
_OTHER = 2
_KIND_CODES = {COLLATERAL: 0, DEBT: 1}
"""Position kinds as column codes; stake and lp positions are other exposure (_OTHER)."""
_NEVER = -(2**62)
"""An event time before any other (a floor that blocks nothing)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
ALERT_NAMESPACE = uuid.UUID("6f1c2a52-58c1-4d5e-9a0b-3c1e8f7d2b44")
"""Fixed namespace of the uuid5 alert ids (any constant works; it must never change)."""

PositionKey = tuple[str, str, str, str]
"""(protocol, chain, asset, kind)."""


def epoch_ms(value: datetime) -> int:
    return (value - _EPOCH) // _MS


def _datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest price of an asset from market.analytics."""

    price: float
    volatility_1d: float
    as_of_ms: int
    """The window end it comes from."""


@dataclass(slots=True)
class _User:
    snapshot_ts: int | None = None
    """Event time of the snapshot the positions start from (None: none seen yet)."""
    floor_ts: int = _NEVER
    """Snapshots at or before this are stale: the snapshot itself or a folded transaction."""
    base: dict[PositionKey, float] = field(default_factory=dict)
    """The snapshot's positions plus the folded transactions."""
    log: list[tuple[int, int, DefiTransaction]] = field(default_factory=list)
    """Transactions after ``snapshot_ts`` not folded yet, sorted by (event time, arrival)."""
    hashes: set[str] = field(default_factory=set)
    positions: dict[PositionKey, float] = field(default_factory=dict)
    """``base`` with ``log`` applied: what is assessed."""
    thresholds: dict[tuple[str, str, str], float] = field(default_factory=dict)
    """Liquidation thresholds of the snapshot's collateral, per (protocol, chain, asset)."""
    assessed_prices: dict[str, float | None] = field(default_factory=dict)
    """Price of each held asset at the last assessment (None: it had none): the move trigger."""


def apply_transaction(positions: dict[PositionKey, float], tx: DefiTransaction) -> bool:
    """Apply a transaction to positions in place; False if it moves no position (a swap)."""
    if tx.action == "swap":
        return False
    kind = DEBT if tx.action in ("borrow", "repay") else COLLATERAL
    key = (tx.protocol, tx.chain, tx.asset, kind)
    held = positions.get(key, 0.0)
    if tx.action in ("deposit", "borrow"):
        positions[key] = held + tx.amount
        return True
    # withdraw, repay, liquidation: never below zero; the same float steps as the simulator.
    amount = min(tx.amount, held)
    if held - amount <= held * DUST:
        positions.pop(key, None)
    else:
        positions[key] = held - amount
    return True


class RiskAssessmentProcessor:
    """The ``risk-assessment-processor`` logic: positions per user, prices per asset."""

    group = GROUP
    restore_span_ms = RESTORE_SPAN_MS
    broadcast_inputs: tuple[str, ...] = GROUP.broadcast_inputs
    broadcast_lookback_ms = BROADCAST_LOOKBACK_MS

    def __init__(self) -> None:
        self.quotes: dict[str, Quote] = {}
        self._moved: set[str] = set()
        """Assets whose price changed since the last slice."""
        self._thresholds: dict[tuple[str, str, str], float] = {}
        """Liquidation threshold per market (protocol, chain, asset), the latest any snapshot
        gave: for a deposit opening a collateral position the user's snapshot did not have."""
        self._asset_thresholds: dict[str, float] = {}
        """Fallback by asset when the market was never seen with that collateral."""
        self.stats: Counter[str] = Counter()
        """Counts of what was not assessed or not applied, by reason."""
        self._owned: set[TopicPartitionId] = set()
        self._arrivals = 0
        """Transactions logged so far: orders log entries of equal event time by arrival."""
        self._reset()

    def _reset(self) -> None:
        self._users: dict[str, _User] = {}
        self._holders: dict[str, set[str]] = {}
        self._logged: set[str] = set()
        self._watermarks: dict[TopicPartitionId, int] = {}
        self._last_prune_ms = _NEVER
        self.alerts = AlertState()

    # --- reference data ------------------------------------------------------------------------

    def on_broadcast(self, messages: Sequence[Message]) -> None:
        """Keep the latest price and daily volatility per asset quoted in USD."""
        for m in messages:
            if not isinstance(m, MarketAnalytics):
                continue
            asset, _, quote = m.symbol.partition("/")
            if quote != QUOTE:
                continue
            end_ms = epoch_ms(m.window_end)
            previous = self.quotes.get(asset)
            if previous is not None and end_ms < previous.as_of_ms:
                continue  # an older window arriving late: the newer one stands
            price = m.consolidated_price if m.consolidated_price is not None else m.twap
            window_ms = end_ms - epoch_ms(m.window_start)
            vol = volatility_1d_from_window(m.volatility, m.ticks, window_ms) if window_ms else 0.0
            self.quotes[asset] = Quote(price, vol, end_ms)
            if previous is None or previous.price != price:
                self._moved.add(asset)

    def price_of(self, asset: str) -> Quote | None:
        quote = self.quotes.get(asset)
        if quote is None and asset in STABLECOINS:
            return Quote(1.0, 0.0, _NEVER)
        return quote

    # --- partitions ----------------------------------------------------------------------------

    def assign(self, partition: TopicPartitionId) -> None:
        """State is per user, not per partition: only note the ownership."""
        self._owned.add(partition)

    def revoke(self, partition: TopicPartitionId) -> None:
        """Drop everything (see the module docstring): the restore that follows the reassignment
        replays every partition and rebuilds positions and alert levels from committed input."""
        self._owned.discard(partition)
        self._reset()

    def watermark_ms(self, partition: TopicPartitionId) -> int | None:
        return self._watermarks.get(partition)

    def user_positions(self, user_id: str) -> dict[PositionKey, float] | None:
        """A user's current positions (None before their first snapshot): for tests and tools."""
        user = self._users.get(user_id)
        return None if user is None or user.snapshot_ts is None else dict(user.positions)

    # --- the slice -----------------------------------------------------------------------------

    def process(
        self,
        partition: TopicPartitionId,
        messages: Sequence[Message],
        timestamps_ms: Sequence[int],
    ) -> ProcessResult:
        if timestamps_ms:
            latest = max(timestamps_ms)
            self._watermarks[partition] = max(self._watermarks.get(partition, _NEVER), latest)
        triggers: dict[str, int] = {}
        rejected: list[Rejected] = []
        for index, message in enumerate(messages):
            if isinstance(message, UserPortfolio):
                changed = self._apply_snapshot(message)
            elif isinstance(message, DefiTransaction):
                changed = self._apply_transaction(message)
            else:
                reason = f"{type(message).__name__} is not a partitioned input of {GROUP.group_id}"
                rejected.append(Rejected(index, reason))
                continue
            if changed:
                at = epoch_ms(message.ts)
                triggers[message.user_id] = max(triggers.get(message.user_id, _NEVER), at)
        for user_id, at in self._price_triggers().items():
            triggers[user_id] = max(triggers.get(user_id, _NEVER), at)
        self._fold_logs()
        return ProcessResult(self.assess(triggers), rejected)

    def _apply_snapshot(self, snapshot: UserPortfolio) -> bool:
        user = self._users.setdefault(snapshot.user_id, _User())
        ts = epoch_ms(snapshot.ts)
        if ts <= user.floor_ts:
            self.stats["stale_snapshots"] += 1
            return False
        base: dict[PositionKey, float] = {}
        thresholds: dict[tuple[str, str, str], float] = {}
        for p in snapshot.positions:
            key = (p.protocol, p.chain, p.asset, p.kind)
            base[key] = base.get(key, 0.0) + p.amount
            if p.kind == COLLATERAL and p.liquidation_threshold is not None:
                market = (p.protocol, p.chain, p.asset)
                thresholds[market] = p.liquidation_threshold
                self._thresholds[market] = p.liquidation_threshold
                self._asset_thresholds[p.asset] = p.liquidation_threshold
        user.thresholds = thresholds
        user.snapshot_ts = user.floor_ts = ts
        user.base = base
        user.log = [entry for entry in user.log if entry[0] > ts]
        user.hashes = {tx.tx_hash for _, _, tx in user.log}
        if not user.log:
            self._logged.discard(snapshot.user_id)
        self._rebuild(user)
        return True

    def _apply_transaction(self, tx: DefiTransaction) -> bool:
        if tx.action == "swap":
            self.stats["swaps_ignored"] += 1
            return False
        user = self._users.setdefault(tx.user_id, _User())
        ts = epoch_ms(tx.ts)
        if user.snapshot_ts is not None and ts <= user.snapshot_ts:
            self.stats["transactions_in_snapshot"] += 1
            return False
        if tx.tx_hash in user.hashes:
            self.stats["duplicate_transactions"] += 1
            return False
        self._arrivals += 1
        entry = (ts, self._arrivals, tx)
        user.hashes.add(tx.tx_hash)
        self._logged.add(tx.user_id)
        if not user.log or ts >= user.log[-1][0]:
            user.log.append(entry)
            apply_transaction(user.positions, tx)
        else:  # an earlier transaction arriving late: replay the log in event-time order
            bisect.insort(user.log, entry, key=lambda e: (e[0], e[1]))
            self._rebuild(user)
        return True

    @staticmethod
    def _rebuild(user: _User) -> None:
        positions = dict(user.base)
        for _, _, tx in user.log:
            apply_transaction(positions, tx)
        user.positions = positions

    def _fold_logs(self) -> None:
        """Fold log entries older than :data:`LOG_SPAN_MS` into the base, bounding the logs."""
        now = max(self._watermarks.values(), default=_NEVER)
        if now - self._last_prune_ms < LOG_PRUNE_INTERVAL_MS:
            return
        self._last_prune_ms = now
        horizon = now - LOG_SPAN_MS
        for user_id in list(self._logged):
            user = self._users[user_id]
            cut = bisect.bisect_left(user.log, horizon, key=lambda e: e[0])
            if not cut:
                continue
            old, user.log = user.log[:cut], user.log[cut:]
            if user.snapshot_ts is not None:
                for _, _, tx in old:
                    apply_transaction(user.base, tx)
            # Without a snapshot the old entries are dropped: the next snapshot, later than
            # them, already includes them; an earlier one is stale (below the floor).
            user.floor_ts = max(user.floor_ts, old[-1][0])
            user.hashes.difference_update(tx.tx_hash for _, _, tx in old)
            if not user.log:
                self._logged.discard(user_id)

    def _price_triggers(self) -> dict[str, int]:
        """Holders of an asset whose price moved past the trigger since their last assessment,
        with the window end of the (latest) move as the trigger time."""
        triggers: dict[str, int] = {}
        for asset in self._moved:
            quote = self.quotes[asset]
            for user_id in self._holders.get(asset, ()):
                ref = self._users[user_id].assessed_prices.get(asset)
                if ref is None or abs(quote.price / ref - 1.0) > PRICE_MOVE_TRIGGER:
                    triggers[user_id] = max(triggers.get(user_id, _NEVER), quote.as_of_ms)
        self._moved.clear()
        return triggers

    # --- assessment ----------------------------------------------------------------------------

    def assess(self, triggers: dict[str, int]) -> list[Message]:
        """Assess the users of ``triggers`` (user → assessed_at in epoch ms), in user order:
        each user's assessment followed by their alerts."""
        rows = _Rows()
        assessed: list[tuple[str, int]] = []
        for user_id in sorted(triggers):
            user = self._users.get(user_id)
            if user is None or user.snapshot_ts is None:
                self.stats["awaiting_snapshot"] += 1
                continue
            if self._gather(user_id, user, len(assessed), rows):
                assessed.append((user_id, triggers[user_id]))
        if not assessed:
            return []
        figures = rows.figures(len(assessed))
        out: list[Message] = []
        for i, (user_id, at_ms) in enumerate(assessed):
            assessment = figures.assessment(i, user_id, _datetime(at_ms))
            out.append(assessment)
            vol = float(figures.volatility_1d[i])
            observations = [
                (user_id, "liquidation_risk", assessment.health_factor),
                (user_id, "volatility", vol),
                (user_id, "concentration", assessment.hhi),
            ]
            out += [
                self._alert(t, assessment.assessed_at)
                for t in self.alerts.update_many(observations)
                if t.level is not AlertLevel.OK
            ]
        return out

    def _gather(self, user_id: str, user: _User, index: int, rows: _Rows) -> bool:
        """Add a user's valued positions to ``rows``; False (and counted) if one cannot be
        valued. Either way the user is indexed under the assets they hold, for price triggers."""
        prices: dict[str, float | None] = {}
        staged: list[tuple[str, float, float, float, int]] = []
        missing = None
        for (protocol, chain, asset, kind), amount in user.positions.items():
            if amount <= 0:
                continue  # a zero position needs no price
            quote = self.price_of(asset)
            prices[asset] = None if quote is None else quote.price
            if quote is None:
                missing = missing or "missing_price"
                continue
            lt = 0.0
            if kind == COLLATERAL:
                # The user's own snapshot first (a market may set a user's threshold, e.g.
                # Aave's e-mode), then what any snapshot said of the market, then of the asset.
                market = (protocol, chain, asset)
                found = user.thresholds.get(market)
                if found is None:
                    found = self._thresholds.get(market)
                if found is None:
                    found = self._asset_thresholds.get(asset)
                if found is None:
                    missing = missing or "missing_threshold"
                    continue
                lt = found
            code = _KIND_CODES.get(kind, _OTHER)
            staged.append((asset, amount * quote.price, lt, quote.volatility_1d, code))
        self._index(user_id, user, prices)
        if missing is not None:
            self.stats[f"not_assessed_{missing}"] += 1
            return False
        for asset, value, lt, vol, code in staged:
            rows.add(index, asset, value, lt, vol, code)
        return True

    def _index(self, user_id: str, user: _User, prices: dict[str, float | None]) -> None:
        for asset in user.assessed_prices.keys() - prices.keys():
            holders = self._holders.get(asset)
            if holders is not None:
                holders.discard(user_id)
        for asset in prices.keys() - user.assessed_prices.keys():
            self._holders.setdefault(asset, set()).add(user_id)
        user.assessed_prices = prices

    def _alert(self, t: AlertTransition, assessed_at: datetime) -> RiskAlert:
        bands = self.alerts.bands[t.kind]
        if t.level is AlertLevel.CRITICAL:
            threshold = bands.critical
        elif t.previous is AlertLevel.CRITICAL:  # stepped down: crossed back over critical_clear
            threshold = bands.critical_clear
        else:
            threshold = bands.warning
        assert t.value is not None  # a None value always clears
        word = {"liquidation_risk": "health factor", "volatility": "daily volatility"}
        what = word.get(t.kind, "concentration (HHI)")
        side = "above" if bands.higher_is_worse else "below"
        if t.previous is AlertLevel.CRITICAL:
            side = "below" if bands.higher_is_worse else "above"
        at_ms = epoch_ms(assessed_at)
        return RiskAlert(
            alert_id=str(uuid.uuid5(ALERT_NAMESPACE, f"{t.key}|{t.kind}|{t.level}|{at_ms}")),
            user_id=str(t.key),
            kind=t.kind,  # type: ignore[arg-type]
            severity=t.level.value,  # type: ignore[arg-type]
            message=f"{what} {t.value:.4g} {side} {threshold:g}: {t.previous} -> {t.level}",
            value=float(t.value),
            threshold=threshold,
            ts=assessed_at,
        )


class _Rows:
    """Valued positions of the users of one assessment, as columns for the vectorised figures."""

    def __init__(self) -> None:
        self.user: list[int] = []
        self.asset: list[int] = []
        self.value: list[float] = []
        self.lt: list[float] = []
        self.vol: list[float] = []
        self.kind: list[int] = []  # _KIND_CODES, or _OTHER
        self._codes: dict[str, int] = {}

    def add(self, user: int, asset: str, value: float, lt: float, vol: float, kind: int) -> None:
        self.user.append(user)
        self.asset.append(self._codes.setdefault(asset, len(self._codes)))
        self.value.append(value)
        self.lt.append(lt)
        self.vol.append(vol)
        self.kind.append(kind)

    def figures(self, n_users: int) -> _Figures:
        user = np.array(self.user, dtype=np.int64)
        asset = np.array(self.asset, dtype=np.int64)
        value = np.array(self.value, dtype=np.float64)
        lt = np.array(self.lt, dtype=np.float64)
        vol = np.array(self.vol, dtype=np.float64)
        kind = np.array(self.kind, dtype=np.int64)
        is_coll, is_debt = kind == 0, kind == 1

        def per_user(weights: np.ndarray, index: np.ndarray = user) -> np.ndarray:
            return np.bincount(index, weights=weights, minlength=n_users)

        collateral = per_user(np.where(is_coll, value, 0.0))
        debt = per_user(np.where(is_debt, value, 0.0))
        weighted = per_user(np.where(is_coll, value * lt, 0.0))
        # Per (user, asset): gross value for HHI and volatility, net exposure for VaR.
        n_assets = max(len(self._codes), 1)
        pair, inverse = np.unique(user * n_assets + asset, return_inverse=True)
        pair_user = pair // n_assets
        gross = np.bincount(inverse, weights=value, minlength=pair.size)
        signed = np.bincount(inverse, weights=np.where(is_debt, -value, value), minlength=pair.size)
        pair_vol = np.zeros(pair.size)
        pair_vol[inverse] = vol  # one volatility per asset, so any row of the pair gives it
        total = per_user(gross, pair_user)
        safe_total = np.where(total > 0, total, 1.0)
        shares = gross / safe_total[pair_user]
        return _Figures(
            collateral_usd=collateral,
            debt_usd=debt,
            weighted_collateral_usd=weighted,
            hhi=np.minimum(per_user(shares * shares, pair_user), 1.0),  # ≤ 1 up to rounding
            volatility_1d=per_user(gross * pair_vol, pair_user) / safe_total,
            var_95_1d_usd=Z_95_ONE_SIDED * per_user(np.abs(signed) * pair_vol, pair_user),
        )


@dataclass(frozen=True)
class _Figures:
    collateral_usd: np.ndarray
    debt_usd: np.ndarray
    weighted_collateral_usd: np.ndarray
    hhi: np.ndarray
    volatility_1d: np.ndarray
    var_95_1d_usd: np.ndarray

    def assessment(self, i: int, user_id: str, assessed_at: datetime) -> RiskAssessment:
        debt = float(self.debt_usd[i])
        collateral = float(self.collateral_usd[i])
        hf = float(self.weighted_collateral_usd[i]) / debt if debt > 0 else None
        concentration = float(self.hhi[i])
        return RiskAssessment(
            user_id=user_id,
            health_factor=hf,
            ltv=min(ltv(debt, collateral), LTV_CAP),
            collateral_usd=collateral,
            debt_usd=debt,
            risk_score=risk_score(hf, concentration, float(self.volatility_1d[i])),
            hhi=concentration,
            var_95_1d_usd=float(self.var_95_1d_usd[i]),
            assessed_at=assessed_at,
        )
