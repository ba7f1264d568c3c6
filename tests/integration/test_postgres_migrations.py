"""Migrations on the local PostgreSQL, each test in a fresh database: applied once, idempotent,
a changed applied file refused; and the Dagster asset reports the tables."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator

import dagster as dg
import psycopg
import pytest
from cdc_helpers import app_conninfo, fresh_database

from ys_platform.assets.postgres import postgres_asset_key, postgres_tables
from ys_platform.postgres import PUBLICATION, TABLES, MigrationError, load_migrations, migrate
from ys_platform.resources.postgres import PostgresResource
from ys_platform.settings import Settings

pytestmark = pytest.mark.timeout(120)

# The package re-exports the function `migrate`, which shadows the module of the same name.
migrate_module = importlib.import_module("ys_platform.postgres.migrate")


@pytest.fixture
def database(local_stack: Settings) -> Iterator[str]:
    if not local_stack.uses_local_postgres:
        pytest.skip("needs the local stack's PostgreSQL (superuser on loopback)")
    with fresh_database(local_stack, migrated=False) as name:
        yield app_conninfo(local_stack, name)


def test_migrate_applies_once_and_is_idempotent(database: str) -> None:
    assert migrate(database) == ["0001_initial.sql", "0002_immutable_transaction_identity.sql"]
    assert migrate(database) == []
    with psycopg.connect(database) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        published = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (PUBLICATION,)
            ).fetchall()
        }
        identity = dict(
            conn.execute(
                "SELECT relname, relreplident FROM pg_class WHERE relname = ANY(%s)",
                (list(published),),
            ).fetchall()
        )
    assert tables == {*TABLES, "schema_migrations"}
    assert published == {
        "protocols",
        "tokens",
        "transactions",
        "liquidity_pools",
        "yield_strategies",
        "portfolios",
    }
    assert set(identity.values()) == {"f"}  # REPLICA IDENTITY FULL


def test_a_transactions_user_and_time_cannot_change(database: str) -> None:
    migrate(database)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO transactions VALUES ('0xt1', 'user-1', 'aave-v3', 'ethereum', 'deposit',"
            " 'WETH', 2.5, '2026-11-27T12:00:00Z')"
        )
        conn.execute("UPDATE transactions SET amount = 3.0 WHERE tx_hash = '0xt1'")  # fine
        for change in ("user_id = 'user-2'", "ts = ts + interval '1 second'"):
            with pytest.raises(psycopg.errors.CheckViolation, match="cannot change"):
                conn.execute(f"UPDATE transactions SET {change} WHERE tx_hash = '0xt1'")
        conn.execute("UPDATE transactions SET user_id = 'user-1' WHERE tx_hash = '0xt1'")
        row = conn.execute("SELECT user_id, amount FROM transactions").fetchall()
    assert row == [("user-1", 3.0)]


def test_an_edited_applied_migration_is_refused(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(database)
    edited = [dataclasses.replace(m, sql=m.sql + "\n-- edited\n") for m in load_migrations()]
    monkeypatch.setattr(migrate_module, "load_migrations", lambda: edited)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate_module.migrate(database)


def test_the_asset_migrates_and_reports_rows_and_columns(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS probe (id int)")  # unrelated tables are fine
    result = dg.materialize(
        [postgres_tables],
        resources={"postgres": PostgresResource(conninfo=database)},
        selection=[postgres_asset_key("protocols"), postgres_asset_key("users")],
    )
    assert result.success
    materializations = [
        e.event_specific_data.materialization  # type: ignore[union-attr]
        for e in result.get_asset_materialization_events()
    ]
    events = {m.asset_key: m.metadata for m in materializations}
    protocols = events[postgres_asset_key("protocols")]
    assert protocols["dagster/row_count"].value == 0
    columns = [c.name for c in protocols["dagster/column_schema"].schema.columns]
    assert columns[:2] == ["id", "name"]
    assert set(events) == {postgres_asset_key("protocols"), postgres_asset_key("users")}
