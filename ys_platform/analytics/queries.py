"""SQL of the daily analytics tables, built as plain strings: no client, no I/O, unit-testable.

Three tables are derived from the ClickHouse sink's tables, one day (UTC) at a time:

* ``ohlcv_1m`` from ``market_data``: per symbol and minute, open/high/low/close, volume, ticks and
  distinct sources, across every source, chain and venue of the symbol;
* ``twap_1m`` from ``market_data``: per symbol and minute, the arithmetic time-weighted average
  price (see :func:`twap_1m_select` for the exact contract);
* ``yield_history_1d`` from ``yield_data``: per protocol, asset and chain and day, the mean, min
  and max APY and the TVL at the end of the day.

Conventions shared by every builder:

* **Event order** of ticks is ``(ts, _partition, _offset, price)``: the Kafka provenance breaks
  timestamp ties the way the log does (the sink stores each record once, so the triple is unique),
  and ``price`` makes even a duplicated record order deterministically. ``open`` is the first tick
  of the minute in that order, ``close`` the last.
* A minute is the half-open interval ``[minute, minute + 60 s)`` (``toStartOfMinute``), a day
  ``[00:00, 24:00)`` UTC; a row exists for a symbol and minute only if a tick fell inside it, so
  ``ohlcv_1m`` and ``twap_1m`` have the same keys.
* **Deterministic floating-point sums**: ``sum()`` adds in whatever order parts and threads
  deliver rows, which can change the last bits between two runs (and merges of the source change
  that order). Re-materializing a day must give *identical* rows, so every float sum here is
  ``arraySum(arraySort(groupArray(x)))``: the same multiset of values is always added in the same
  (sorted) order. Groups are one symbol-minute or one protocol-day, so the arrays stay small.
* **Replacing a partition**: the day is computed into a staging table shaped like the target
  (``CREATE TABLE … AS``) and swapped in with ``ALTER TABLE … REPLACE PARTITION ID … FROM``, which
  is atomic for readers. ClickHouse 26 refuses to replace from an *empty* staging partition (it
  would silently drop the target's data), so a day with no source rows drops the target's
  partition instead (:attr:`RefreshPlan.drop_partition`), which works on any server version.

Table names are validated identifiers and dates come from :class:`datetime.date`, so rendering
them as literals is safe; the statements are then readable and compared exactly in tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType

from ys_platform.catalog.tables import table_name
from ys_platform.processing.prices import DEFAULT_MAX_CARRY_MS, WINDOW_MS

__all__ = [
    "ANALYTICS_TABLES",
    "MAX_CARRY_MS",
    "MINUTE_MS",
    "AnalyticsTable",
    "RefreshPlan",
    "check_sql",
    "day_literal",
    "parse_day",
    "partition_id",
    "refresh_plan",
    "select_sql",
    "stage_table_name",
    "summary_sql",
    "target_ddl",
]

MINUTE_MS = WINDOW_MS
"""One minute in milliseconds: the bucket of ``ohlcv_1m`` and ``twap_1m``."""

MAX_CARRY_MS = DEFAULT_MAX_CARRY_MS
"""How old the last tick before a minute may be and still carry into it: the price-aggregation
processor's bound (5 minutes), so ``twap_1m`` and ``market.analytics`` agree on what a stale
price is. It also bounds how far before the day a partition reads: one partition's result
depends only on the source rows of ``[day − 5 min, day + 24 h)``."""

DAY_MS = 86_400_000

TWAP_BOUND_RTOL = 1e-12
"""Relative slack of the check "twap lies between the lowest and highest price that held": a
weighted mean of floats can land a few ulps (~1e-16 relative) outside the exact range."""

APY_BOUND_RTOL = 1e-12
"""Same slack for "mean APY lies between min and max APY" (sum / count is rounded too)."""

# The event order of ticks (see the module docstring); the trailing price only matters for an
# exact duplicate record, which the exactly-once sink never writes.
EVENT_ORDER = "ts, _partition, _offset, price"


@dataclass(frozen=True)
class AnalyticsTable:
    """A derived table: its columns, physical layout, source and how to summarise a partition."""

    name: str
    source: str
    """The sink table it reads (unprefixed), e.g. ``market_data``."""
    columns: tuple[tuple[str, str], ...]
    order_by: tuple[str, ...]
    time_column: str
    """The column whose UTC date is the partition (and the Dagster partition key)."""
    entity_column: str
    """What the ``symbols`` metadata counts: ``symbol`` for prices, ``asset`` for yields."""
    time_is_date: bool = False
    source_is_versioned: bool = False
    """The source is a versioned sink table (``TableLayout.versioned``): read it with FINAL."""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    @property
    def partition_by(self) -> str:
        return self.time_column if self.time_is_date else f"toDate({self.time_column})"


OHLCV_1M = AnalyticsTable(
    name="ohlcv_1m",
    source="market_data",
    columns=(
        ("symbol", "LowCardinality(String)"),
        ("minute", "DateTime('UTC')"),
        ("open", "Float64"),
        ("high", "Float64"),
        ("low", "Float64"),
        ("close", "Float64"),
        ("volume", "Float64"),
        ("ticks", "UInt64"),
        ("sources", "UInt64"),
    ),
    order_by=("symbol", "minute"),
    time_column="minute",
    entity_column="symbol",
)

TWAP_1M = AnalyticsTable(
    name="twap_1m",
    source="market_data",
    columns=(
        ("symbol", "LowCardinality(String)"),
        ("minute", "DateTime('UTC')"),
        ("twap", "Float64"),
        ("ticks", "UInt64"),
        # At most 60,000: the part of the minute some price held (all of it with a carried price).
        ("covered_ms", "UInt32"),
        ("carried_price", "Nullable(Float64)"),
        ("min_price", "Float64"),
        ("max_price", "Float64"),
    ),
    order_by=("symbol", "minute"),
    time_column="minute",
    entity_column="symbol",
)

YIELD_HISTORY_1D = AnalyticsTable(
    name="yield_history_1d",
    source="yield_data",
    columns=(
        ("day", "Date"),
        ("protocol", "LowCardinality(String)"),
        ("asset", "LowCardinality(String)"),
        ("chain", "LowCardinality(String)"),
        ("avg_apy", "Float64"),
        ("min_apy", "Float64"),
        ("max_apy", "Float64"),
        ("tvl_usd", "Float64"),
        ("strategies", "UInt64"),
        ("snapshots", "UInt64"),
    ),
    order_by=("protocol", "asset", "chain", "day"),
    time_column="day",
    entity_column="asset",
    time_is_date=True,
    source_is_versioned=True,
)

ANALYTICS_TABLES: Mapping[str, AnalyticsTable] = MappingProxyType(
    {t.name: t for t in (OHLCV_1M, TWAP_1M, YIELD_HISTORY_1D)}
)


# --- literals ------------------------------------------------------------------------------------


def parse_day(partition_key: str) -> date:
    """The day of a daily partition key (``YYYY-MM-DD``); a ValueError naming a bad key."""
    try:
        return date.fromisoformat(partition_key)
    except (TypeError, ValueError):
        raise ValueError(
            f"{partition_key!r} is not a daily partition key: expected YYYY-MM-DD"
        ) from None


def partition_id(day: date) -> str:
    """ClickHouse's partition id of ``day`` under ``PARTITION BY toDate(...)``: ``YYYYMMDD``."""
    return day.strftime("%Y%m%d")


