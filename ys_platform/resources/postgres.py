"""The PostgreSQL resource: a psycopg connection per unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from pydantic import Field

from ys_platform.clients.postgres import open_postgres


class PostgresResource(dg.ConfigurableResource):
    """A PostgreSQL database (the Debezium source).

    The conninfo may carry a password: bind it with ``dg.EnvVar("YS_POSTGRES_DSN")`` so only the
    variable's name reaches the run config and the UI. Connection errors never include it.
    """

    conninfo: str = Field(
        description="libpq conninfo: a postgresql:// URI or key=value pairs (may hold a password)."
    )
    connect_timeout_s: int = Field(
        default=5,
        ge=1,
        description="Seconds to wait for the server before failing with a readable error.",
    )

    @contextmanager
    def get_client(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A connection that commits on a clean exit, rolls back on error and always closes."""
        with open_postgres(
            self.conninfo, connect_timeout_s=self.connect_timeout_s, autocommit=autocommit
        ) as connection:
            yield connection
