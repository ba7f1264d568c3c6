"""librdkafka's log through Python logging: repeated lines folded, with their counts."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from ys_platform.clients.kafka import KafkaConnection
from ys_platform.clients.kafka_logging import CLIENT_LOGGER, RepeatFilter

FAIL = (
    "FAIL [ys-platform#producer-1] [thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect "
    "to ipv4#127.0.0.1:1 failed: Connection refused (after {ms}ms in state CONNECT)"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def logged() -> tuple[logging.Logger, RepeatFilter, Clock, Collect]:
    clock = Clock()
    repeats = RepeatFilter(interval_s=60.0, clock=clock)
    logger = logging.getLogger("test.repeat_filter")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = Collect()
    logger.handlers = [handler]
    logger.filters = [repeats]
    return logger, repeats, clock, handler


def test_a_repeated_line_passes_once_per_interval_with_its_count(logged) -> None:
    logger, repeats, clock, out = logged
    for i in range(580):
        clock.now += 0.05  # librdkafka's reconnect pace against a closed port: 29 s in all
        logger.error(FAIL.format(ms=i % 3))  # the timing differs, the line is the same
    assert out.lines == [f"ERROR {FAIL.format(ms=0)}"]

    clock.now += 32.0  # just over 60 s after the first line
    logger.error(FAIL.format(ms=1))
    assert out.lines[1] == f"ERROR {FAIL.format(ms=1)} (repeated 579 times)"
    assert len(out.lines) == 2

    logger.error(FAIL.format(ms=0))
    logger.error(FAIL.format(ms=0))
    assert repeats.flush() == 1
    assert out.lines[2] == f"ERROR {FAIL.format(ms=0)} (repeated 2 times)"
    assert repeats.flush() == 0
    assert len(out.lines) == 3


def test_distinct_lines_and_levels_are_counted_apart(logged) -> None:
    logger, repeats, _, out = logged
    for _ in range(3):
        logger.error("broker 1 down")
        logger.error("broker 2 down")
        logger.warning("broker 1 down")
    logger.info("1/1 brokers are down")
    assert out.lines == [
        "ERROR broker 1 down",
        "ERROR broker 2 down",
        "WARNING broker 1 down",
        "INFO 1/1 brokers are down",
    ]
    assert repeats.flush() == 3
    assert out.lines[4:] == [
        "ERROR broker 1 down (repeated 2 times)",
        "ERROR broker 2 down (repeated 2 times)",
        "WARNING broker 1 down (repeated 2 times)",
    ]


def test_one_repeat_is_singular(logged) -> None:
    logger, repeats, _, out = logged
    logger.error("x")
    logger.error("x")
    repeats.flush()
    assert out.lines == ["ERROR x", "ERROR x (repeated 1 time)"]


def test_the_line_table_stays_bounded() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval_s=1.0, clock=clock, max_lines=10)
    for i in range(100):
        clock.now += 0.5
        record = logging.makeLogRecord({"name": "t", "levelno": 40, "msg": f"line {i}"})
        assert repeats.filter(record)
    assert len(repeats._lines) <= 11


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_clients_log_through_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    connection = KafkaConnection(bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    producer = connection.producer()
    with caplog.at_level(logging.DEBUG, logger=CLIENT_LOGGER.name):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not caplog.records:
            producer.poll(0.2)  # confluent-kafka hands librdkafka's lines over in poll()
    records = [r for r in caplog.records if r.name == CLIENT_LOGGER.name]
    assert records, "librdkafka logged nothing through Python logging within 10 s"
    assert "Connection refused" in records[0].getMessage()
    assert records[0].levelno == logging.ERROR
