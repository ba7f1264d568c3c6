"""Daily-partitioned analytics tables in ClickHouse, derived from the ClickHouse sink's tables.

Each asset recomputes one UTC day of its table and swaps it in atomically (staging table +
``REPLACE PARTITION``), so materializing a day twice, or backfilling a range again, gives the
same rows. The SQL lives in :mod:`ys_platform.analytics.queries`; this module only runs it and
reports. Each asset has a partitioned check: the rows obey the table's invariants and there is
exactly one row per key the source holds for that day.

chDB: every step opens its own client through the resource and closes it at the end, so a
backfill's runs (and a sink holding the path between flushes) take turns on the database path.
"""

import re
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import dagster as dg
from clickhouse_connect.driver.client import Client
from pydantic import field_validator

from ys_platform.analytics.queries import (
    ANALYTICS_TABLES,
    AnalyticsTable,
    check_sql,
    parse_day,
    refresh_plan,
    summary_sql,
)
from ys_platform.assets.keys import clickhouse_table_key
from ys_platform.assets.versions import CODE_VERSION, data_version
from ys_platform.resources.clickhouse import ClickHouseResource

__all__ = [
    "ANALYTICS_GROUP",
    "ANALYTICS_START_DATE",
    "AnalyticsConfig",
    "analytics_assets",
    "analytics_checks",
    "analytics_job",
    "analytics_partitions",
    "analytics_run_config",
    "analytics_schedule",
    "analytics_schedules",
    "clickhouse_table_key",
    "day_is_partial",
]

ANALYTICS_GROUP = "analytics"

ANALYTICS_START_DATE = "2026-01-01"
"""The first day of the analytics partitions: the platform's first data. Earlier days hold no
source rows, so partitions before it would only be empty work for a full backfill."""

analytics_partitions = dg.DailyPartitionsDefinition(
    start_date=ANALYTICS_START_DATE,
    timezone="UTC",
    # Today is a partition too, so it can be looked at before it ends: its materialization says
    # it is partial (``partial``), and the daily run recomputes it once the day is over.
    end_offset=1,
)

SCHEDULE_HOUR_UTC = 0
SCHEDULE_MINUTE = 15
"""The daily run starts at 00:15 UTC for the day that just ended: the sink flushes every few
seconds (``flush_interval_ms`` 5 s), and a quarter of an hour also lets late ticks and a briefly
lagging sink land. Later corrections are a backfill of the affected days."""

_TOKEN_CHARS = re.compile(r"[^0-9a-z]")
# Enough of the run id to tell concurrent runs apart in a staging table's name.
_RUN_TOKEN_LEN = 12

DESCRIPTIONS = {
    "ohlcv_1m": (
        "Per symbol and minute (UTC): open, high, low, close in event order (ts, Kafka "
        "partition, offset), volume, ticks and distinct sources, from market_data."
    ),
    "twap_1m": (
        "Per symbol and minute (UTC): arithmetic time-weighted average price; each tick holds "
        "until the next, the last tick before the minute (≤ 5 min old) carries in."
    ),
    "yield_history_1d": (
        "Per protocol, asset, chain and day (UTC): mean/min/max APY and end-of-day TVL "
        "(sum of each strategy's last TVL), from yield_data."
    ),
}

CHECK_NAME = "consistent_with_source"


class AnalyticsConfig(dg.Config):
    """Run configuration of the analytics assets and their checks."""

    table_prefix: str = ""
    """Prefix of every table read and written, e.g. the ClickHouse sink's namespace prefix
    (``ns_``): tests and replays work on their own copies of the tables."""

    @field_validator("table_prefix")
    @classmethod
    def _identifier_prefix(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                f"table_prefix {value!r} must be letters, digits and underscores, "
                "not starting with a digit"
            )
        return value


def _table_exists(client: Client, name: str) -> bool:
    return bool(int(client.command(f"EXISTS TABLE `{name}`")))


def _missing_source(table: AnalyticsTable, source: str) -> dg.Failure:
    return dg.Failure(
        description=(
            f"The source table '{source}' of {table.name} does not exist yet. It is created by "
            "the ClickHouse sink (`ys-platform sink run clickhouse`) "
            "on its first flush; check that the sink runs against the same ClickHouse "
            "(YS_CLICKHOUSE_URL / YS_HOME) and with the same table prefix."
        )
    )


