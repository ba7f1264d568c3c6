"""Migration files: named, ordered and gap-free; the first creates what CDC relies on."""

from __future__ import annotations

import re

from ys_platform.catalog.models import MODELS
from ys_platform.postgres import CAPTURED, PUBLICATION, TABLES, load_migrations


def test_migrations_are_numbered_from_0001_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == [f"{n:04d}" for n in range(1, len(migrations) + 1)]
    assert migrations[0].filename == "0001_initial.sql"


def test_the_initial_migration_creates_every_table_and_the_publication() -> None:
    sql = load_migrations()[0].sql
    created = re.findall(r"CREATE TABLE (\w+)", sql)
    assert sorted(created) == sorted(TABLES)
    assert f"CREATE PUBLICATION {PUBLICATION}" in sql
    for captured in CAPTURED:
        assert f"ALTER TABLE {captured.table} REPLICA IDENTITY FULL" in sql


def test_captured_tables_have_exactly_the_model_fields_as_columns() -> None:
    sql = load_migrations()[0].sql
    for captured in CAPTURED:
        body = re.search(rf"CREATE TABLE {captured.table} \((.*?)\n\);", sql, re.S)
        assert body, captured.table
        columns = [
            line.split()[0]
            for line in body.group(1).splitlines()
            if line.startswith("    ")
            and not line.strip().startswith(("--", "CHECK"))
            and not line.startswith("        ")
        ]
        assert sorted(columns) == sorted(MODELS[captured.topic].model_fields), captured.table
