"""The ClickHouse resource: embedded chDB or a ClickHouse server, a client per unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from clickhouse_connect.driver.client import Client
from pydantic import Field

from ys_platform.clients.clickhouse import (
    DEFAULT_LOCK_TIMEOUT_S,
    is_exclusive,
    open_clickhouse,
    waiting_readers,
)
from ys_platform.clients.locks import WaitingReaders


class ClickHouseResource(dg.ConfigurableResource):
    """ClickHouse through clickhouse-connect: ``chdb:///<path>`` locally, ``http(s)://`` in
    production.

    chDB allows one process per path, so `get_client` opens a client for each unit of work, waits
    up to ``lock_timeout_s`` while another process holds the path, and closes it on exit. Do not
    share a client across threads. The DSN's scheme is checked when a client opens, not here:
    at construction a ``dg.EnvVar`` field still holds the variable's name, not its value.
    """

    dsn: str = Field(description="chdb:///<path> (embedded) or http(s)://user@host:port/db.")
    password: str | None = Field(
        default=None, description="Server password (http(s) only); bind with dg.EnvVar."
    )
    lock_timeout_s: float = Field(
        default=DEFAULT_LOCK_TIMEOUT_S,
        ge=0,
        description="Seconds to wait while another process holds the chDB path (0: fail at once).",
    )

    @property
    def exclusive(self) -> bool:
        """Whether a client keeps every other process out (chDB on a path)."""
        return is_exclusive(self.dsn)

    @property
    def waiting_readers(self) -> WaitingReaders | None:
        """Where processes waiting for the chDB path say so (None for a server)."""
        return waiting_readers(self.dsn)

    @contextmanager
    def get_client(
        self, *, database: str | None = None, lock_timeout_s: float | None = None
    ) -> Iterator[Client]:
        """A client for one unit of work (a ``ClickHouseClientFactory``), closed on exit.

        ``lock_timeout_s`` overrides the resource's wait, e.g. 0 for a read that would rather be
        skipped than wait for the path (raises ``StoreLockedError``).
        """
        wait = self.lock_timeout_s if lock_timeout_s is None else lock_timeout_s
        with open_clickhouse(self.dsn, self.password, lock_timeout_s=wait, database=database) as (
            client
        ):
            yield client