def _run_token(run_id: str) -> str:
    token = _TOKEN_CHARS.sub("", run_id.lower())[:_RUN_TOKEN_LEN]
    return token or "adhoc"


def _summary_metadata(
    client: Client, table: AnalyticsTable, day: date, prefix: str
) -> dict[str, Any]:
    rows, symbols, min_time, max_time, checksum = client.query(
        summary_sql(table, day, prefix)
    ).result_rows[0]
    empty = rows == 0
    return {
        "dagster/row_count": dg.MetadataValue.int(int(rows)),
        "symbols": dg.MetadataValue.int(int(symbols)),
        "min_time": dg.MetadataValue.text("" if empty else str(min_time)),
        "max_time": dg.MetadataValue.text("" if empty else str(max_time)),
        # Text, not int: a UInt64 loses digits as a JSON number in the UI.
        "checksum": dg.MetadataValue.text(f"{int(checksum):016x}"),
    }


def day_is_partial(day: date, now: datetime | None = None) -> bool:
    """Whether ``day`` (UTC) has not ended yet: its rows are still arriving."""
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    return (now or datetime.now(UTC)) < end


def refresh_partition(
    client: Client, table: AnalyticsTable, day: date, *, prefix: str, token: str
) -> dict[str, Any]:
    """Recompute ``day`` of ``table`` and swap it in; returns the partition's metadata."""
    plan = refresh_plan(table, day, prefix=prefix, token=token)
    if not _table_exists(client, plan.source):
        raise _missing_source(table, plan.source)
    client.command(plan.create_target)
    client.command(plan.drop_stage)  # a stage left by a crashed attempt of this same run
    client.command(plan.create_stage)
    try:
        client.command(plan.insert)
        staged = int(client.query(plan.count_stage).result_rows[0][0])
        # REPLACE from an empty stage is refused by ClickHouse 26 (see queries): a day without
        # source rows must end up empty, which is what dropping its partition does.
        client.command(plan.replace if staged else plan.drop_partition)
    finally:
        client.command(plan.drop_stage)
    metadata = _summary_metadata(client, table, day, prefix)
    metadata["table"] = dg.MetadataValue.text(plan.target)
    metadata["partition_action"] = dg.MetadataValue.text(
        "replaced" if staged else "dropped: no source rows that day"
    )
    metadata["partial"] = dg.MetadataValue.bool(day_is_partial(day))
    return metadata


def _build_asset(table: AnalyticsTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=clickhouse_table_key(table.name),
        deps=[clickhouse_table_key(table.source)],
        group_name=ANALYTICS_GROUP,
        kinds={"clickhouse"},
        partitions_def=analytics_partitions,
        description=DESCRIPTIONS[table.name],
        metadata={"source_table": table.source, "partitioned_by": table.partition_by},
        code_version=CODE_VERSION,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: AnalyticsConfig,
        clickhouse: ClickHouseResource,
    ) -> dg.MaterializeResult:
        day = parse_day(context.partition_key)
        with clickhouse.get_client() as client:
            metadata = refresh_partition(
                client,
                table,
                day,
                prefix=config.table_prefix,
                token=_run_token(context.run.run_id),
            )
        partial = " so far: the day has not ended" if metadata["partial"].value else ""
        context.log.info(
            f"{table.name} {day}: {metadata['dagster/row_count'].value} rows{partial} "
            f"({metadata['partition_action'].value})"
        )
        return dg.MaterializeResult(
            metadata=metadata,
            # The day's rows themselves: a recomputation that changes nothing is the same data.
            data_version=data_version(
                "analytics",
                table.name,
                day.isoformat(),
                metadata["dagster/row_count"].value,
                metadata["checksum"].value,
            ),
        )

    return _asset


