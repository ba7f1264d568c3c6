"""librdkafka's log through Python logging, with repeated lines folded into one.

Every client the platform makes gets ``logger=CLIENT_LOGGER`` (confluent-kafka's config key), so
librdkafka's lines reach the process's logging set-up (handlers, levels, format) instead of being
written to stderr by librdkafka itself. confluent-kafka hands them over in the client's ``poll``,
``consume`` or ``flush``, on the calling thread.

A broker that refuses connections makes librdkafka log the same ``FAIL`` line on every reconnect:
~580 lines in the 30 s a topic reconcile waits for metadata, measured here against a closed port.
:class:`RepeatFilter` on the logger lets a line through once per interval and says how often it
came in between.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CLIENT_LOGGER", "REPEATS", "RepeatFilter"]

# Attribute of the summary records flush() logs, so the filter lets its own summaries through.
_SUMMARY = "ys_repeat_summary"
# librdkafka puts timings into otherwise identical lines ("... (after 0ms in state CONNECT)").
_DURATION = re.compile(r"\b\d+ms\b")


@dataclass
class _Line:
    shown_at: float
    repeats: int = 0
    last: logging.LogRecord | None = None


class RepeatFilter(logging.Filter):
    """Pass each distinct line (same level, same text up to durations) at most once per
    ``interval_s``; the next one let through says "(repeated N times)" for the N held back.

    :meth:`flush` logs the count of lines held back since they were last shown.
    """

    def __init__(
        self,
        interval_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_lines: int = 1024,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.max_lines = max_lines
        self._clock = clock
        self._lines: dict[tuple[str, int, str], _Line] = {}
        # Clients on several threads log through one logger.
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get(_SUMMARY):
            return True
        message = record.getMessage()
        key = (record.name, record.levelno, _DURATION.sub("…ms", message))
        now = self._clock()
        with self._lock:
            line = self._lines.get(key)
            if line is not None and now - line.shown_at < self.interval_s:
                line.repeats += 1
                line.last = record
                return False
            repeats = line.repeats if line is not None else 0
            self._lines[key] = _Line(shown_at=now)
            self._forget_old(now)
        if repeats:
            record.msg, record.args = _with_count(message, repeats), None
        return True

    def flush(self) -> int:
        """Log "<line> (repeated N times)" for every line held back since it was last shown;
        returns how many such summaries were logged."""
        with self._lock:
            pending = [(line.last, line.repeats) for line in self._lines.values() if line.repeats]
            for line in self._lines.values():
                line.repeats, line.last = 0, None
        for record, repeats in pending:
            assert record is not None  # set with every repeat
            summary = logging.makeLogRecord(
                {
                    **record.__dict__,
                    "msg": _with_count(record.getMessage(), repeats),
                    "args": None,
                    _SUMMARY: True,
                }
            )
            logging.getLogger(record.name).handle(summary)
        return len(pending)

    def _forget_old(self, now: float) -> None:
        if len(self._lines) <= self.max_lines:
            return
        # Lines last shown an interval ago would pass again anyway; only their counts are lost.
        for key in [k for k, line in self._lines.items() if now - line.shown_at >= self.interval_s]:
            del self._lines[key]


def _with_count(message: str, repeats: int) -> str:
    return f"{message} (repeated {repeats} time{'s' if repeats != 1 else ''})"


CLIENT_LOGGER = logging.getLogger("ys_platform.librdkafka")
"""The logger every Kafka client of the platform writes librdkafka's lines to."""

REPEATS = RepeatFilter()
CLIENT_LOGGER.addFilter(REPEATS)
