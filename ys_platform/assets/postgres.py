"""PostgreSQL tables as assets: materializing applies pending migrations and reports each table.

Migrations are database-wide, so materializing any subset applies all pending ones; each
selected table then reports its row count and columns. Keys are ``["postgres", table]``.
"""

from collections.abc import Iterator

import dagster as dg

from ys_platform.assets.versions import CODE_VERSION, data_version
from ys_platform.postgres import TABLES, captured_table
from ys_platform.postgres.migrate import applied_migrations, migrate
from ys_platform.resources.postgres import PostgresResource

__all__ = ["postgres_asset_key", "postgres_tables"]

GROUP = "postgres"


def postgres_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["postgres", table])


def _spec(table: str) -> dg.AssetSpec:
    captured = captured_table(table)
    feeds = f"Captured by Debezium into {captured.topic}." if captured else "Not captured (CDC)."
    return dg.AssetSpec(
        key=postgres_asset_key(table),
        description=f"PostgreSQL table {table}. {feeds}",
        group_name=GROUP,
        kinds={"postgres"},
        metadata={"topic": captured.topic if captured else "(none)"},
        code_version=CODE_VERSION,
    )


_TABLE_BY_KEY = {postgres_asset_key(t): t for t in TABLES}


@dg.multi_asset(
    name="postgres_tables",
    specs=[_spec(t) for t in TABLES],
    can_subset=True,
    description="Apply pending PostgreSQL migrations; report each table's rows and columns.",
)
def postgres_tables(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> Iterator[dg.MaterializeResult]:
    applied = migrate(postgres.conninfo, connect_timeout_s=postgres.connect_timeout_s)
    if applied:
        context.log.info(f"applied migrations: {', '.join(applied)}")
    with postgres.get_client() as conn:
        versions = sorted(applied_migrations(conn))
        for key in sorted(context.selected_asset_keys):
            table = _TABLE_BY_KEY[key]
            columns = conn.execute(
                "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            # An exact count: these are reference and user tables, not the high-volume stream
            # (which lives in Kafka and ClickHouse); pg_class.reltuples would be an estimate.
            row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            yield dg.MaterializeResult(
                asset_key=key,
                # Its schema, not its rows: the connectors capturing it depend on the columns,
                # and the rows are a stream Debezium follows continuously.
                data_version=data_version("postgres", table, columns),
                metadata={
                    "dagster/row_count": dg.MetadataValue.int(int(row[0]) if row else 0),
                    "dagster/column_schema": dg.TableSchema(
                        columns=[
                            dg.TableColumn(
                                name,
                                str(kind),
                                constraints=dg.TableColumnConstraints(nullable=bool(nullable)),
                            )
                            for name, kind, nullable in columns
                        ]
                    ),
                    "migrations_applied_now": dg.MetadataValue.json(applied),
                    "schema_version": dg.MetadataValue.text(versions[-1] if versions else "none"),
                },
            )
