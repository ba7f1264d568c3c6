"""What a record must be besides a valid value: its key, its headers and a plausible event time.

The models judge a value alone (:mod:`ys_platform.catalog.codec`); a consumer also receives the
record around it, and these checks are the catalog's rules for that envelope:

* the key of a keyed topic, when there is one, is UTF-8 text (what ``codec.key_of`` writes and
  the CDC connector's StringConverter too): sinks turn it back into text to delete or to name a
  point;
* a ``schema-version`` header, when there is one, names the version of the topic's model. CDC
  records carry none (the connector does not add it), so its absence is not an error; a version
  the consumer does not know is, since its fields may mean something else;
* the event time lies between :data:`EARLIEST_EVENT_TIME` and :data:`MAX_EVENT_TIME_AHEAD` past
  the consumer's clock. Event time drives windows and watermarks: one tick stamped in the year
  9999 moves a partition's watermark there and every later tick would be "too late".

They are kept out of the models on purpose: the clock makes the last one depend on when it runs,
and the models stay a pure function of the bytes. The streaming runtime applies them to every
record it decodes (``ys_platform.streaming.member.decode_slices``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from ys_platform.catalog.codec import DecodeError
from ys_platform.catalog.models import MODELS

__all__ = [
    "EARLIEST_EVENT_TIME",
    "MAX_EVENT_TIME_AHEAD",
    "SCHEMA_VERSION_HEADER",
    "event_time_bounds_ms",
    "event_time_error",
    "header_error",
    "key_error",
]

SCHEMA_VERSION_HEADER = "schema-version"

EARLIEST_EVENT_TIME = datetime(2009, 1, 3, tzinfo=UTC)
"""The Bitcoin genesis block: no market, DeFi or user event of the platform can be older."""

MAX_EVENT_TIME_AHEAD = timedelta(minutes=5)
"""How far past the consumer's clock an event time may be: clock skew between hosts, with
Kerberos' default tolerance (5 minutes) as the bound. More is a producer's broken clock."""

_EARLIEST_MS = int(EARLIEST_EVENT_TIME.timestamp() * 1000)
_AHEAD_MS = int(MAX_EVENT_TIME_AHEAD.total_seconds() * 1000)


def key_error(topic_name: str, key: bytes | None) -> DecodeError | None:
    """Why ``key`` is not a key of ``topic_name`` (None if it is one, or there is none)."""
    if key is None:
        return None
    try:
        key.decode()
    except UnicodeDecodeError as exc:
        return DecodeError(
            topic_name, f"record key is not UTF-8 text ({exc.reason} at byte {exc.start})"
        )
    return None


def _expected_version(topic_name: str) -> bytes:
    return str(MODELS[topic_name].SCHEMA_VERSION).encode()


def header_error(
    topic_name: str, headers: Sequence[tuple[str, bytes | None]] | None
) -> DecodeError | None:
    """Why the record's headers do not fit ``topic_name``'s messages (None if they do)."""
    found: bytes | bool | None = False
    for name, value in headers or ():
        if name == SCHEMA_VERSION_HEADER:
            found = value
    if found is False:
        return None
    expected = _expected_version(topic_name)
    if found == expected:
        return None
    shown = found.decode(errors="backslashreplace") if isinstance(found, bytes) else None
    return DecodeError(
        topic_name,
        f"header '{SCHEMA_VERSION_HEADER}' is {shown!r}, not this topic's version "
        f"{expected.decode()}",
    )


def event_time_bounds_ms(now_ms: int) -> tuple[int, int]:
    """The earliest and latest acceptable event time (epoch ms) for a consumer at ``now_ms``."""
    return _EARLIEST_MS, now_ms + _AHEAD_MS


def event_time_error(topic_name: str, event_ms: int, now_ms: int) -> DecodeError | None:
    """Why an event time of ``event_ms`` is not plausible at ``now_ms`` (None if it is)."""
    earliest, latest = event_time_bounds_ms(now_ms)
    if earliest <= event_ms <= latest:
        return None
    field = MODELS[topic_name].EVENT_TIME_FIELD
    if event_ms < earliest:
        reason = f"event time is before {EARLIEST_EVENT_TIME:%Y-%m-%d} (no event can be older)"
    else:
        ahead = (event_ms - now_ms) / 1000
        reason = (
            f"event time is {ahead:,.0f} s ahead of this consumer's clock "
            f"(at most {_AHEAD_MS // 1000} s allowed)"
        )
    return DecodeError(topic_name, reason, field)
