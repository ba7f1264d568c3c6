"""Kafka topics as assets: materializing one reconciles the live topic to the catalog."""

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg

from ys_platform.assets.keys import processor_asset_key, topic_asset_key
from ys_platform.assets.versions import CODE_VERSION, topic_data_version
from ys_platform.catalog.topics import ALL_TOPICS, CONSUMER_GROUPS, TopicSpec
from ys_platform.resources.kafka import KafkaResource
from ys_platform.streaming.topics import TopicPlan, apply_plans, plan_topics

DEAD_LETTER_GROUP = "dead_letters"


def _group(spec: TopicSpec) -> str:
    return DEAD_LETTER_GROUP if spec.is_dead_letter else spec.domain


_SPECS_BY_KEY: dict[dg.AssetKey, TopicSpec] = {topic_asset_key(t.name): t for t in ALL_TOPICS}


def topic_processors(name: str) -> list[dg.AssetKey]:
    """The processor assets writing topic ``name`` (its parents besides CDC connectors)."""
    return [
        processor_asset_key(g.group_id)
        for g in CONSUMER_GROUPS
        if g.kind == "processor" and name in g.outputs
    ]


def _asset_spec(spec: TopicSpec, upstream: Sequence[dg.AssetKey]) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=topic_asset_key(spec.name),
        # A topic is downstream of whatever writes it: the processor of an output topic (the
        # lineage reads topic → processor → topic) and the CDC connectors of a captured table.
        deps=topic_processors(spec.name) + list(upstream),
        description=spec.description,
        group_name=_group(spec),
        kinds={"kafka"},
        metadata={
            "partitions": spec.partitions,
            "replication_factor": spec.replication_factor,
            "configs": dg.MetadataValue.json(dict(spec.configs)),
            "message_key": spec.key or "(none)",
        },
        tags={"ys/topic": spec.name.replace(".", "_")},
        code_version=CODE_VERSION,
    )


def _plan_metadata(plan: TopicPlan) -> dict[str, dg.MetadataValue]:
    return {
        "changes": dg.MetadataValue.md(_bullets(plan.changes) or "none: already matched"),
        "drift": dg.MetadataValue.md(_bullets(plan.drift) or "none"),
        "warnings": dg.MetadataValue.md(_bullets(plan.warnings) or "none"),
        "partitions": dg.MetadataValue.int(plan.spec.partitions),
        "replication_factor": dg.MetadataValue.int(plan.replication_factor),
        "configs": dg.MetadataValue.json(dict(sorted(plan.desired_configs.items()))),
    }


def _bullets(lines: tuple[str, ...]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def build_topic_assets(
    upstream: Mapping[str, Sequence[dg.AssetKey]] | None = None,
) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    """The topic assets and their checks; ``upstream`` adds writers (e.g. CDC connectors) per
    topic, known only when the code location loads its connector files."""
    upstream = upstream or {}

    @dg.multi_asset(
        name="kafka_topics",
        specs=[_asset_spec(t, upstream.get(t.name, ())) for t in ALL_TOPICS],
        can_subset=True,
        description="Reconcile Kafka topics to the catalog: create, set configs, add partitions.",
    )
    def kafka_topics(
        context: dg.AssetExecutionContext, kafka: KafkaResource
    ) -> Iterator[dg.MaterializeResult]:
        """The platform's topics. Reconcile never deletes a topic or removes partitions; what
        it must not fix (fewer partitions wanted, another RF) is reported as drift."""
        specs = [_SPECS_BY_KEY[key] for key in sorted(context.selected_asset_keys)]
        admin = kafka.admin()
        plans = plan_topics(admin, specs)
        apply_plans(admin, plans)
        for plan in plans:
            for line in plan.warnings + plan.drift:
                context.log.warning(f"{plan.spec.name}: {line}")
            yield dg.MaterializeResult(
                asset_key=topic_asset_key(plan.spec.name),
                metadata=_plan_metadata(plan),
                data_version=topic_data_version(plan.spec),
            )

    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                "matches_catalog",
                asset=topic_asset_key(t.name),
                description="The live topic has the catalog's partitions, replication and configs.",
            )
            for t in ALL_TOPICS
        ],
        can_subset=True,
        name="kafka_topics_match_catalog",
    )
    def kafka_topics_match_catalog(
        context: dg.AssetCheckExecutionContext, kafka: KafkaResource
    ) -> Iterator[dg.AssetCheckResult]:
        keys = sorted({check.asset_key for check in context.selected_asset_check_keys})
        plans = plan_topics(kafka.admin(), [_SPECS_BY_KEY[key] for key in keys])
        for plan in plans:
            # A missing topic shows up as its pending "create" change.
            problems = plan.changes + plan.drift
            yield dg.AssetCheckResult(
                asset_key=topic_asset_key(plan.spec.name),
                check_name="matches_catalog",
                passed=plan.in_sync,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "differences": dg.MetadataValue.md(_bullets(problems) or "none"),
                    "warnings": dg.MetadataValue.md(_bullets(plan.warnings) or "none"),
                },
            )

    return kafka_topics, kafka_topics_match_catalog


# The catalog alone (no connectors): for tests and tools that load topics only.
kafka_topics, kafka_topics_match_catalog = build_topic_assets()
