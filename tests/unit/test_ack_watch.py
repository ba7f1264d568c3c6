"""AckWatch: one line when a producer's records stop being acknowledged, one when they move.

A real librdkafka producer pointed at a closed port: its records stay queued (never
acknowledged) until purged, which is what a producer sees while the cluster is missing."""

import logging

import pytest
from confluent_kafka import Producer

from ys_platform.clients import kafka
from ys_platform.clients.kafka import AckWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def producer():
    p = Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0, "message.timeout.ms": 60_000})
    yield p
    p.purge()
    p.flush(1)


def test_one_line_while_waiting_and_one_when_acknowledgements_resume(producer, caplog) -> None:
    clock = Clock()
    watch = AckWatch(producer, "publishing", notice_after_s=5.0, clock=clock)
    for i in range(3):
        producer.produce("t", b"v%d" % i)
    with caplog.at_level(logging.WARNING, logger=kafka.__name__):
        watch.observe(3)
        clock.now += 4.9
        watch.observe(3)
        assert caplog.records == []  # not yet: a leader election takes seconds
        clock.now += 0.2
        watch.observe(3)
        clock.now += 30
        watch.observe(3)  # still waiting: said once
        assert [r.getMessage() for r in caplog.records] == [
            "publishing: 3 record(s) waiting 5 s for the cluster to acknowledge them (a broker "
            "or the in-sync replicas of a partition missing?); they are retried until it does"
        ]
        producer.purge()  # the records leave the queue, as acknowledged ones do
        producer.poll(0)
        clock.now += 1
        watch.observe(3)
        watch.observe(3)
    assert [r.getMessage() for r in caplog.records][1:] == [
        "publishing: acknowledgements resumed after 36.1 s"
    ]


def test_an_idle_producer_says_nothing(producer, caplog) -> None:
    clock = Clock()
    watch = AckWatch(producer, "publishing", clock=clock)
    with caplog.at_level(logging.WARNING, logger=kafka.__name__):
        clock.now += 600
        watch.observe(0)
    assert caplog.records == []
