"""Kafka Connect connectors as assets: materializing one applies its file (PUT config, pause or
resume to ``desired_state``, wait until there); a check per connector says it is as desired, and
a Debezium connector's ``source_freshness`` check says it is still streaming (its heartbeat, not
its RUNNING task: a task stays RUNNING while it retries a lost database).

Built from the files in ``connectors/`` by :func:`build_connector_defs` (called when the
definitions load, not at import). A connector's asset depends on the ``["postgres", table]``
assets of the tables it captures; the catalog topics it writes are downstream of it
(:func:`connector_topic_deps` gives ``{topic: [connector asset key]}`` for the topic assets).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from ys_platform.assets.postgres import postgres_asset_key
from ys_platform.assets.versions import CODE_VERSION, data_version
from ys_platform.catalog.topics import TopicSpec
from ys_platform.connectors import (
    CONNECTORS_DIR,
    ConnectorFile,
    apply,
    connector_files,
    for_cluster,
    output_topics,
    source_tables,
    status,
)
from ys_platform.monitoring.freshness import (
    SILENT_AFTER_INTERVALS,
    CdcSource,
    HeartbeatFreshness,
    cdc_sources,
    check_freshness,
)
from ys_platform.resources.kafka import KafkaResource
from ys_platform.resources.kafka_connect import KafkaConnectResource
from ys_platform.streaming.topics import apply_plans, plan_topics

__all__ = [
    "ConnectorDefs",
    "build_connector_defs",
    "build_freshness_checks",
    "connector_asset_key",
    "connector_topic_deps",
]

GROUP = "connectors"


def connector_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["connectors", name])


FRESHNESS_CHECK = "source_freshness"


@dataclass(frozen=True)
class ConnectorDefs:
    assets: list[dg.AssetsDefinition]
    checks: list[dg.AssetChecksDefinition]
    """Each connector's ``in_desired_state`` (evaluated after it is applied)."""
    freshness_checks: list[dg.AssetChecksDefinition]
    """Each Debezium connector's ``source_freshness`` (evaluated on the monitoring schedule)."""
    files: list[ConnectorFile]


def connector_topic_deps(files: Sequence[ConnectorFile]) -> dict[str, list[dg.AssetKey]]:
    """``{catalog topic: [keys of the connector assets writing it]}`` for the topic assets' deps."""
    deps: dict[str, list[dg.AssetKey]] = {}
    for file in files:
        for topic in output_topics(file):
            deps.setdefault(topic, []).append(connector_asset_key(file.name))
    return deps


def _build_asset(file: ConnectorFile) -> dg.AssetsDefinition:
    @dg.asset(
        key=connector_asset_key(file.name),
        deps=[postgres_asset_key(t) for t in source_tables(file)],
        group_name=GROUP,
        kinds={"kafka_connect"},
        description=f"Kafka Connect connector {file.name} ({file.config['connector.class']}); "
        f"writes {', '.join(output_topics(file)) or 'no routed topics'}.",
        metadata={
            "desired_state": file.desired_state,
            "file": str(file.path.name if file.path else file.name),
        },
        code_version=CODE_VERSION,
    )
    def _connector(
        context: dg.AssetExecutionContext, kafka_connect: KafkaConnectResource, kafka: KafkaResource
    ) -> dg.MaterializeResult:
        admin = kafka.admin()

        def ensure_topics(specs: list[TopicSpec]) -> None:
            apply_plans(admin, plan_topics(admin, specs))

        with kafka_connect.get_client() as client:
            result = apply(client, for_cluster(file, kafka.connection), ensure_topics=ensure_topics)
        if not result.ok:
            # Failing the run makes the problem visible where the operator looks; the health
            # sensor restarts failed tasks either way.
            raise dg.Failure(
                description=f"{file.name}: {result.message}",
                metadata={"state": result.status.state or "absent"},
            )
        context.log.info(f"{file.name}: {result.message}")
        # Config values are not reported: they may hold resolved-looking references, and the
        # file in the repository is the reviewable source anyway.
        return dg.MaterializeResult(
            # The applied file: its topics' readers depend on what it captures and how.
            data_version=data_version("connector", file.name, file.config, file.desired_state),
            metadata={
                "action": result.action,
                "changed_keys": dg.MetadataValue.json(list(result.changed_keys)),
                "state": result.status.state or "absent",
                "tasks": dg.MetadataValue.json(
                    [{"id": t.id, "state": t.state} for t in result.status.tasks]
                ),
                "waited_s": result.waited_s,
            },
        )

    return _connector


