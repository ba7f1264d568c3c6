"""The PostgreSQL resource against the local stack's real cluster."""

from __future__ import annotations

import pytest

from ys_platform.resources.postgres import PostgresResource
from ys_platform.settings import Settings

# The stack is started once per session by the fixture; the queries themselves take milliseconds.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_connects_and_sees_logical_decoding(local_stack: Settings) -> None:
    resource = PostgresResource(conninfo=local_stack.postgres_conninfo())
    with resource.get_client() as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
        # Debezium's pgoutput plugin needs logical decoding.
        assert connection.execute("SHOW wal_level").fetchone() == ("logical",)


def test_autocommit_connection(local_stack: Settings) -> None:
    resource = PostgresResource(conninfo=local_stack.postgres_conninfo())
    with resource.get_client(autocommit=True) as connection:
        assert connection.autocommit is True
        # Statements that refuse to run inside a transaction block work here.
        connection.execute("VACUUM pg_catalog.pg_class")
