"""Retrying a Kafka call through a broker fault: what is retried, for how long, what is said."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException

from ys_platform.clients.kafka_faults import is_transient, through_faults
from ys_platform.clients.locks import Backoff

LOG = logging.getLogger("test.faults")
NO_JITTER = Backoff(initial_s=0.1, max_s=0.4, multiplier=2.0, jitter=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _failing(errors: list[KafkaError], result: str = "done"):
    calls = []

    def call() -> str:
        calls.append(1)
        if errors:
            raise KafkaException(errors.pop(0))
        return result

    return call, calls


def _run(call, clock: Clock, deadline_s: float = 10.0):
    return through_faults(
        call,
        "restore of price-aggregation-processor",
        LOG,
        deadline_s=deadline_s,
        backoff=NO_JITTER,
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (KafkaError(KafkaError.FENCED_LEADER_EPOCH), True),  # not flagged retriable by librdkafka
        (KafkaError(KafkaError.NOT_COORDINATOR), True),
        (KafkaError(KafkaError._TIMED_OUT), True),
        (KafkaError(KafkaError._DESTROY_BROKER), True),  # a rolling restart's restore
        (KafkaError(KafkaError.UNKNOWN, retriable=True), True),
        (KafkaError(KafkaError._TIMED_OUT, fatal=True), False),
        (KafkaError(KafkaError._TIMED_OUT, txn_requires_abort=True), False),
        (KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), False),
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), False),
    ],
)
def test_which_errors_are_a_fault_the_cluster_mends(error: KafkaError, transient: bool) -> None:
    assert is_transient(error) is transient


def test_a_transient_fault_is_waited_out_with_one_line_before_and_one_after(caplog) -> None:
    clock = Clock()
    errors = [KafkaError(KafkaError.FENCED_LEADER_EPOCH)] * 4
    call, calls = _failing(list(errors))
    with caplog.at_level(logging.WARNING, logger="test.faults"):
        assert _run(call, clock) == "done"
    assert len(calls) == 5
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.4]
    assert [r.getMessage() for r in caplog.records] == [
        "restore of price-aggregation-processor: waiting for the cluster "
        "(Broker: Leader epoch is older than broker epoch), retrying",
        "restore of price-aggregation-processor: resumed after 1.1 s",
    ]


def test_a_call_that_succeeds_at_once_says_nothing(caplog) -> None:
    clock = Clock()
    call, calls = _failing([])
    with caplog.at_level(logging.DEBUG, logger="test.faults"):
        assert _run(call, clock) == "done"
    assert (len(calls), clock.sleeps, caplog.records) == (1, [], [])


def test_an_error_retrying_cannot_mend_is_raised_at_once() -> None:
    clock = Clock()
    call, calls = _failing([KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)])
    with pytest.raises(KafkaException) as raised:
        _run(call, clock)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert (len(calls), clock.sleeps) == (1, [])


def test_at_the_deadline_the_last_error_is_raised(caplog) -> None:
    clock = Clock()
    call, calls = _failing([KafkaError(KafkaError.NOT_COORDINATOR)] * 100)
    with caplog.at_level(logging.WARNING, logger="test.faults"), pytest.raises(KafkaException):
        _run(call, clock, deadline_s=2.0)
    # 0.1 + 0.2 + 0.4 * 5 = 2.3 s of waits: the call at 2.3 s is the last.
    assert len(calls) == 8
    assert sum(clock.sleeps) == pytest.approx(2.3)
    assert caplog.records[-1].getMessage() == (
        "restore of price-aggregation-processor: still failing after 2 s "
        f"({KafkaError(KafkaError.NOT_COORDINATOR).str()}): giving up"
    )
