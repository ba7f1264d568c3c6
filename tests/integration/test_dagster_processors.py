"""Processors under Dagster: the keep-alive sensor launches a run, the run processes input and
records materializations of its output topics, and a failed or stalled run is relaunched with
backoff. Sensors are evaluated with Dagster's test utilities against a real instance; runs execute
in-process against the local broker."""

import time
import uuid

import dagster as dg
from kafka_helpers import create_namespaced_topics, eth_ticks, recent_minute

from ys_platform.assets.keys import processor_asset_key, topic_asset_key
from ys_platform.assets.processors import processor_assets, processor_jobs
from ys_platform.assets.workers import (
    HEARTBEAT_TAG,
    SENSOR_NAME_TAG,
    WORKER_TAG,
    keepalive_sensor_name,
    worker_job_name,
)
from ys_platform.clients.kafka import produce_messages
from ys_platform.resources.kafka import KafkaResource
from ys_platform.sensors.keepalive import (
    STALL_AFTER_S,
    KeptWorker,
    keepalive_sensors,
)
from ys_platform.streaming.supervisor import BACKOFF_BASE_S

GROUP = "price-aggregation-processor"
KEPT = KeptWorker(GROUP, processor_asset_key(GROUP))
START = recent_minute()


def _defs(settings) -> dg.Definitions:
    return dg.Definitions(
        assets=processor_assets,
        jobs=processor_jobs,
        sensors=keepalive_sensors,
        resources={"kafka": KafkaResource.of(settings.kafka)},
    )


def _tick(defs: dg.Definitions, instance, cursor=None, now=None):
    from ys_platform.sensors.keepalive import evaluate_keepalive

    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return evaluate_keepalive(context, KEPT, now=now)


def test_sensor_launches_run_records_outputs_and_relaunches(local_stack):
    defs = _defs(local_stack)
    sensor = defs.resolve_sensor_def(keepalive_sensor_name(GROUP))
    assert sensor.job_name == worker_job_name(GROUP)
    namespace = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaResource.of(local_stack.kafka)
    create_namespaced_topics(
        kafka.admin(),
        namespace,
        ["market.prices", "market.analytics", "dlq.price-aggregation-processor"],
        2,
    )
    ticks = eth_ticks(120, START, 3000.0)
    with kafka.get_producer() as producer:
        produce_messages(producer, ticks, namespace=namespace)

    with dg.instance_for_test() as instance:
        # 1. Nothing running: the sensor asks for a run.
        result = _tick(defs, instance)
        (request,) = result.run_requests
        assert request.tags[WORKER_TAG] == GROUP

        # 2. The run processes the input and records its output topic's materialization.
        job = defs.resolve_job_def(worker_job_name(GROUP))
        run = job.execute_in_process(
            instance=instance,
            tags={**request.tags, SENSOR_NAME_TAG: keepalive_sensor_name(GROUP)},
            run_config={
                "ops": {
                    "processors__price_aggregation_processor": {
                        "config": {"namespace": namespace, "max_idle_s": 3.0, "batch_size": 50}
                    }
                }
            },
        )
        assert run.success
        output = instance.get_latest_materialization_event(topic_asset_key("market.analytics"))
        metadata = output.asset_materialization.metadata
        assert metadata["consumed"].value == len(ticks)
        # 120 s of one-second ticks: windows end every 5 s up to watermark − grace (119 − 5 s).
        assert metadata["produced"].value == len(range(0, 115, 5))
        assert metadata["written_to"].value == f"{namespace}market.analytics"
        processor = instance.get_latest_materialization_event(processor_asset_key(GROUP))
        assert processor.asset_materialization.metadata["consumed"].value == len(ticks)
        assert dict(instance.get_run_by_id(run.run_id).tags)[HEARTBEAT_TAG]

        # 3. The run ended cleanly: relaunch at once.
        result = _tick(defs, instance, cursor=result.cursor)
        assert len(result.run_requests) == 1

        # 4. A failed run: back off, then relaunch.
        failed = instance.create_run_for_job(job_def=job, tags=dict(request.tags))
        instance.report_run_failed(failed)
        now = time.time()
        backing_off = _tick(defs, instance, cursor=result.cursor, now=now)
        assert backing_off.run_requests == []
        assert "failed 1 time(s) in a row" in backing_off.skip_reason.skip_message
        relaunch = _tick(defs, instance, cursor=backing_off.cursor, now=now + BACKOFF_BASE_S + 1)
        assert len(relaunch.run_requests) == 1
        assert relaunch.run_requests[0].tags["ys/attempt"] == "2"

        # 5. A started run whose heartbeat stopped is cancelled and counted as a failure.
        stalled = instance.create_run_for_job(
            job_def=job,
            tags={**request.tags, HEARTBEAT_TAG: str(now - STALL_AFTER_S - 30)},
            status=dg.DagsterRunStatus.STARTED,
        )
        result = _tick(defs, instance, cursor=relaunch.cursor, now=now)
        assert "stalled" in result.skip_reason.skip_message
        assert instance.get_run_by_id(stalled.run_id).status in (
            dg.DagsterRunStatus.CANCELED,
            dg.DagsterRunStatus.CANCELING,
        )
        after = _tick(defs, instance, cursor=result.cursor, now=now)
        assert after.run_requests == []  # backing off after the stall


def _record_sensor_stopped(instance, sensor_name: str) -> None:
    """Store the sensor as STOPPED, as the UI's toggle does (through Dagster's own state API)."""
    import dagster._core.remote_origin as remote
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = remote.InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__))
    origin = remote.RemoteInstigatorOrigin(
        remote.RemoteRepositoryOrigin(location, "__repository__"), sensor_name
    )
    instance.add_instigator_state(
        InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.STOPPED)
    )


def test_stopping_the_sensor_stops_its_run(local_stack):
    defs = _defs(local_stack)
    namespace = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaResource.of(local_stack.kafka)
    create_namespaced_topics(
        kafka.admin(),
        namespace,
        ["market.prices", "market.analytics", "dlq.price-aggregation-processor"],
        1,
    )
    sensor_name = keepalive_sensor_name(GROUP)
    with dg.instance_for_test() as instance:
        _record_sensor_stopped(instance, sensor_name)
        started = time.monotonic()
        # No max_idle_s: without the stopped sensor this run would go on for ever.
        run = defs.resolve_job_def(worker_job_name(GROUP)).execute_in_process(
            instance=instance,
            tags={WORKER_TAG: GROUP, SENSOR_NAME_TAG: sensor_name},
            run_config={
                "ops": {
                    "processors__price_aggregation_processor": {"config": {"namespace": namespace}}
                }
            },
        )
        elapsed = time.monotonic() - started
    assert run.success
    # The run checks its sensor every 10 s; allow for the worker's start and commit.
    assert elapsed < 45, f"the run went on {elapsed:.0f} s after its sensor was stopped"