def _build_check(file: ConnectorFile) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=connector_asset_key(file.name),
        name="in_desired_state",
        description=f"{file.name} and all its tasks are {file.desired_state}.",
    )
    def _check(kafka_connect: KafkaConnectResource) -> dg.AssetCheckResult:
        with kafka_connect.get_client() as client:
            live = status(client, file.name)
        return dg.AssetCheckResult(
            passed=live.is_(file.desired_state),
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "summary": live.summary(),
                "error": live.first_trace_line() or "none",
            },
        )

    return _check


def _build_freshness_check(source: CdcSource) -> dg.AssetChecksDefinition:
    limit_s = (
        SILENT_AFTER_INTERVALS * source.heartbeat_interval_s
        if source.heartbeat_interval_s is not None
        else None
    )
    rule = (
        f"a Debezium heartbeat within {limit_s:.0f} s ({SILENT_AFTER_INTERVALS} intervals)"
        if limit_s is not None
        else "its topics readable (no heartbeat.interval.ms: silence cannot be told)"
    )

    @dg.asset_check(
        asset=connector_asset_key(source.connector),
        name=FRESHNESS_CHECK,
        description=f"{source.connector} is streaming: {rule}.",
    )
    def _check(kafka: KafkaResource) -> dg.AssetCheckResult:
        report = check_freshness(kafka.connection, [source])
        if report.error is not None:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.ERROR, description=report.error
            )
        (beat,) = report.heartbeats
        ages = [t.age_s for t in report.topics if t.age_s is not None]
        metadata: dict[str, dg.MetadataValue] = {
            "topics": dg.MetadataValue.table(
                [
                    dg.TableRecord({"topic": t.topic, "newest_record_age_s": t.age_s})
                    for t in report.topics
                ],
                schema=_FRESHNESS_SCHEMA,
            ),
        }
        # Ages only when measured: an empty topic or a missing heartbeat has none, not 0.
        if beat.age_s is not None:
            metadata["heartbeat_age_seconds"] = dg.MetadataValue.float(beat.age_s)
        if ages:
            metadata["newest_record_age_seconds"] = dg.MetadataValue.float(min(ages))
        if limit_s is not None:
            metadata["silent_after_seconds"] = dg.MetadataValue.float(limit_s)
        silent = beat.silent
        return dg.AssetCheckResult(
            passed=not silent,
            severity=dg.AssetCheckSeverity.ERROR,
            description=_silence(beat, limit_s) if silent else None,
            metadata=metadata,
        )

    return _check


def _silence(beat: HeartbeatFreshness, limit_s: float | None) -> str:
    if beat.age_s is None:
        return f"CDC source silent: no heartbeat on {beat.topic} (none retained)"
    return (
        f"CDC source silent: last heartbeat on {beat.topic} {beat.age_s:.0f} s ago "
        f"(silent after {limit_s:.0f} s)"
    )


_FRESHNESS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("topic", "string"),
        dg.TableColumn("newest_record_age_s", "float", description="empty for an empty topic"),
    ]
)


def build_freshness_checks(files: Sequence[ConnectorFile]) -> list[dg.AssetChecksDefinition]:
    """A ``source_freshness`` check on each Debezium connector among ``files`` meant to run."""
    return [_build_freshness_check(s) for s in cdc_sources(files)]


def build_connector_defs(directory: str | Path = CONNECTORS_DIR) -> ConnectorDefs:
    """One asset and one check per Kafka Connect connector file in ``directory``."""
    files = connector_files(directory)
    return ConnectorDefs(
        assets=[_build_asset(f) for f in files],
        checks=[_build_check(f) for f in files],
        freshness_checks=build_freshness_checks(files),
        files=files,
    )
