"""Event time of the simulator: a fixed default start and whole milliseconds on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DEFAULT_START_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: a fixed default start so output never depends on the wall clock."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_of(ms: int) -> datetime:
    """The UTC datetime of epoch milliseconds ``ms`` (exact: no float on the way)."""
    return _EPOCH + timedelta(milliseconds=ms)
