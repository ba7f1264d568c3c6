"""Terminating a worker's Dagster run: the worker commits what it holds, the run records its
outputs and ends CANCELED, and the console shows the interrupt as one line, not a stack.

Termination is what Dagster's run launcher does: mark the run CANCELING, then interrupt the step
(SIGINT to the process running it). The run executes in this process, so the SIGINT is sent here.
"""

import os
import signal
import threading
import time
import uuid

import dagster as dg
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from kafka_helpers import create_namespaced_topics, eth_ticks, recent_minute

from ys_platform.assets.keys import topic_asset_key
from ys_platform.assets.processors import processor_assets, processor_jobs
from ys_platform.assets.workers import (
    HEARTBEAT_TAG,
    WORKER_TAG,
    worker_console_logger,
    worker_job_name,
)
from ys_platform.clients.kafka import produce_messages
from ys_platform.resources.kafka import KafkaResource

GROUP = "price-aggregation-processor"
TICKS = 120
START = recent_minute()


def _terminate_when_committed(instance, kafka: KafkaResource, namespace: str, failures: list):
    """Once the run's worker has committed every tick: terminate the run as the launcher does."""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            (record,) = instance.get_run_records(limit=1) or (None,)
            run = record.dagster_run if record else None
            if (
                run is not None
                and HEARTBEAT_TAG in run.tags
                and _committed(kafka, namespace) == TICKS
            ):
                instance.report_run_canceling(run)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.5)
        failures.append("the worker did not commit its input within 120 s")
    except Exception as exc:  # reported by the test, not lost in this thread
        failures.append(repr(exc))


def _committed(kafka: KafkaResource, namespace: str) -> int:
    partition = TopicPartition(f"{namespace}market.prices", 0)
    request = ConsumerGroupTopicPartitions(f"{namespace}{GROUP}", [partition])
    admin = kafka.admin()  # held until the answer: a collected client never resolves its future
    (future,) = admin.list_consumer_group_offsets([request]).values()
    return sum(max(tp.offset, 0) for tp in future.result(30).topic_partitions)


def test_terminated_run_commits_records_outputs_and_ends_canceled(local_stack, capfd):
    namespace = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaResource.of(local_stack.kafka)
    create_namespaced_topics(
        kafka.admin(),
        namespace,
        ["market.prices", "market.analytics", "dlq.price-aggregation-processor"],
        1,
    )
    ticks = eth_ticks(TICKS, START, 3000.0)
    with kafka.get_producer() as producer:
        produce_messages(producer, ticks, namespace=namespace)
    defs = dg.Definitions(
        assets=processor_assets,
        jobs=processor_jobs,
        resources={"kafka": kafka},
        loggers={"console": worker_console_logger},
    )
    failures: list[str] = []
    with dg.instance_for_test() as instance:
        terminator = threading.Thread(
            target=_terminate_when_committed,
            args=(instance, kafka, namespace, failures),
            daemon=True,
        )
        terminator.start()
        # No max_idle_s: only the termination ends this run.
        result = defs.resolve_job_def(worker_job_name(GROUP)).execute_in_process(
            instance=instance,
            tags={WORKER_TAG: GROUP},
            run_config={
                "ops": {
                    "processors__price_aggregation_processor": {"config": {"namespace": namespace}}
                }
            },
            raise_on_error=False,
        )
        terminator.join(10)
        assert failures == []
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.CANCELED
        output = instance.get_latest_materialization_event(topic_asset_key("market.analytics"))
        metadata = output.asset_materialization.metadata
        # Recorded after the stop: every tick consumed and committed at offset 120.
        assert metadata["consumed"].value == TICKS
        assert metadata["committed_offsets"].value == {f"{namespace}market.prices[0]": TICKS}
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
        stop_message = (
            f"{GROUP} stopped on request after committing what it held "
            f"({TICKS} records consumed in this run)"
        )
        assert sum(stop_message in message for message in messages) == 1, messages
    console = capfd.readouterr().err
    assert "Stack Trace" not in console and "Traceback" not in console, console
    assert "STEP_FAILURE" in console and "RUN_CANCELED" in console, console
    stop_lines = [line for line in console.splitlines() if "(interrupted: the run" in line]
    assert len(stop_lines) == 2, console
    # A stop on request is printed at INFO, not as an error.
    assert all(" - INFO - " in line and "ERROR" not in line for line in stop_lines), stop_lines
