"""The Qdrant resource: local mode on disk or a Qdrant server, a client per unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field, model_validator
from qdrant_client import QdrantClient

from ys_platform.clients.owner import owner_socket
from ys_platform.clients.qdrant import DEFAULT_LOCK_TIMEOUT_S, open_qdrant


class QdrantResource(dg.ConfigurableResource):
    """Qdrant: set ``url`` for a server or ``path`` for qdrant-client's local mode, not both.

    Local mode allows one client per directory, so `get_client` opens one per unit of work, waits
    up to ``lock_timeout_s`` while another holds the directory, and closes it on exit.
    """

    url: str | None = Field(default=None, description="Qdrant server URL (http(s)://host:6333).")
    path: str | None = Field(default=None, description="Local-mode directory, or ':memory:'.")
    api_key: str | None = Field(
        default=None, description="Server API key; bind with dg.EnvVar. Ignored in local mode."
    )
    lock_timeout_s: float = Field(
        default=DEFAULT_LOCK_TIMEOUT_S,
        ge=0,
        description="Seconds to wait while another client holds the local directory (0: fail at "
        "once).",
    )

    @model_validator(mode="after")
    def _exactly_one_target(self) -> QdrantResource:
        if (self.url is None) == (self.path is None):
            given = "both url and path" if self.url is not None else "neither url nor path"
            raise ValueError(
                f"QdrantResource needs exactly one of url (a Qdrant server) or path (local mode "
                f"on disk), but got {given}."
            )
        return self

    @property
    def owner_socket(self) -> Path | None:
        """Where a vector sink holding the local store answers other processes' searches
        (None for a server or memory)."""
        if self.path is None or self.path == ":memory:":
            return None
        return owner_socket(self.path)

    @contextmanager
    def get_client(self) -> Iterator[QdrantClient]:
        with open_qdrant(
            url=self.url, path=self.path, api_key=self.api_key, lock_timeout_s=self.lock_timeout_s
        ) as client:
            yield client
