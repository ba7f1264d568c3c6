"""PostgreSQL, the source of record: versioned migrations and the tables Debezium captures.

``CAPTURED`` says which table feeds which catalog topic and which column keys it; the connector
file (``connectors/postgres-source.json``), the Dagster assets and the tests all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ys_platform.postgres.migrate import (
    Migration,
    MigrationError,
    applied_migrations,
    load_migrations,
    migrate,
)

__all__ = [
    "CAPTURED",
    "PUBLICATION",
    "TABLES",
    "CapturedTable",
    "Migration",
    "MigrationError",
    "applied_migrations",
    "captured_table",
    "load_migrations",
    "migrate",
]

PUBLICATION = "ys_cdc"
"""The publication the migrations create and the Debezium connector reads (pgoutput)."""


@dataclass(frozen=True)
class CapturedTable:
    """A table whose changes Debezium streams to a catalog topic."""

    table: str
    topic: str
    key: str
    """The column keying the topic's records: the catalog ``TopicSpec.key`` of ``topic``."""


# Table -> topic as the seed and the catalog name them. users and risk_assessments are tables of
# record only (see 0001_initial.sql for why they are not captured).
CAPTURED: tuple[CapturedTable, ...] = (
    CapturedTable("protocols", "defi.protocols", "id"),
    CapturedTable("tokens", "defi.tokens", "address"),
    CapturedTable("transactions", "defi.transactions", "user_id"),
    CapturedTable("liquidity_pools", "defi.liquidity-pools", "pool_id"),
    CapturedTable("yield_strategies", "defi.yields", "strategy_id"),
    CapturedTable("portfolios", "users.portfolios", "user_id"),
)

TABLES: tuple[str, ...] = (
    "users",
    "portfolios",
    "transactions",
    "protocols",
    "tokens",
    "liquidity_pools",
    "yield_strategies",
    "risk_assessments",
)
"""Every table the migrations create, in the seed's order: one ``["postgres", t]`` asset each."""


def captured_table(table: str) -> CapturedTable | None:
    return next((c for c in CAPTURED if c.table == table), None)
