"""The daily analytics assets on real chDB: idempotent partitions, backfill, checks.

Three days of deterministic synthetic ticks and yield snapshots (timestamp ties within and across
Kafka partitions, corrected yield observations, gaps shorter and longer than the TWAP carry
bound, ticks on minute and day boundaries, ticks without volume) go into the sink's tables
through Arrow; the assets' rows are compared with a direct Python computation of each table's
contract.

chDB hosts one database path per process, so the whole module shares one path (module-scoped
fixture), never the default ``.ys/clickhouse``; every client is closed after its unit of work.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from ys_platform.analytics.queries import ANALYTICS_TABLES, MAX_CARRY_MS, MINUTE_MS
from ys_platform.assets.analytics import (
    analytics_assets,
    analytics_checks,
    analytics_job,
    analytics_run_config,
    clickhouse_table_key,
)
from ys_platform.catalog.tables import table_spec
from ys_platform.processing.prices import twap as reference_twap
from ys_platform.resources.clickhouse import ClickHouseResource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PREFIX = "an_"  # as the sink's namespace prefix would be
DAYS = (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3))
EMPTY_DAY = date(2026, 3, 10)
SEED = 20_260_301
SYMBOLS = ("ETH/USD", "BTC/USD", "SOL/USD")
SOURCES = ("binance", "coinbase", "chainlink")
PARTITIONS = 3
DAY_MS = 86_400_000
# Relative tolerance between ClickHouse's and Python's float sums (different summation orders
# of the same terms: ~1e-16 per addition, a few hundred terms at most).
RTOL = 1e-12


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _midnight_ms(day: date) -> int:
    return _ms(datetime(day.year, day.month, day.day, tzinfo=UTC))


@dataclass(frozen=True)
class Tick:
    symbol: str
    price: float
    volume: float | None
    source: str
    ts_ms: int
    partition: int
    offset: int

    @property
    def order(self) -> tuple[int, int, int, float]:
        return (self.ts_ms, self.partition, self.offset, self.price)


@dataclass(frozen=True)
class Snapshot:
    strategy_id: str
    protocol: str
    chain: str
    asset: str
    apy: float
    tvl_usd: float
    ts_ms: int
    partition: int
    offset: int


class _Offsets:
    def __init__(self) -> None:
        self._next: dict[int, int] = defaultdict(int)

    def take(self, partition: int) -> int:
        self._next[partition] += 1
        return self._next[partition]


def synthetic_ticks(seed: int) -> list[Tick]:
    """Ticks from 10 minutes before the first day (carry into it) to the end of the last."""
    rng = random.Random(seed)
    offsets = _Offsets()
    ticks: list[Tick] = []
    start = _midnight_ms(DAYS[0]) - 10 * MINUTE_MS
    end = _midnight_ms(DAYS[-1]) + DAY_MS
    for symbol in SYMBOLS:
        t = start + rng.randrange(MINUTE_MS)
        price = 100.0 * (1 + SYMBOLS.index(symbol))
        while t < end:
            # 1-3 ticks at the same timestamp: ties broken by (partition, offset).
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                price *= 1 + rng.gauss(0, 0.002)
                partition = rng.randrange(PARTITIONS)
                ticks.append(
                    Tick(
                        symbol,
                        round(price, 6),
                        None if rng.random() < 0.2 else round(rng.uniform(0.1, 5.0), 4),
                        rng.choice(SOURCES),
                        t,
                        partition,
                        offsets.take(partition),
                    )
                )
            roll = rng.random()
            if roll < 0.01:  # a gap longer than the carry bound: no carry after it
                t += MAX_CARRY_MS + rng.randrange(20 * MINUTE_MS)
            elif roll < 0.03:  # a gap of 1-4 minutes: the last price carries over it
                t += rng.randrange(MINUTE_MS, MAX_CARRY_MS - MINUTE_MS)
            else:
                t += rng.randrange(1, 40_000)
    # Boundaries by hand: the last millisecond of day 1; a tie exactly at day 2's midnight (the
    # prior tick would carry for zero time: nothing carried); a tick exactly on a minute start
    # after a gap longer than the carry bound; two after short gaps (carried); one mid-minute
    # after a long gap (the minute is covered from that tick only).
    d2 = _midnight_ms(DAYS[1])
    for ts, price, partition in (
        (d2 - 1, 1.0, 0),
        (d2, 2.0, 1),
        (d2, 3.0, 0),
        (d2 + 7 * MINUTE_MS, 4.0, 2),
        (d2 + 9 * MINUTE_MS + 30_000, 5.0, 1),
        (d2 + 12 * MINUTE_MS + 30_000, 6.0, 1),
        (d2 + 20 * MINUTE_MS + 15_000, 7.0, 0),
    ):
        ticks.append(Tick("ARB/USD", price, 1.0, "binance", ts, partition, offsets.take(partition)))
    return ticks


def synthetic_yields(seed: int) -> list[Snapshot]:
    rng = random.Random(seed + 1)
    offsets = _Offsets()
    strategies = (
        ("s1", "aave", "ethereum", "USDC"),
        ("s2", "aave", "ethereum", "USDC"),  # two strategies in one (protocol, asset, chain)
        ("s3", "compound", "ethereum", "USDC"),
        ("s4", "aave", "arbitrum", "ETH"),
    )
    rows: list[Snapshot] = []
    for index, (strategy_id, protocol, chain, asset) in enumerate(strategies):
        # defi.yields is keyed by strategy_id: all of a strategy's records share a partition.
        partition = index % PARTITIONS
        t = _midnight_ms(DAYS[0]) + rng.randrange(3_600_000)
        end = _midnight_ms(DAYS[-1] if strategy_id != "s4" else DAYS[1]) + DAY_MS
        tvl = rng.uniform(1e6, 1e8)
        while t < end:
            tvl *= 1 + rng.gauss(0, 0.01)
            rows.append(
                Snapshot(
                    strategy_id,
                    protocol,
                    chain,
                    asset,
                    round(rng.uniform(1.0, 12.0), 4),
                    round(tvl, 2),
                    t,
                    partition,
                    offsets.take(partition),
                )
            )
            # 0: a second observation at the same time, i.e. a correction of the first
            # (yield_data is versioned by (protocol, strategy_id, ts): the later offset wins).
            t += rng.choice((0, 1_800_000, 3_600_000, 5_400_000))
    return rows


# --- direct computations of the contracts ---


def _in_day(ts_ms: int, day: date) -> bool:
    return _midnight_ms(day) <= ts_ms < _midnight_ms(day) + DAY_MS


def expected_ohlcv(ticks: list[Tick], day: date) -> dict[tuple[str, int], tuple]:
    groups: dict[tuple[str, int], list[Tick]] = defaultdict(list)
    for tick in ticks:
        if _in_day(tick.ts_ms, day):
            groups[(tick.symbol, tick.ts_ms // MINUTE_MS * MINUTE_MS)].append(tick)
    out = {}
    for key, group in groups.items():
        group.sort(key=lambda t: t.order)
        prices = [t.price for t in group]
        volume = sum(sorted(t.volume for t in group if t.volume is not None))
        out[key] = (
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
            volume,
            len(group),
            len({t.source for t in group}),
        )
    return out


def expected_twap(ticks: list[Tick], day: date) -> dict[tuple[str, int], tuple]:
    """Per minute: TWAP, ticks, covered ms, carried price, min and max held price."""
    by_symbol: dict[str, list[Tick]] = defaultdict(list)
    for tick in ticks:
        by_symbol[tick.symbol].append(tick)
    out = {}
    for symbol, series in by_symbol.items():
        series.sort(key=lambda t: t.order)
        minutes: dict[int, list[int]] = defaultdict(list)  # minute → indices into series
        for i, tick in enumerate(series):
            if _in_day(tick.ts_ms, day):
                minutes[tick.ts_ms // MINUTE_MS * MINUTE_MS].append(i)
        for minute, idx in minutes.items():
            end = minute + MINUTE_MS
            weighted = 0.0
            for i in idx:
                nxt = series[i + 1].ts_ms if i + 1 < len(series) else end
                weighted += series[i].price * (min(nxt, end) - series[i].ts_ms)
            first = series[idx[0]]
            covered = end - first.ts_ms
            carried = None
            prior = series[idx[0] - 1] if idx[0] > 0 else None
            if prior is not None and prior.ts_ms > minute - MAX_CARRY_MS and first.ts_ms > minute:
                carried = prior.price
                weighted += prior.price * (first.ts_ms - minute)
                covered = MINUTE_MS
            held = [series[i].price for i in idx] + ([carried] if carried is not None else [])
            out[(symbol, minute)] = (
                weighted / covered,
                len(idx),
                covered,
                carried,
                min(held),
                max(held),
            )
    return out


def expected_yields(rows: list[Snapshot], day: date) -> dict[tuple[str, str, str], tuple]:
    latest: dict[tuple[str, str, int], Snapshot] = {}  # the last version of each observation
    for row in sorted(rows, key=lambda r: r.offset):
        latest[(row.protocol, row.strategy_id, row.ts_ms)] = row
    groups: dict[tuple[str, str, str], list[Snapshot]] = defaultdict(list)
    for row in latest.values():
        if _in_day(row.ts_ms, day):
            groups[(row.protocol, row.asset, row.chain)].append(row)
    out = {}
    for key, group in groups.items():
        apys = [r.apy for r in group]
        last: dict[str, Snapshot] = {}
        for r in sorted(group, key=lambda r: (r.ts_ms, r.partition, r.offset, r.tvl_usd)):
            last[r.strategy_id] = r
        out[key] = (
            sum(sorted(apys)) / len(apys),
            min(apys),
            max(apys),
            sum(sorted(r.tvl_usd for r in last.values())),
            len(last),
            len(group),
        )
    return out


# --- fixtures and helpers ---


def _utc(ms: list[int]) -> pa.Array:
    return pa.array(ms, type=pa.timestamp("ms", tz="UTC"))


def _insert_ticks(client: Any, ticks: list[Tick]) -> None:
    n = len(ticks)
    table = pa.table(
        {
            "symbol": [t.symbol for t in ticks],
            "base": [t.symbol.split("/")[0] for t in ticks],
            "quote": [t.symbol.split("/")[1] for t in ticks],
            "price": pa.array([t.price for t in ticks], pa.float64()),
            "volume": pa.array([t.volume for t in ticks], pa.float64()),
            "source": [t.source for t in ticks],
            "chain": ["ethereum"] * n,
            "venue": [t.source for t in ticks],
            "ts": _utc([t.ts_ms for t in ticks]),
            "_topic": ["market.prices"] * n,
            "_partition": pa.array([t.partition for t in ticks], pa.uint16()),
            "_offset": pa.array([t.offset for t in ticks], pa.uint64()),
        }
    )
    client.insert_arrow(f"{PREFIX}market_data", table)


def _insert_yields(client: Any, rows: list[Snapshot]) -> None:
    table = pa.table(
        {
            "strategy_id": [r.strategy_id for r in rows],
            "protocol": [r.protocol for r in rows],
            "chain": [r.chain for r in rows],
            "asset": [r.asset for r in rows],
            "apy": pa.array([r.apy for r in rows], pa.float64()),
            "tvl_usd": pa.array([r.tvl_usd for r in rows], pa.float64()),
            "ts": _utc([r.ts_ms for r in rows]),
            "_topic": ["defi.yields"] * len(rows),
            "_partition": pa.array([r.partition for r in rows], pa.uint16()),
            "_offset": pa.array([r.offset for r in rows], pa.uint64()),
        }
    )
    client.insert_arrow(f"{PREFIX}yield_data", table)


@dataclass
class Env:
    clickhouse: ClickHouseResource
    ticks: list[Tick]
    yields: list[Snapshot]
    defs: dg.Definitions


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    clickhouse = ClickHouseResource(dsn=f"chdb://{tmp_path_factory.mktemp('analytics')}/ch")
    ticks = synthetic_ticks(SEED)
    yields = synthetic_yields(SEED)
    # Shuffled and in several inserts: physical order and parts unlike event order.
    shuffled = ticks[:]
    random.Random(SEED).shuffle(shuffled)
    with clickhouse.get_client() as client:
        client.command(table_spec("market.prices", "market_data").ddl(PREFIX))
        client.command(table_spec("defi.yields", "yield_data").ddl(PREFIX))
        third = len(shuffled) // 3
        for chunk in (shuffled[:third], shuffled[third : 2 * third], shuffled[2 * third :]):
            _insert_ticks(client, chunk)
        _insert_yields(client, yields)
    defs = dg.Definitions(
        assets=analytics_assets,
        asset_checks=analytics_checks,
        jobs=[analytics_job],
        resources={"clickhouse": clickhouse},
    )
    yield Env(clickhouse, ticks, yields, defs)


def materialize(
    env: Env, day: date, prefix: str = PREFIX, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """One partition of the three assets and their checks, as the daily job runs it."""
    return dg.materialize(
        [*analytics_assets, *analytics_checks],
        partition_key=day.isoformat(),
        resources={"clickhouse": env.clickhouse},
        run_config=analytics_run_config(prefix),
        **kwargs,
    )


def run_checks(env: Env, day: date) -> dict[str, dg.AssetCheckEvaluation]:
    """Only the checks of ``day`` (the assets are not recomputed), through the daily job."""
    job = env.defs.resolve_job_def(analytics_job.name)
    result = job.execute_in_process(
        partition_key=day.isoformat(),
        op_selection=[c.op.name for c in analytics_checks],
        run_config=analytics_run_config(PREFIX, analytics_checks),
    )
    assert not result.get_asset_materialization_events()
    return {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}


def read_rows(env: Env, table: str, day: date) -> list[tuple]:
    spec = ANALYTICS_TABLES[table]
    columns = [f"toUnixTimestamp({c}) * 1000" if c == "minute" else c for c in spec.column_names]
    where = f"day = toDate('{day}')" if spec.time_is_date else f"toDate(minute) = toDate('{day}')"
    with env.clickhouse.get_client() as client:
        return client.query(
            f"SELECT {', '.join(columns)} FROM {PREFIX}{table} WHERE {where} "
            f"ORDER BY {', '.join(spec.order_by)}"
        ).result_rows


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        e.asset_key.path[-1]: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


@pytest.fixture(scope="module")
def backfill(env: Env) -> dict[date, dg.ExecuteInProcessResult]:
    """The three days, one partition (one run) each, as a Dagster backfill launches them."""
    return {day: materialize(env, day) for day in DAYS}


# --- tests ---


def test_materializing_a_day_twice_gives_identical_rows(env: Env) -> None:
    day = DAYS[1]
    first = materialize(env, day)
    rows_first = {t: read_rows(env, t, day) for t in ANALYTICS_TABLES}
    second = materialize(env, day)
    rows_second = {t: read_rows(env, t, day) for t in ANALYTICS_TABLES}
    for table in ANALYTICS_TABLES:
        assert rows_first[table], table
        assert rows_second[table] == rows_first[table], table  # exact, floats included
    assert _metadata(second) == _metadata(first)
    # No staging table is left behind.
    with env.clickhouse.get_client() as client:
        tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert not [t for t in tables if "__stage_" in t]


def test_backfill_matches_direct_computation(env: Env, backfill: dict) -> None:
    for day in DAYS:
        assert backfill[day].success
        ohlcv = expected_ohlcv(env.ticks, day)
        got = {(r[0], r[1]): r[2:] for r in read_rows(env, "ohlcv_1m", day)}
        assert got.keys() == ohlcv.keys()
        for key, (o, h, lo, c, volume, ticks, sources) in ohlcv.items():
            g = got[key]
            assert g[:4] == (o, h, lo, c), key  # picked, not computed: exact
            assert g[4] == pytest.approx(volume, rel=RTOL, abs=1e-12), key
            assert g[5:] == (ticks, sources), key

        twap = expected_twap(env.ticks, day)
        got = {(r[0], r[1]): r[2:] for r in read_rows(env, "twap_1m", day)}
        assert got.keys() == twap.keys() == ohlcv.keys()
        for key, (value, ticks, covered, carried, low, high) in twap.items():
            g = got[key]
            assert g[0] == pytest.approx(value, rel=RTOL), key
            assert g[1:] == (ticks, covered, carried, low, high), key

        yields = expected_yields(env.yields, day)
        got = {(r[1], r[2], r[3]): r[4:] for r in read_rows(env, "yield_history_1d", day)}
        assert got.keys() == yields.keys()
        for key, (avg, low, high, tvl, strategies, snapshots) in yields.items():
            g = got[key]
            assert g[0] == pytest.approx(avg, rel=RTOL), key
            assert g[1:3] == (low, high), key
            assert g[3] == pytest.approx(tvl, rel=RTOL), key
            assert g[4:] == (strategies, snapshots), key

        meta = _metadata(backfill[day])
        assert meta["ohlcv_1m"]["dagster/row_count"] == len(ohlcv)
        assert meta["twap_1m"]["dagster/row_count"] == len(ohlcv)
        assert meta["yield_history_1d"]["dagster/row_count"] == len(yields)
        assert meta["ohlcv_1m"]["symbols"] == len({s for s, _ in ohlcv})
        first = datetime.fromtimestamp(min(m for _, m in ohlcv) / 1000, UTC)
        assert meta["ohlcv_1m"]["min_time"] == f"{first:%Y-%m-%d %H:%M:%S}"


def test_synthetic_data_covers_the_edge_cases(env: Env) -> None:
    """The data really has what the docstring promises, so the comparisons above mean something."""
    twap = expected_twap(env.ticks, DAYS[1])
    carried = [v for v in twap.values() if v[3] is not None]
    assert carried and len(carried) < len(twap)
    assert any(v[2] < MINUTE_MS for v in twap.values())  # minutes covered only in part
    ties = defaultdict(int)
    for t in env.ticks:
        ties[(t.symbol, t.ts_ms)] += 1
    assert max(ties.values()) >= 3
    assert any(t.volume is None for t in env.ticks)
    # Corrected yield observations (same strategy and ts), which yield_data reads FINAL.
    observations = defaultdict(int)
    for y in env.yields:
        observations[(y.strategy_id, y.ts_ms)] += 1
    assert 10 <= sum(n - 1 for n in observations.values()) < len(env.yields) // 2
    d2 = _midnight_ms(DAYS[1])
    # The hand-made ARB/USD minutes. At midnight a tie: the partition-0 tick (3.0) is first in
    # event order and holds for zero time, the partition-1 tick (2.0) holds the whole minute.
    assert twap[("ARB/USD", d2)] == (2.0, 2, MINUTE_MS, None, 2.0, 3.0)
    assert twap[("ARB/USD", d2 + 7 * MINUTE_MS)] == (4.0, 1, MINUTE_MS, None, 4.0, 4.0)
    # 4.0 carries 30 s, then 5.0 holds 30 s.
    assert twap[("ARB/USD", d2 + 9 * MINUTE_MS)] == (4.5, 1, MINUTE_MS, 4.0, 4.0, 5.0)
    assert twap[("ARB/USD", d2 + 12 * MINUTE_MS)][2:4] == (MINUTE_MS, 5.0)
    assert twap[("ARB/USD", d2 + 20 * MINUTE_MS)] == (7.0, 1, 45_000, None, 7.0, 7.0)
    assert expected_ohlcv(env.ticks, DAYS[1])[("ARB/USD", d2)][:4] == (3.0, 3.0, 2.0, 2.0)


def test_twap_agrees_with_the_processor_definition(env: Env, backfill: dict) -> None:
    """Where no tick sits exactly on a minute boundary, the minute [m, m+60 s) is the processor's
    window (m, m+60 s], so ``processing.prices.twap`` (the streaming contract) gives the same."""
    day = DAYS[0]
    rows = read_rows(env, "twap_1m", day)
    by_symbol: dict[str, list[Tick]] = defaultdict(list)
    for tick in env.ticks:
        by_symbol[tick.symbol].append(tick)
    for series in by_symbol.values():
        series.sort(key=lambda t: t.order)
    boundary = {(t.symbol, t.ts_ms) for t in env.ticks if t.ts_ms % MINUTE_MS == 0}
    compared = 0
    for symbol, minute, value, *_ in rows[::25]:  # a sample: the reference is per window
        if (symbol, minute) in boundary or (symbol, minute + MINUTE_MS) in boundary:
            continue
        series = by_symbol[symbol]
        expected = reference_twap(
            [t.ts_ms for t in series], [t.price for t in series], minute + MINUTE_MS
        )
        assert value == pytest.approx(expected, rel=RTOL), (symbol, minute)
        compared += 1
    assert compared > 50


def test_checks_pass_then_catch_a_corrupted_row(env: Env, backfill: dict) -> None:
    day = DAYS[2]
    for result in backfill.values():
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == len(ANALYTICS_TABLES)
        assert all(e.passed for e in evaluations), [e.metadata for e in evaluations]
    assert all(e.passed for e in run_checks(env, day).values())

    symbol = SYMBOLS[0]
    with env.clickhouse.get_client() as client:
        # high below open; a TWAP outside every price that held; mean APY above the max; and
        # rows for keys the source does not have (a symbol that never ticked).
        client.command(
            f"INSERT INTO {PREFIX}ohlcv_1m VALUES "
            f"('{symbol}', '{day} 12:00:00', 10, 9, 8, 9.5, 1, 1, 1), "
            f"('ZZZ/USD', '{day} 12:00:00', 10, 11, 9, 10, 1, 1, 1)"
        )
        client.command(
            f"INSERT INTO {PREFIX}twap_1m VALUES "
            f"('ZZZ/USD', '{day} 12:00:00', 50, 1, 60000, NULL, 10, 20)"
        )
        client.command(
            f"INSERT INTO {PREFIX}yield_history_1d VALUES "
            f"('{day}', 'zzz', 'USDC', 'ethereum', 9, 1, 5, 100, 1, 1)"
        )
    failed = run_checks(env, day)
    assert not any(e.passed for e in failed.values())
    meta = {t: {k: v.value for k, v in e.metadata.items()} for t, e in failed.items()}
    assert meta["ohlcv_1m"]["bad_rows"] == 1  # the row with high < open
    assert meta["ohlcv_1m"]["rows"] == meta["ohlcv_1m"]["expected_rows"] + 2
    assert meta["twap_1m"]["bad_rows"] == 1
    assert meta["yield_history_1d"]["bad_rows"] == 1
    assert all(e.partition == day.isoformat() for e in failed.values())

    # Re-materializing the day replaces the partition: the corruption is gone.
    assert materialize(env, day).success
    assert all(e.passed for e in run_checks(env, day).values())


def test_a_day_without_source_rows_is_empty(env: Env, backfill: dict) -> None:
    result = materialize(env, EMPTY_DAY)
    meta = _metadata(result)
    for table in ANALYTICS_TABLES:
        assert meta[table]["dagster/row_count"] == 0
        assert meta[table]["partition_action"].startswith("dropped")
        assert read_rows(env, table, EMPTY_DAY) == []
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_missing_source_table_fails_with_a_clear_message(env: Env) -> None:
    result = materialize(env, DAYS[0], prefix="nosink_", raise_on_error=False)
    assert not result.success
    failures = [
        e.event_specific_data.error.message  # type: ignore[union-attr]
        for e in result.all_events
        if e.is_step_failure
    ]
    assert any("'nosink_market_data'" in m and "ClickHouse sink" in m for m in failures), failures


def test_asset_keys_and_lineage(env: Env) -> None:
    graph = env.defs.resolve_asset_graph()
    for name, spec in ANALYTICS_TABLES.items():
        node = graph.get(clickhouse_table_key(name))
        assert node.parent_keys == {clickhouse_table_key(spec.source)}