def evaluate_check(
    client: Client, table: AnalyticsTable, day: date, prefix: str
) -> dg.AssetCheckResult:
    """The check of ``day``'s partition of ``table`` (see :func:`~queries.check_sql`)."""
    missing = [
        n for n in (prefix + table.name, prefix + table.source) if not _table_exists(client, n)
    ]
    if missing:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"missing table(s): {', '.join(missing)}",
        )
    rows, distinct_keys, bad_rows, expected = (
        int(v) for v in client.query(check_sql(table, day, prefix)).result_rows[0]
    )
    passed = bad_rows == 0 and rows == distinct_keys == expected
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None
        if passed
        else (
            f"{bad_rows} row(s) break the invariants; {rows} rows for {distinct_keys} distinct "
            f"keys, the source has {expected} keys that day"
        ),
        metadata={
            "rows": dg.MetadataValue.int(rows),
            "distinct_keys": dg.MetadataValue.int(distinct_keys),
            "expected_rows": dg.MetadataValue.int(expected),
            "bad_rows": dg.MetadataValue.int(bad_rows),
        },
    )


_CHECK_DESCRIPTIONS = {
    "ohlcv_1m": (
        "high ≥ max(open, close), low ≤ min(open, close), positive prices and counts; one row "
        "per (symbol, minute) the source has that day."
    ),
    "twap_1m": (
        "TWAP within the prices that held in the minute, covered time in (0, 60 s]; one row per "
        "(symbol, minute) the source has that day."
    ),
    "yield_history_1d": (
        "min ≤ mean ≤ max APY, TVL ≥ 0; one row per (protocol, asset, chain) the source has "
        "that day."
    ),
}


def _build_check(table: AnalyticsTable) -> dg.AssetChecksDefinition:
    # Partitioned checks are a Dagster preview (1.13): without partitions_def the check's result
    # would not be tied to a day, and running it alone from the UI would have no day to check.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)

        @dg.asset_check(
            asset=clickhouse_table_key(table.name),
            name=CHECK_NAME,
            description=_CHECK_DESCRIPTIONS[table.name],
            additional_deps=[clickhouse_table_key(table.source)],
            partitions_def=analytics_partitions,
        )
        def _check(
            context: dg.AssetCheckExecutionContext,
            config: AnalyticsConfig,
            clickhouse: ClickHouseResource,
        ) -> dg.AssetCheckResult:
            day = parse_day(context.partition_key)
            with clickhouse.get_client() as client:
                return evaluate_check(client, table, day, config.table_prefix)

    return _check


def _each(build: Callable[[AnalyticsTable], Any]) -> list[Any]:
    return [build(t) for t in ANALYTICS_TABLES.values()]


analytics_assets: list[dg.AssetsDefinition] = _each(_build_asset)
analytics_checks: list[dg.AssetChecksDefinition] = _each(_build_check)


def analytics_run_config(
    table_prefix: str = "",
    definitions: Sequence[dg.AssetsDefinition | dg.AssetChecksDefinition] | None = None,
) -> dg.RunConfig:
    """Run config setting ``table_prefix`` on the analytics assets and checks in a run.

    ``definitions`` are the ones the run executes (default: all of them). Dagster rejects config
    for an op outside the run, so a run of a subset must name that subset.
    """
    config = AnalyticsConfig(table_prefix=table_prefix)
    chosen = [*analytics_assets, *analytics_checks] if definitions is None else definitions
    return dg.RunConfig(ops={d.op.name: config for d in chosen})


analytics_job = dg.define_asset_job(
    "analytics_daily_job",
    selection=dg.AssetSelection.assets(*[clickhouse_table_key(t) for t in ANALYTICS_TABLES]),
    description="Recompute one day of the analytics tables (and run their checks).",
)


@dg.schedule(
    name="analytics_daily_schedule",
    job=analytics_job,
    cron_schedule=f"{SCHEDULE_MINUTE} {SCHEDULE_HOUR_UTC} * * *",
    execution_timezone="UTC",
    description="Each day at 00:15 UTC, materialize the day that just ended.",
)
def analytics_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    # Not build_schedule_from_partitioned_job: with today a partition (end_offset=1) it would
    # pick today, 15 minutes old, instead of the day that just ended.
    tick = context.scheduled_execution_time or datetime.now(UTC)
    day = (tick.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)


# Unresolved until Definitions binds the job to the assets, hence no ScheduleDefinition type.
analytics_schedules = [analytics_schedule]