def day_literal(day: date) -> str:
    return f"toDate('{day.isoformat()}')"


def _midnight_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _ts_literal(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return f"toDateTime64('{moment:%Y-%m-%d %H:%M:%S}.{epoch_ms % 1000:03d}', 3, 'UTC')"


def _day_range(column: str, day: date, lookback_ms: int = 0) -> str:
    start_ms = _midnight_ms(day)
    return (
        f"{column} >= {_ts_literal(start_ms - lookback_ms)} "
        f"AND {column} < {_ts_literal(start_ms + DAY_MS)}"
    )


def _stable_sum(expr: str) -> str:
    """A float sum independent of row order (see the module docstring)."""
    return f"arraySum(arraySort(groupArray({expr})))"


def _qualified(prefix: str, name: str) -> str:
    return f"`{table_name(prefix + name)}`"


def _source(prefix: str, table: AnalyticsTable) -> str:
    """The sink table ``table`` reads, with ``FINAL`` if its rows are versioned: only the latest
    version of each row counts (a corrected observation replaces the first one)."""
    source = _qualified(prefix, table.source)
    return f"{source} FINAL" if table.source_is_versioned else source


# --- DDL and the replace-partition plan ----------------------------------------------------------


def target_ddl(table: AnalyticsTable, prefix: str = "") -> str:
    """``CREATE TABLE IF NOT EXISTS`` for a derived table: one partition per day, the unit a
    materialization replaces."""
    columns = ",\n".join(f"    `{name}` {type_}" for name, type_ in table.columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {_qualified(prefix, table.name)}\n(\n{columns}\n)\n"
        "ENGINE = MergeTree\n"
        f"PARTITION BY {table.partition_by}\n"
        f"ORDER BY ({', '.join(table.order_by)})"
    )


def stage_table_name(table: AnalyticsTable, prefix: str, day: date, token: str) -> str:
    """The staging table of one materialization: per day and per run (``token``), so two runs of
    different days, or a retry beside a stuck run, never share one."""
    return table_name(f"{prefix}{table.name}__stage_{partition_id(day)}_{token}")


def select_sql(table: AnalyticsTable, day: date, prefix: str = "") -> str:
    """The ``SELECT`` computing ``day``'s rows of ``table``, columns in the table's order."""
    source = _source(prefix, table)
    if table.name == OHLCV_1M.name:
        return ohlcv_1m_select(source, day)
    if table.name == TWAP_1M.name:
        return twap_1m_select(source, day)
    if table.name == YIELD_HISTORY_1D.name:
        return yield_history_1d_select(source, day)
    raise KeyError(f"no query for {table.name!r}; tables: {', '.join(ANALYTICS_TABLES)}")


@dataclass(frozen=True)
class RefreshPlan:
    """The statements that recompute one day of a table and swap it in, in order:

    ``create_target``, ``drop_stage``, ``create_stage``, ``insert``, then ``count_stage``; if it
    counts rows, ``replace``, else ``drop_partition``; finally ``drop_stage`` again (always).
    """

    source: str
    target: str
    stage: str
    create_target: str
    drop_stage: str
    create_stage: str
    insert: str
    count_stage: str
    replace: str
    drop_partition: str


def refresh_plan(table: AnalyticsTable, day: date, *, prefix: str = "", token: str) -> RefreshPlan:
    target = _qualified(prefix, table.name)
    stage = f"`{stage_table_name(table, prefix, day, token)}`"
    part = partition_id(day)
    return RefreshPlan(
        source=prefix + table.source,
        target=prefix + table.name,
        stage=stage.strip("`"),
        create_target=target_ddl(table, prefix),
        # SYNC: without it chDB/ClickHouse keeps a dropped table's data on disk for a while.
        drop_stage=f"DROP TABLE IF EXISTS {stage} SYNC",
        create_stage=f"CREATE TABLE {stage} AS {target}",
        insert=(
            f"INSERT INTO {stage} ({', '.join(table.column_names)})\n"
            f"{select_sql(table, day, prefix)}"
        ),
        count_stage=f"SELECT count() FROM {stage}",
        replace=f"ALTER TABLE {target} REPLACE PARTITION ID '{part}' FROM {stage}",
        drop_partition=f"ALTER TABLE {target} DROP PARTITION ID '{part}'",
    )


# --- the three computations ----------------------------------------------------------------------


def ohlcv_1m_select(source: str, day: date) -> str:
    """Per symbol and minute of ``day``: OHLC in event order, summed volume (ticks without a
    volume count as none), ticks and distinct sources."""
    return (
        "SELECT\n"
        "    symbol,\n"
        "    toDateTime(toStartOfMinute(ts), 'UTC') AS minute,\n"
        f"    argMin(price, ({EVENT_ORDER})) AS open,\n"
        "    max(price) AS high,\n"
        "    min(price) AS low,\n"
        f"    argMax(price, ({EVENT_ORDER})) AS close,\n"
        # groupArray skips NULLs: a minute whose ticks carry no volume has volume 0.
        f"    {_stable_sum('volume')} AS volume,\n"
        "    count() AS ticks,\n"
        "    uniqExact(source) AS sources\n"
        f"FROM {source}\n"
        f"WHERE {_day_range('ts', day)}\n"
        "GROUP BY symbol, minute"
    )


def twap_1m_select(source: str, day: date) -> str:
    """Per symbol and minute of ``day`` with at least one tick: the arithmetic TWAP.

    Contract (all sources of a symbol together, ticks in event order):

    * each tick's price holds from its ``ts`` until the next tick of the symbol, and at most
      until the end of its minute;
    * the last tick before the minute (the *carried* tick) holds from the minute's start until
      the first tick inside, if it is less than :data:`MAX_CARRY_MS` older than the minute start;
    * TWAP = Σ price × held time / covered time, where covered time is the whole minute with a
      carried tick and ``minute end − first tick`` without one (never zero: the first tick lies
      inside the half-open minute).

    Why SQL and not Python over Arrow: the day's ticks stay in ClickHouse (a ClickHouse server
    in production holds millions of ticks a day; only the result rows move), the computation is
    one ``INSERT … SELECT`` like the other tables, and the window functions express "the next
    and previous tick of the symbol" directly. ``lagInFrame``/``leadInFrame`` over
    ``toNullable`` values give NULL at a symbol's first/last tick. Timestamps are integer
    milliseconds throughout, so held and covered times are exact; only the weighted sum is
    floating point (and order-independent, see the module docstring).
    """
    start_ms = _midnight_ms(day)
    frame = f"PARTITION BY symbol ORDER BY {EVENT_ORDER}"
    contribution = "price * hold_ms + ifNull(prev_price, 0) * carry_ms"
    return (
        "SELECT\n"
        "    symbol,\n"
        "    toDateTime(intDiv(minute_ms, 1000), 'UTC') AS minute,\n"
        f"    {_stable_sum(contribution)} / sum(hold_ms + carry_ms) AS twap,\n"
        "    count() AS ticks,\n"
        "    toUInt32(sum(hold_ms + carry_ms)) AS covered_ms,\n"
        # Only the minute's first tick can have carry_ms > 0; NULL when nothing carried in.
        "    anyIf(prev_price, carry_ms > 0) AS carried_price,\n"
        # ifNull keeps the columns non-Nullable; it never applies when carry_ms > 0.
        "    min(if(carry_ms > 0, least(price, ifNull(prev_price, price)), price)) AS min_price,\n"
        "    max(if(carry_ms > 0, greatest(price, ifNull(prev_price, price)), price))"
        " AS max_price\n"
        "FROM\n"
        "(\n"
        "    SELECT\n"
        "        symbol,\n"
        "        price,\n"
        "        minute_ms,\n"
        f"        least(ifNull(next_ts_ms, minute_ms + {MINUTE_MS}), minute_ms + {MINUTE_MS})"
        " - ts_ms AS hold_ms,\n"
        "        if(prev_ts_ms < minute_ms"
        f" AND prev_ts_ms > minute_ms - {MAX_CARRY_MS}, ts_ms - minute_ms, 0) AS carry_ms,\n"
        "        prev_price\n"
        "    FROM\n"
        "    (\n"
        "        SELECT\n"
        "            symbol,\n"
        "            price,\n"
        "            toUnixTimestamp64Milli(ts) AS ts_ms,\n"
        f"            intDiv(ts_ms, {MINUTE_MS}) * {MINUTE_MS} AS minute_ms,\n"
        "            lagInFrame(toNullable(ts_ms)) OVER w_prev AS prev_ts_ms,\n"
        "            lagInFrame(toNullable(price)) OVER w_prev AS prev_price,\n"
        "            leadInFrame(toNullable(ts_ms)) OVER w_next AS next_ts_ms\n"
        f"        FROM {source}\n"
        # The lookback only supplies carried ticks for the day's first minutes.
        f"        WHERE {_day_range('ts', day, lookback_ms=MAX_CARRY_MS)}\n"
        f"        WINDOW\n"
        f"            w_prev AS ({frame} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW),\n"
        f"            w_next AS ({frame} ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING)\n"
        "    )\n"
        f"    WHERE ts_ms >= {start_ms}\n"
        ")\n"
        "GROUP BY symbol, minute_ms"
    )


def yield_history_1d_select(source: str, day: date) -> str:
    """Per protocol, asset and chain on ``day``: mean/min/max APY over every snapshot, and the
    TVL at the end of the day.

    A (protocol, asset, chain) can hold several strategies (two vaults of one protocol for the
    same asset), each reporting its own TVL, so ``tvl_usd`` is the sum over the strategies of each
    one's last ``tvl_usd`` of the day (event order); with one strategy it is simply the last
    reported TVL. ``strategies`` and ``snapshots`` say how much went into each row.
    """
    inner = (
        "    SELECT\n"
        "        protocol,\n"
        "        asset,\n"
        "        chain,\n"
        "        strategy_id,\n"
        "        groupArray(apy) AS apys,\n"
        f"        argMax(tvl_usd, (ts, _partition, _offset, tvl_usd)) AS last_tvl_usd\n"
        f"    FROM {source}\n"
        f"    WHERE {_day_range('ts', day)}\n"
        "    GROUP BY protocol, asset, chain, strategy_id"
    )
    return (
        "SELECT\n"
        f"    {day_literal(day)} AS day,\n"
        "    protocol,\n"
        "    asset,\n"
        "    chain,\n"
        "    arraySum(arraySort(arrayFlatten(groupArray(apys)))) / sum(length(apys)) AS avg_apy,\n"
        "    arrayMin(arrayFlatten(groupArray(apys))) AS min_apy,\n"
        "    arrayMax(arrayFlatten(groupArray(apys))) AS max_apy,\n"
        f"    {_stable_sum('last_tvl_usd')} AS tvl_usd,\n"
        "    count() AS strategies,\n"
        "    sum(length(apys)) AS snapshots\n"
        "FROM\n"
        "(\n"
        f"{inner}\n"
        ")\n"
        "GROUP BY protocol, asset, chain"
    )


# --- metadata and checks -------------------------------------------------------------------------


def _partition_filter(table: AnalyticsTable, day: date) -> str:
    if table.time_is_date:
        return f"{table.time_column} = {day_literal(day)}"
    return f"toDate({table.time_column}) = {day_literal(day)}"


def summary_sql(table: AnalyticsTable, day: date, prefix: str = "") -> str:
    """One row describing ``day``'s partition: rows, distinct entities, min/max time and an
    order-independent checksum (UInt64 sum of row hashes, wrapping; equal rows → equal sum)."""
    columns = ", ".join(table.column_names)
    return (
        "SELECT\n"
        "    count() AS rows,\n"
        f"    uniqExact({table.entity_column}) AS symbols,\n"
        f"    min({table.time_column}) AS min_time,\n"
        f"    max({table.time_column}) AS max_time,\n"
        # Hashing the tuple: cityHash64 of a NULL argument is NULL (and sum() would skip the row),
        # a tuple hashes NULL like any other value.
        f"    sum(cityHash64(tuple({columns}))) AS checksum\n"
        f"FROM {_qualified(prefix, table.name)}\n"
        f"WHERE {_partition_filter(table, day)}"
    )


def _row_invariant(table: AnalyticsTable) -> str:
    if table.name == OHLCV_1M.name:
        return (
            "high >= greatest(open, close) AND low <= least(open, close) AND low > 0"
            " AND ticks > 0 AND sources > 0 AND sources <= ticks AND volume >= 0"
        )
    if table.name == TWAP_1M.name:
        return (
            f"covered_ms > 0 AND covered_ms <= {MINUTE_MS} AND ticks > 0"
            f" AND twap >= min_price * (1 - {TWAP_BOUND_RTOL})"
            f" AND twap <= max_price * (1 + {TWAP_BOUND_RTOL})"
            # A carried price holds from the minute start: the whole minute is covered.
            f" AND (carried_price IS NULL OR covered_ms = {MINUTE_MS})"
        )
    if table.name == YIELD_HISTORY_1D.name:
        return (
            "min_apy <= max_apy"
            f" AND avg_apy >= min_apy * (1 - {APY_BOUND_RTOL})"
            f" AND avg_apy <= max_apy * (1 + {APY_BOUND_RTOL})"
            " AND tvl_usd >= 0 AND strategies > 0 AND snapshots >= strategies"
        )
    raise KeyError(f"no check for {table.name!r}")


def _expected_keys(table: AnalyticsTable) -> str:
    if table.time_is_date:
        return "uniqExact(protocol, asset, chain)"
    return "uniqExact(symbol, toStartOfMinute(ts))"


def check_sql(table: AnalyticsTable, day: date, prefix: str = "") -> str:
    """One row for ``day``'s partition: ``rows``, ``distinct_keys`` and ``bad_rows`` (rows that
    break the table's invariants) of the target, and ``expected_rows``: the keys the source
    holds for that day. The check passes when bad_rows = 0 and rows = distinct_keys =
    expected_rows (no key missing, none extra, none twice)."""
    target = _qualified(prefix, table.name)
    source = _source(prefix, table)
    keys = ", ".join(c for c in table.order_by if c != table.time_column)
    return (
        "SELECT\n"
        "    rows,\n"
        "    distinct_keys,\n"
        "    bad_rows,\n"
        "    expected_rows\n"
        "FROM\n"
        "(\n"
        "    SELECT\n"
        "        count() AS rows,\n"
        f"        uniqExact({keys}, {table.time_column}) AS distinct_keys,\n"
        f"        countIf(NOT ({_row_invariant(table)})) AS bad_rows\n"
        f"    FROM {target}\n"
        f"    WHERE {_partition_filter(table, day)}\n"
        ") AS t\n"
        "CROSS JOIN\n"
        "(\n"
        f"    SELECT {_expected_keys(table)} AS expected_rows\n"
        f"    FROM {source}\n"
        f"    WHERE {_day_range('ts', day)}\n"
        ") AS s"
    )
