"""The consumer-lag and source-freshness checks evaluated by Dagster on the real stack.

Freshness: the stack's own postgres-source connector when it is applied and RUNNING (as under
``make dev``); otherwise the repository's connector file applied in a namespace and database of
the test's own (cdc_helpers), removed afterwards.

A group of the test's own on a topic of its own, written by a transactional producer (so every
partition ends in a commit marker) with record timestamps of a known age: the check's metadata
holds the exact offset lag and the age of the first unconsumed record; it fails over the bound,
reads STOP once the group has not moved for longer than the interval between two evaluations,
and passes when the group is caught up (committed past the last record, the marker not lag).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import dagster as dg
import pytest
from cdc_helpers import namespaced_source, running_cdc_connector
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from ys_platform.assets.connectors import build_freshness_checks, connector_asset_key
from ys_platform.assets.lag_checks import build_lag_checks, monitoring_check_schedule
from ys_platform.assets.lag_source import KafkaLagSource
from ys_platform.connectors import output_topics
from ys_platform.resources.kafka import KafkaResource
from ys_platform.settings import Settings

pytestmark = pytest.mark.timeout(90)

AGE_S = 120.0
BOUND_S = 60.0
RECORDS = {0: 10, 1: 4}
COMMITTED = {0: 3, 1: 4}  # partition 1: last record + 1, the commit marker after it unread


@pytest.fixture
def lagging(local_stack: Settings) -> Iterator[tuple[str, str, float]]:
    """(topic, group, timestamp in s of partition 0's first unconsumed record)."""
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"test.lagcheck.{suffix}", f"test-lagcheck-{suffix}"
    admin = local_stack.kafka.admin()
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    try:
        base_ms = int((time.time() - AGE_S) * 1000)
        producer = local_stack.kafka.producer(**{"transactional.id": f"test-lagcheck-{suffix}"})
        producer.init_transactions(30)
        producer.begin_transaction()
        for partition, count in RECORDS.items():
            for i in range(count):
                producer.produce(topic, b"v", partition=partition, timestamp=base_ms + i * 1000)
        producer.commit_transaction(30)
        _commit(local_stack, group, topic, COMMITTED)
        yield topic, group, (base_ms + COMMITTED[0] * 1000) / 1000
    finally:
        admin.delete_consumer_groups([group])[group].result(30)
        admin.delete_topics([topic])[topic].result(30)


def _commit(settings: Settings, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = settings.kafka.consumer(group)
    try:
        tps = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()


def _evaluate(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.AssetCheckEvaluation]:
    run = defs.resolve_job_def("monitoring_checks_job").execute_in_process(instance=instance)
    assert run.success
    return run.get_asset_check_evaluations()


def test_lag_check_reads_the_group_exactly(local_stack: Settings, lagging) -> None:
    topic, group, next_record_s = lagging
    key = dg.AssetKey(["test", group])
    checks = build_lag_checks({group: (key, BOUND_S)}, KafkaLagSource.of)
    job, _ = monitoring_check_schedule(checks)
    defs = dg.Definitions(
        assets=[dg.AssetSpec(key)],
        asset_checks=checks,
        jobs=[job],
        resources={"kafka": KafkaResource.of(local_stack.kafka)},
    )
    with dg.instance_for_test() as instance:
        (first,) = _evaluate(defs, instance)
        true_age = time.time() - next_record_s
        assert not first.passed
        assert first.severity == dg.AssetCheckSeverity.WARN  # slow, not yet known to be stuck
        meta = {k: v.value for k, v in first.metadata.items()}
        assert meta["total_offset_lag"] == 7 and meta["max_offset_lag"] == 7
        assert meta["status"] == "OK"  # no history yet
        assert abs(meta["max_lag_seconds"] - true_age) <= 0.1 * true_age
        rows = {r.data["partition"]: r.data for r in first.metadata["partitions"].value.records}
        assert (rows[0]["committed"], rows[0]["offset_lag"]) == (3, 7)
        assert (rows[1]["committed"], rows[1]["offset_lag"], rows[1]["lag_seconds"]) == (4, 0, 0.0)
        assert first.description == f"lag {meta['max_lag_seconds']:.1f} s exceeds 60 s"

        # Unmoved over one interval: not yet STOP; over more than the last interval: STOP.
        (second,) = _evaluate(defs, instance)
        assert second.metadata["status"].value == "OK"
        (third,) = _evaluate(defs, instance)
        assert third.metadata["status"].value == "STOP"
        assert third.severity == dg.AssetCheckSeverity.ERROR
        assert not third.passed

        # Caught up: committed past partition 0's last record; its commit marker is not lag.
        _commit(local_stack, group, topic, {0: RECORDS[0]})
        (caught_up,) = _evaluate(defs, instance)
        assert caught_up.passed, caught_up.description
        meta = {k: v.value for k, v in caught_up.metadata.items()}
        assert (meta["total_offset_lag"], meta["max_lag_seconds"], meta["status"]) == (0, 0.0, "OK")


# The connector's 10 s heartbeat (connectors/postgres-source.json), 3 intervals before "silent".
HEARTBEAT_S = 10.0


def test_freshness_check_passes_on_a_streaming_cdc_connector() -> None:
    with ExitStack() as exits:
        stack, file = running_cdc_connector(exits)
        checks = build_freshness_checks([file])
        job, _ = monitoring_check_schedule(checks)
        defs = dg.Definitions(
            assets=[dg.AssetSpec(connector_asset_key(file.name))],
            asset_checks=checks,
            jobs=[job],
            resources={"kafka": KafkaResource.of(stack.kafka)},
        )
        with dg.instance_for_test() as instance:
            # A connector applied just now writes its first heartbeat once it streams.
            deadline = time.monotonic() + 3 * HEARTBEAT_S
            while True:
                (evaluation,) = _evaluate(defs, instance)
                if evaluation.passed or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        assert evaluation.passed, evaluation.description
        assert evaluation.check_name == "source_freshness"
        meta = {k: v.value for k, v in evaluation.metadata.items()}
        assert meta["silent_after_seconds"] == 3 * HEARTBEAT_S
        assert 0 <= meta["heartbeat_age_seconds"] <= 3 * HEARTBEAT_S
        topics = {r.data["topic"] for r in evaluation.metadata["topics"].value.records}
        assert topics == set(output_topics(file))


def test_freshness_check_fails_on_a_silent_cdc_connector(local_stack: Settings) -> None:
    # The connector file of a source that never ran: its heartbeat topic holds nothing.
    file = namespaced_source(local_stack, "never_created", uuid.uuid4().hex[:10])
    checks = build_freshness_checks([file])
    job, _ = monitoring_check_schedule(checks)
    defs = dg.Definitions(
        assets=[dg.AssetSpec(connector_asset_key(file.name))],
        asset_checks=checks,
        jobs=[job],
        resources={"kafka": KafkaResource.of(local_stack.kafka)},
    )
    with dg.instance_for_test() as instance:
        (evaluation,) = _evaluate(defs, instance)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    heartbeat = f"__debezium-heartbeat.{file.config['topic.prefix']}"
    assert (
        evaluation.description == f"CDC source silent: no heartbeat on {heartbeat} (none retained)"
    )
    assert "heartbeat_age_seconds" not in evaluation.metadata
