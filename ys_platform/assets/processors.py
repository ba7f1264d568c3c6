"""Stream processors as long-running assets: input topics → processor → output topics.

A processor's asset runs for as long as its Dagster run lives: the worker consumes in a thread,
while the step's thread keeps a heartbeat on the run (tags), records a materialization of the
output topics with offsets, throughput and lag at most every 30 s, and stops the worker — after
it commits the batch in hand — when the run is terminated or the keep-alive sensor is stopped.
"""

import threading
import time
from typing import Any

import dagster as dg

from ys_platform.assets.keys import processor_asset_key, topic_asset_key
from ys_platform.catalog.topics import CONSUMER_GROUPS, ConsumerGroupSpec
from ys_platform.processors.registry import build_processor, processor_names
from ys_platform.resources.kafka import KafkaResource
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.worker import TransactionalWorker, WorkerConfig

PROCESSOR_TAG = "ys/processor"
HEARTBEAT_TAG = "ys/heartbeat"
SENSOR_NAME_TAG = "dagster/sensor_name"

# The bound: lineage over time, not per message.
MATERIALIZE_EVERY_S = 30.0
# Often enough that the sensor's 120 s stall limit means several missed beats, rarely enough to
# keep run-storage writes negligible.
HEARTBEAT_EVERY_S = 10.0
SENSOR_CHECK_EVERY_S = 10.0
# How long a terminated run's worker gets to commit its batch and close.
STOP_GRACE_S = 60.0

PROCESSOR_GROUP = "processors"


def keepalive_sensor_name(group_id: str) -> str:
    return f"{group_id.replace('-', '_')}_keepalive"


def processor_job_name(group_id: str) -> str:
    return f"{group_id.replace('-', '_')}_job"


class ProcessorRunConfig(dg.Config):
    batch_size: int = 5000
    instance_id: str = "0"
    namespace: str = ""
    """Topic/group prefix: run a copy on isolated topics (tests, replays)."""
    max_idle_s: float | None = None
    """Stop after this long without input (None: run until stopped)."""


def _output_metadata(metrics: WorkerMetrics, topic: str) -> dict[str, Any]:
    summary = metrics.summary()
    return {
        "consumed": dg.MetadataValue.int(metrics.consumed),
        "produced": dg.MetadataValue.int(metrics.produced),
        "dead_lettered": dg.MetadataValue.int(metrics.dead_lettered),
        "messages_per_s": dg.MetadataValue.float(float(summary["messages_per_s"] or 0.0)),
        "consumer_lag": dg.MetadataValue.int(metrics.total_lag),
        "committed_offsets": dg.MetadataValue.json(dict(sorted(metrics.committed.items()))),
        "batch_latency_p99_s": dg.MetadataValue.float(float(summary["batch_latency_p99_s"] or 0)),
        "output_topic": dg.MetadataValue.text(topic),
    }


def _sensor_stopped(instance: dg.DagsterInstance, sensor_name: str | None) -> bool:
    if not sensor_name:
        return False
    for state in instance.all_instigator_state():
        if state.name == sensor_name and state.status.value == "STOPPED":
            return True
    return False


def run_processor_in_dagster(
    context: dg.AssetExecutionContext,
    group: ConsumerGroupSpec,
    kafka: KafkaResource,
    config: ProcessorRunConfig,
) -> dg.MaterializeResult:
    app = build_processor(group.group_id)
    worker_config = WorkerConfig(
        batch_size=config.batch_size,
        instance_id=config.instance_id,
        namespace=config.namespace,
        progress_interval_s=1.0,
    )
    stop = threading.Event()
    worker = TransactionalWorker(kafka.connection(), app, worker_config)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            worker.run(stop, max_idle_s=config.max_idle_s)
        except BaseException as exc:  # reported on the step's thread, which fails the run
            failure.append(exc)

    thread = threading.Thread(target=work, name=f"{group.group_id}-worker", daemon=True)
    instance = context.instance
    run_id = context.run.run_id
    sensor_name = context.run.tags.get(SENSOR_NAME_TAG)
    thread.start()
    context.log.info(f"{worker.group_id}: consuming {', '.join(group.inputs)}")
    last_beat = last_check = 0.0
    last_materialized = time.monotonic()
    materialized_at = -1
    try:
        while thread.is_alive():
            thread.join(1.0)
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_EVERY_S:
                instance.add_run_tags(run_id, {HEARTBEAT_TAG: str(round(time.time(), 3))})
                last_beat = now
            if now - last_check >= SENSOR_CHECK_EVERY_S:
                last_check = now
                if _sensor_stopped(instance, sensor_name):
                    context.log.info(f"{sensor_name} was stopped: stopping {worker.group_id}")
                    stop.set()
            if (
                now - last_materialized >= MATERIALIZE_EVERY_S
                and worker.metrics.consumed != materialized_at
            ):
                _record_outputs(context, group, worker.metrics, config.namespace)
                last_materialized, materialized_at = now, worker.metrics.consumed
    except BaseException:
        # Run termination (DagsterExecutionInterruptedError) or any other exit: let the worker
        # commit what it holds before the step ends.
        stop.set()
        thread.join(STOP_GRACE_S)
        raise
    if failure:
        raise failure[0]
    if worker.metrics.consumed != materialized_at:
        _record_outputs(context, group, worker.metrics, config.namespace)
    return dg.MaterializeResult(
        metadata={k: v for k, v in worker.metrics.summary().items() if v is not None}
    )


def _record_outputs(
    context: dg.AssetExecutionContext,
    group: ConsumerGroupSpec,
    metrics: WorkerMetrics,
    namespace: str,
) -> None:
    for topic in group.outputs:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=topic_asset_key(topic),
                description=f"written by {group.group_id}",
                metadata=_output_metadata(metrics, f"{namespace}{topic}"),
            )
        )


def _build_processor_asset(group: ConsumerGroupSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=processor_asset_key(group.group_id),
        deps=[topic_asset_key(t) for t in group.inputs],
        group_name=PROCESSOR_GROUP,
        kinds={"kafka", "python"},
        description=group.description,
    )
    def _processor(
        context: dg.AssetExecutionContext, kafka: KafkaResource, config: ProcessorRunConfig
    ) -> dg.MaterializeResult:
        return run_processor_in_dagster(context, group, kafka, config)

    return _processor


PROCESSOR_GROUPS: tuple[ConsumerGroupSpec, ...] = tuple(
    g for g in CONSUMER_GROUPS if g.group_id in processor_names()
)
processor_assets = [_build_processor_asset(g) for g in PROCESSOR_GROUPS]
processor_jobs = [
    dg.define_asset_job(
        processor_job_name(g.group_id),
        selection=dg.AssetSelection.assets(processor_asset_key(g.group_id)),
        tags={PROCESSOR_TAG: g.group_id},
        # One long-running step: in-process, so termination signals reach it directly.
        executor_def=dg.in_process_executor,
        description=f"Keeps {g.group_id} running (launched by its keep-alive sensor).",
    )
    for g in PROCESSOR_GROUPS
]
