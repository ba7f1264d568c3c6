"""Long-running workers (processors and sinks) as Dagster runs.

A worker's asset runs for as long as its Dagster run lives: the worker consumes in a thread,
while the step's thread keeps a heartbeat on the run (tags), records a materialization of the
worker's outputs with offsets, throughput and lag at most every 30 s, and stops the worker —
after it commits what it holds — when the run is terminated or the keep-alive sensor is stopped.
"""

import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import dagster as dg

from ys_platform.catalog.topics import ConsumerGroupSpec
from ys_platform.streaming.metrics import WorkerMetrics

WORKER_TAG = "ys/worker"
HEARTBEAT_TAG = "ys/heartbeat"
SENSOR_NAME_TAG = "dagster/sensor_name"

# The bound: lineage over time, not per message.
MATERIALIZE_EVERY_S = 30.0
# Often enough that the sensor's 120 s stall limit means several missed beats, rarely enough to
# keep run-storage writes negligible.
HEARTBEAT_EVERY_S = 10.0
SENSOR_CHECK_EVERY_S = 10.0
# How long a terminated run's worker gets to commit what it holds and close.
STOP_GRACE_S = 60.0


class Worker(Protocol):
    metrics: WorkerMetrics

    @property
    def group_id(self) -> str: ...

    def run(self, stop: threading.Event, max_idle_s: float | None = None) -> WorkerMetrics: ...


def keepalive_sensor_name(group_id: str) -> str:
    return f"{group_id.replace('-', '_')}_keepalive"


def worker_job_name(group_id: str) -> str:
    return f"{group_id.replace('-', '_')}_job"


def worker_job(group: ConsumerGroupSpec, asset_key: dg.AssetKey):  # -> unresolved asset job
    return dg.define_asset_job(
        worker_job_name(group.group_id),
        selection=dg.AssetSelection.assets(asset_key),
        tags={WORKER_TAG: group.group_id},
        # One long-running step: in-process, so termination signals reach it directly.
        executor_def=dg.in_process_executor,
        description=f"Keeps {group.group_id} running (launched by its keep-alive sensor).",
    )


def _output_metadata(metrics: WorkerMetrics, target: str) -> dict[str, Any]:
    summary = metrics.summary()
    return {
        "consumed": dg.MetadataValue.int(metrics.consumed),
        "produced": dg.MetadataValue.int(metrics.produced),
        "dead_lettered": dg.MetadataValue.int(metrics.dead_lettered),
        "messages_per_s": dg.MetadataValue.float(float(summary["messages_per_s"] or 0.0)),
        "consumer_lag": dg.MetadataValue.int(metrics.total_lag),
        "committed_offsets": dg.MetadataValue.json(dict(sorted(metrics.committed.items()))),
        "batch_latency_p99_s": dg.MetadataValue.float(float(summary["batch_latency_p99_s"] or 0)),
        "written_to": dg.MetadataValue.text(target),
    }


def _sensor_stopped(instance: dg.DagsterInstance, sensor_name: str | None) -> bool:
    if not sensor_name:
        return False
    return any(
        state.name == sensor_name and state.status.value == "STOPPED"
        for state in instance.all_instigator_state()
    )


def run_worker_in_dagster(
    context: dg.AssetExecutionContext,
    worker: Worker,
    outputs: Sequence[tuple[dg.AssetKey, str]],
    max_idle_s: float | None,
) -> dg.MaterializeResult:
    """Drive ``worker`` for the life of the run; ``outputs`` pairs each output asset with the
    physical thing it names (topic or table) for the metadata."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            worker.run(stop, max_idle_s=max_idle_s)
        except BaseException as exc:  # re-raised on the step's thread, which fails the run
            failure.append(exc)

    thread = threading.Thread(target=work, name=f"{worker.group_id}-worker", daemon=True)
    instance, run_id = context.instance, context.run.run_id
    sensor_name = context.run.tags.get(SENSOR_NAME_TAG)
    thread.start()
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
                _record_outputs(context, worker, outputs)
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
        _record_outputs(context, worker, outputs)
    return dg.MaterializeResult(
        metadata={k: v for k, v in worker.metrics.summary().items() if v is not None}
    )


def _record_outputs(
    context: dg.AssetExecutionContext,
    worker: Worker,
    outputs: Sequence[tuple[dg.AssetKey, str]],
) -> None:
    for key, target in outputs:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=key,
                description=f"written by {worker.group_id}",
                metadata=_output_metadata(worker.metrics, target),
            )
        )
