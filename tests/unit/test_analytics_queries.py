"""The analytics SQL builders produce exactly the expected statements; the assets are wired as
the platform expects (keys, group, partitions, lineage, checks, schedule). No services."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import pytest
from pydantic import ValidationError

from ys_platform.analytics import queries as q
from ys_platform.assets.analytics import (
    ANALYTICS_GROUP,
    ANALYTICS_START_DATE,
    AnalyticsConfig,
    analytics_assets,
    analytics_checks,
    analytics_job,
    analytics_partitions,
    analytics_run_config,
    analytics_schedules,
    clickhouse_table_key,
    day_is_partial,
)
from ys_platform.resources.clickhouse import ClickHouseResource

DAY = date(2026, 3, 1)
DAY_RANGE = (
    "ts >= toDateTime64('2026-03-01 00:00:00.000', 3, 'UTC') "
    "AND ts < toDateTime64('2026-03-02 00:00:00.000', 3, 'UTC')"
)


def test_day_literals() -> None:
    assert q.parse_day("2026-03-01") == DAY
    assert q.partition_id(DAY) == "20260301"
    assert q.day_literal(DAY) == "toDate('2026-03-01')"
    with pytest.raises(ValueError, match="not a daily partition key"):
        q.parse_day("2026-03-01-00:00")


def test_target_ddl() -> None:
    assert q.target_ddl(q.OHLCV_1M, "ns_") == (
        "CREATE TABLE IF NOT EXISTS `ns_ohlcv_1m`\n(\n"
        "    `symbol` LowCardinality(String),\n"
        "    `minute` DateTime('UTC'),\n"
        "    `open` Float64,\n"
        "    `high` Float64,\n"
        "    `low` Float64,\n"
        "    `close` Float64,\n"
        "    `volume` Float64,\n"
        "    `ticks` UInt64,\n"
        "    `sources` UInt64\n"
        ")\n"
        "ENGINE = MergeTree\n"
        "PARTITION BY toDate(minute)\n"
        "ORDER BY (symbol, minute)"
    )
    yields = q.target_ddl(q.YIELD_HISTORY_1D)
    assert yields.startswith("CREATE TABLE IF NOT EXISTS `yield_history_1d`\n(\n    `day` Date,\n")
    assert yields.endswith("PARTITION BY day\nORDER BY (protocol, asset, chain, day)")


def test_refresh_plan_statements() -> None:
    plan = q.refresh_plan(q.OHLCV_1M, DAY, prefix="ns_", token="abc123")
    stage = "`ns_ohlcv_1m__stage_20260301_abc123`"
    assert (plan.source, plan.target, plan.stage) == (
        "ns_market_data",
        "ns_ohlcv_1m",
        "ns_ohlcv_1m__stage_20260301_abc123",
    )
    assert plan.create_target == q.target_ddl(q.OHLCV_1M, "ns_")
    assert plan.drop_stage == f"DROP TABLE IF EXISTS {stage} SYNC"
    assert plan.create_stage == f"CREATE TABLE {stage} AS `ns_ohlcv_1m`"
    assert plan.count_stage == f"SELECT count() FROM {stage}"
    assert plan.replace == f"ALTER TABLE `ns_ohlcv_1m` REPLACE PARTITION ID '20260301' FROM {stage}"
    assert plan.drop_partition == "ALTER TABLE `ns_ohlcv_1m` DROP PARTITION ID '20260301'"
    assert plan.insert == (
        f"INSERT INTO {stage} (symbol, minute, open, high, low, close, volume, ticks, sources)\n"
        + q.select_sql(q.OHLCV_1M, DAY, "ns_")
    )


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="not a valid table name"):
        q.refresh_plan(q.OHLCV_1M, DAY, prefix="x`; DROP", token="t")
    with pytest.raises(ValidationError, match="table_prefix"):
        AnalyticsConfig(table_prefix="ns.")
    assert AnalyticsConfig(table_prefix="ns_").table_prefix == "ns_"


def test_ohlcv_select() -> None:
    assert q.select_sql(q.OHLCV_1M, DAY, "ns_") == (
        "SELECT\n"
        "    symbol,\n"
        "    toDateTime(toStartOfMinute(ts), 'UTC') AS minute,\n"
        "    argMin(price, (ts, _partition, _offset, price)) AS open,\n"
        "    max(price) AS high,\n"
        "    min(price) AS low,\n"
        "    argMax(price, (ts, _partition, _offset, price)) AS close,\n"
        "    arraySum(arraySort(groupArray(volume))) AS volume,\n"
        "    count() AS ticks,\n"
        "    uniqExact(source) AS sources\n"
        "FROM `ns_market_data`\n"
        f"WHERE {DAY_RANGE}\n"
        "GROUP BY symbol, minute"
    )


def test_twap_select() -> None:
    frame = "PARTITION BY symbol ORDER BY ts, _partition, _offset, price"
    assert q.select_sql(q.TWAP_1M, DAY) == (
        "SELECT\n"
        "    symbol,\n"
        "    toDateTime(intDiv(minute_ms, 1000), 'UTC') AS minute,\n"
        "    arraySum(arraySort(groupArray(price * hold_ms + ifNull(prev_price, 0) * carry_ms)))"
        " / sum(hold_ms + carry_ms) AS twap,\n"
        "    count() AS ticks,\n"
        "    toUInt32(sum(hold_ms + carry_ms)) AS covered_ms,\n"
        "    anyIf(prev_price, carry_ms > 0) AS carried_price,\n"
        "    min(if(carry_ms > 0, least(price, ifNull(prev_price, price)), price)) AS min_price,\n"
        "    max(if(carry_ms > 0, greatest(price, ifNull(prev_price, price)), price))"
        " AS max_price\n"
        "FROM\n"
        "(\n"
        "    SELECT\n"
        "        symbol,\n"
        "        price,\n"
        "        minute_ms,\n"
        "        least(ifNull(next_ts_ms, minute_ms + 60000), minute_ms + 60000) - ts_ms"
        " AS hold_ms,\n"
        "        if(prev_ts_ms < minute_ms AND prev_ts_ms > minute_ms - 300000,"
        " ts_ms - minute_ms, 0) AS carry_ms,\n"
        "        prev_price\n"
        "    FROM\n"
        "    (\n"
        "        SELECT\n"
        "            symbol,\n"
        "            price,\n"
        "            toUnixTimestamp64Milli(ts) AS ts_ms,\n"
        "            intDiv(ts_ms, 60000) * 60000 AS minute_ms,\n"
        "            lagInFrame(toNullable(ts_ms)) OVER w_prev AS prev_ts_ms,\n"
        "            lagInFrame(toNullable(price)) OVER w_prev AS prev_price,\n"
        "            leadInFrame(toNullable(ts_ms)) OVER w_next AS next_ts_ms\n"
        "        FROM `market_data`\n"
        # Five minutes before the day: the carry bound.
        "        WHERE ts >= toDateTime64('2026-02-28 23:55:00.000', 3, 'UTC')"
        " AND ts < toDateTime64('2026-03-02 00:00:00.000', 3, 'UTC')\n"
        "        WINDOW\n"
        f"            w_prev AS ({frame} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW),\n"
        f"            w_next AS ({frame} ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING)\n"
        "    )\n"
        "    WHERE ts_ms >= 1772323200000\n"  # 2026-03-01T00:00:00Z
        ")\n"
        "GROUP BY symbol, minute_ms"
    )


def test_yield_history_select() -> None:
    assert q.select_sql(q.YIELD_HISTORY_1D, DAY, "ns_") == (
        "SELECT\n"
        "    toDate('2026-03-01') AS day,\n"
        "    protocol,\n"
        "    asset,\n"
        "    chain,\n"
        "    arraySum(arraySort(arrayFlatten(groupArray(apys)))) / sum(length(apys)) AS avg_apy,\n"
        "    arrayMin(arrayFlatten(groupArray(apys))) AS min_apy,\n"
        "    arrayMax(arrayFlatten(groupArray(apys))) AS max_apy,\n"
        "    arraySum(arraySort(groupArray(last_tvl_usd))) AS tvl_usd,\n"
        "    count() AS strategies,\n"
        "    sum(length(apys)) AS snapshots\n"
        "FROM\n"
        "(\n"
        "    SELECT\n"
        "        protocol,\n"
        "        asset,\n"
        "        chain,\n"
        "        strategy_id,\n"
        "        groupArray(apy) AS apys,\n"
        "        argMax(tvl_usd, (ts, _partition, _offset, tvl_usd)) AS last_tvl_usd\n"
        "    FROM `ns_yield_data` FINAL\n"
        f"    WHERE {DAY_RANGE}\n"
        "    GROUP BY protocol, asset, chain, strategy_id\n"
        ")\n"
        "GROUP BY protocol, asset, chain"
    )


def test_summary_sql() -> None:
    assert q.summary_sql(q.TWAP_1M, DAY, "ns_") == (
        "SELECT\n"
        "    count() AS rows,\n"
        "    uniqExact(symbol) AS symbols,\n"
        "    min(minute) AS min_time,\n"
        "    max(minute) AS max_time,\n"
        "    sum(cityHash64(tuple(symbol, minute, twap, ticks, covered_ms, carried_price,"
        " min_price, max_price))) AS checksum\n"
        "FROM `ns_twap_1m`\n"
        "WHERE toDate(minute) = toDate('2026-03-01')"
    )
    assert q.summary_sql(q.YIELD_HISTORY_1D, DAY).endswith(
        "uniqExact(asset) AS symbols,\n"
        "    min(day) AS min_time,\n"
        "    max(day) AS max_time,\n"
        "    sum(cityHash64(tuple(day, protocol, asset, chain, avg_apy, min_apy, max_apy, "
        "tvl_usd, strategies, snapshots))) AS checksum\n"
        "FROM `yield_history_1d`\n"
        "WHERE day = toDate('2026-03-01')"
    )


def test_ohlcv_check_sql() -> None:
    assert q.check_sql(q.OHLCV_1M, DAY, "ns_") == (
        "SELECT\n"
        "    rows,\n"
        "    distinct_keys,\n"
        "    bad_rows,\n"
        "    expected_rows\n"
        "FROM\n"
        "(\n"
        "    SELECT\n"
        "        count() AS rows,\n"
        "        uniqExact(symbol, minute) AS distinct_keys,\n"
        "        countIf(NOT (high >= greatest(open, close) AND low <= least(open, close)"
        " AND low > 0 AND ticks > 0 AND sources > 0 AND sources <= ticks AND volume >= 0))"
        " AS bad_rows\n"
        "    FROM `ns_ohlcv_1m`\n"
        "    WHERE toDate(minute) = toDate('2026-03-01')\n"
        ") AS t\n"
        "CROSS JOIN\n"
        "(\n"
        "    SELECT uniqExact(symbol, toStartOfMinute(ts)) AS expected_rows\n"
        "    FROM `ns_market_data`\n"
        f"    WHERE {DAY_RANGE}\n"
        ") AS s"
    )


@pytest.mark.parametrize(
    ("table", "invariant", "expected"),
    [
        (
            q.TWAP_1M,
            "covered_ms > 0 AND covered_ms <= 60000 AND ticks > 0"
            " AND twap >= min_price * (1 - 1e-12) AND twap <= max_price * (1 + 1e-12)"
            " AND (carried_price IS NULL OR covered_ms = 60000)",
            "uniqExact(symbol, toStartOfMinute(ts))",
        ),
        (
            q.YIELD_HISTORY_1D,
            "min_apy <= max_apy AND avg_apy >= min_apy * (1 - 1e-12)"
            " AND avg_apy <= max_apy * (1 + 1e-12)"
            " AND tvl_usd >= 0 AND strategies > 0 AND snapshots >= strategies",
            "uniqExact(protocol, asset, chain)",
        ),
    ],
)
def test_other_checks(table: q.AnalyticsTable, invariant: str, expected: str) -> None:
    sql = q.check_sql(table, DAY)
    assert f"countIf(NOT ({invariant})) AS bad_rows\n" in sql
    final = " FINAL" if table.source_is_versioned else ""
    assert f"    SELECT {expected} AS expected_rows\n    FROM `{table.source}`{final}\n" in sql


# --- the Dagster definitions --------------------------------------------------------------------


def _defs() -> dg.Definitions:
    return dg.Definitions(
        assets=analytics_assets,
        asset_checks=analytics_checks,
        schedules=analytics_schedules,
        resources={"clickhouse": ClickHouseResource(dsn="chdb:///nonexistent/never-opened")},
    )


def test_assets_are_wired_as_the_platform_expects() -> None:
    graph = _defs().resolve_asset_graph()
    for name, table in q.ANALYTICS_TABLES.items():
        node = graph.get(clickhouse_table_key(name))
        assert node.group_name == ANALYTICS_GROUP
        assert node.kinds == {"clickhouse"}
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
        assert node.partitions_def.timezone == "UTC"
        assert node.parent_keys == {dg.AssetKey(["clickhouse", table.source])}
        assert {k.name for k in node.check_keys} == {"consistent_with_source"}


def test_daily_schedule_and_job() -> None:
    defs = _defs()
    schedule = defs.resolve_schedule_def("analytics_daily_schedule")
    assert schedule.cron_schedule == "15 0 * * *"
    assert schedule.execution_timezone == "UTC"
    job = defs.resolve_job_def(analytics_job.name)
    assert job.asset_layer.selected_asset_keys == {
        clickhouse_table_key(n) for n in q.ANALYTICS_TABLES
    }
    assert len(job.asset_layer.asset_graph.asset_check_keys) == len(q.ANALYTICS_TABLES)


def test_run_config_names_every_op() -> None:
    config = analytics_run_config("ns_")
    assert len(config.ops) == 2 * len(q.ANALYTICS_TABLES)
    assert {c.table_prefix for c in config.ops.values()} == {"ns_"}
    only_checks = analytics_run_config("ns_", analytics_checks)
    assert set(only_checks.ops) == {c.op.name for c in analytics_checks}


def test_versioned_sources_are_read_final() -> None:
    from ys_platform.catalog.tables import LAYOUTS
    from ys_platform.sinks.clickhouse import load_mapping

    tables = {name: topic for topic, name in load_mapping().topics.items()}
    for table in (q.OHLCV_1M, q.TWAP_1M, q.YIELD_HISTORY_1D):
        assert table.source_is_versioned == LAYOUTS[tables[table.source]].versioned, table.name
    plan = q.refresh_plan(q.YIELD_HISTORY_1D, date(2026, 11, 27), prefix="t_", token="x")
    assert "FROM `t_yield_data` FINAL\n" in plan.insert
    ohlcv = q.refresh_plan(q.OHLCV_1M, date(2026, 11, 27), token="x")
    assert "FROM `market_data`\n" in ohlcv.insert


def test_today_is_a_partition_and_partial_until_it_ends() -> None:
    noon = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    keys = analytics_partitions.get_partition_keys(current_time=noon)
    assert keys[0] == ANALYTICS_START_DATE
    assert keys[-1] == "2026-03-02"  # today, selectable before it ends
    assert day_is_partial(date(2026, 3, 2), noon)
    assert not day_is_partial(date(2026, 3, 1), noon)
    # The day ends at the next midnight UTC, not a moment later.
    assert day_is_partial(date(2026, 3, 2), datetime(2026, 3, 2, 23, 59, 59, tzinfo=UTC))
    assert not day_is_partial(date(2026, 3, 2), datetime(2026, 3, 3, tzinfo=UTC))


def test_daily_schedule_requests_the_day_that_ended() -> None:
    defs = _defs()
    schedule = defs.resolve_schedule_def("analytics_daily_schedule")
    tick = datetime(2026, 3, 2, 0, 15, tzinfo=UTC)
    context = dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-03-01"
    assert request.run_key == "2026-03-01"
