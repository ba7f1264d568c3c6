"""Daily analytics derived from the ClickHouse sink's tables: pure SQL builders (no I/O)."""

from ys_platform.analytics.queries import (
    ANALYTICS_TABLES,
    MAX_CARRY_MS,
    MINUTE_MS,
    AnalyticsTable,
    RefreshPlan,
    check_sql,
    parse_day,
    partition_id,
    refresh_plan,
    select_sql,
    summary_sql,
    target_ddl,
)

__all__ = [
    "ANALYTICS_TABLES",
    "MAX_CARRY_MS",
    "MINUTE_MS",
    "AnalyticsTable",
    "RefreshPlan",
    "check_sql",
    "parse_day",
    "partition_id",
    "refresh_plan",
    "select_sql",
    "summary_sql",
    "target_ddl",
]
