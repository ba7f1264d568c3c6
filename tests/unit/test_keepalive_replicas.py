"""The keep-alive sensor keeps N replicas of a worker alive, each with its own instance id, and
backs off, relaunches and scales each replica on its own. Evaluated against a real (temporary)
Dagster instance; the runs are created in its storage, not executed, so no broker is needed."""

import time

import dagster as dg
import pytest

from ys_platform.assets.keys import processor_asset_key
from ys_platform.assets.processors import processor_assets, processor_jobs
from ys_platform.assets.workers import HEARTBEAT_TAG, REPLICA_TAG, WORKER_TAG, worker_job_name
from ys_platform.catalog.topics import consumer_group
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.resources.kafka import KafkaResource
from ys_platform.sensors.keepalive import (
    KeepaliveCursor,
    KeptWorker,
    evaluate_keepalive,
)
from ys_platform.settings import SettingsError, load_settings
from ys_platform.streaming.supervisor import BACKOFF_BASE_S

GROUP = "price-aggregation-processor"
OP = "processors__price_aggregation_processor"


def _job() -> dg.JobDefinition:
    # The resource is only bound, never connected: these runs are records, not executions.
    kafka = KafkaResource.of(KafkaConnection())
    defs = dg.Definitions(assets=processor_assets, jobs=processor_jobs, resources={"kafka": kafka})
    return defs.resolve_job_def(worker_job_name(GROUP))


def _tick(instance, replicas: int, cursor: str | None, now: float) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return evaluate_keepalive(context, KeptWorker(GROUP, processor_asset_key(GROUP), replicas), now)


def _start(instance, request: dg.RunRequest, now: float) -> dg.DagsterRun:
    """A run of the request as the daemon would launch it, running with a fresh heartbeat."""
    return instance.create_run_for_job(
        job_def=_job(),
        run_config=request.run_config,
        tags={**request.tags, HEARTBEAT_TAG: str(now)},
        status=dg.DagsterRunStatus.STARTED,
    )


def test_each_replica_gets_a_run_with_its_own_instance_id() -> None:
    with dg.instance_for_test() as instance:
        now = time.time()
        result = _tick(instance, 3, None, now)
        requests = sorted(result.run_requests, key=lambda r: r.tags[REPLICA_TAG])
        assert [r.tags[REPLICA_TAG] for r in requests] == ["0", "1", "2"]
        assert [r.run_config["ops"][OP]["config"]["instance_id"] for r in requests] == [
            "0",
            "1",
            "2",
        ]
        assert {r.tags[WORKER_TAG] for r in requests} == {GROUP}
        runs = [_start(instance, r, now) for r in requests]

        # All three running with fresh heartbeats: a silent tick.
        quiet = _tick(instance, 3, result.cursor, now + 5)
        assert quiet.run_requests == [] and quiet.skip_reason is None

        # Replica 1 fails: only it backs off, then only it is relaunched, as attempt 2.
        instance.report_run_failed(instance.get_run_by_id(runs[1].run_id))
        backing_off = _tick(instance, 3, quiet.cursor, now + 6)
        assert backing_off.run_requests == []
        assert backing_off.skip_reason.skip_message.startswith(
            f"{GROUP} replica 1 failed 1 time(s) in a row; relaunching in "
        )
        relaunch = _tick(instance, 3, backing_off.cursor, now + 6 + BACKOFF_BASE_S + 1)
        (again,) = relaunch.run_requests
        assert again.tags[REPLICA_TAG] == "1" and again.tags["ys/attempt"] == "2"
        assert again.run_config["ops"][OP]["config"]["instance_id"] == "1"
        cursor = KeepaliveCursor.parse(relaunch.cursor)
        assert {r: c.failures for r, c in cursor.replicas.items()} == {"0": 0, "1": 1, "2": 0}


def test_lowering_the_count_cancels_the_replicas_beyond_it() -> None:
    with dg.instance_for_test() as instance:
        now = time.time()
        first = _tick(instance, 2, None, now)
        runs = {r.tags[REPLICA_TAG]: _start(instance, r, now) for r in first.run_requests}
        result = _tick(instance, 1, first.cursor, now + 5)
        assert result.run_requests == []
        assert result.skip_reason.skip_message == (
            "replica 1 is beyond the 1 configured: run cancelled"
        )
        status = {r: instance.get_run_by_id(run.run_id).status for r, run in runs.items()}
        assert status["0"] == dg.DagsterRunStatus.STARTED
        assert status["1"] in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING)


def test_a_run_from_before_replicas_is_replica_0_and_an_old_cursor_is_kept() -> None:
    with dg.instance_for_test() as instance:
        now = time.time()
        old = instance.create_run_for_job(
            job_def=_job(),
            tags={WORKER_TAG: GROUP, HEARTBEAT_TAG: str(now)},
            status=dg.DagsterRunStatus.STARTED,
        )
        result = _tick(instance, 2, '{"failures": 2, "last_seen_run": "r"}', now)
        (request,) = result.run_requests  # replica 0 is the old run: only replica 1 is launched
        assert request.tags[REPLICA_TAG] == "1"
        assert instance.get_run_by_id(old.run_id).status == dg.DagsterRunStatus.STARTED
        assert KeepaliveCursor.parse(result.cursor).of("0").failures == 2


def test_the_deployment_overrides_the_catalog_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YS_WORKER_REPLICAS", "price-aggregation-processor=3, clickhouse-sink=2")
    settings = load_settings()
    assert settings.replicas(consumer_group(GROUP)) == 3
    assert settings.replicas(consumer_group("clickhouse-sink")) == 2
    assert settings.replicas(consumer_group("vector-sink")) == 1  # the catalog's


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("price-aggregation-processor", "'price-aggregation-processor' is not `group=count`"),
        (
            "price-aggregation-processor=two",
            "'price-aggregation-processor=two' is not `group=count` (a whole number)",
        ),
        ("nope=2", "'nope' is no consumer group of the catalog"),
        ("vector-sink=1,vector-sink=2", "'vector-sink' is given twice"),
        ("price-aggregation-processor=0", "price-aggregation-processor=0: between 1 and 12"),
        ("risk-assessment-processor=25", "risk-assessment-processor=25: between 1 and 24"),
    ],
)
def test_a_bad_count_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("YS_WORKER_REPLICAS", value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert f"YS_WORKER_REPLICAS: {message}" in str(error.value).replace("\n  ", " ")
