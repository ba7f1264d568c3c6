"""Topic assets materialize in-process against the local broker; their checks pass after a
reconcile and fail on drift."""

import dagster as dg
from kafka_helpers import set_config_by_hand

from ys_platform.assets.topics import kafka_topics, kafka_topics_match_catalog, topic_asset_key
from ys_platform.catalog.topics import ALL_TOPICS
from ys_platform.resources.kafka import KafkaResource


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.asset_key.path[-1]: e.passed for e in result.get_asset_check_evaluations()}


def test_topics_materialize_then_checks_pass_and_catch_drift(local_stack):
    resources = {"kafka": KafkaResource.of(local_stack.kafka)}
    assets = [kafka_topics, kafka_topics_match_catalog]

    result = dg.materialize(assets, resources=resources)
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {topic_asset_key(t.name) for t in ALL_TOPICS}
    checks = _checks(result)
    assert len(checks) == len(ALL_TOPICS)
    assert all(checks.values()), checks

    admin = local_stack.kafka.admin()
    set_config_by_hand(admin, "risk.alerts", "cleanup.policy", "compact")

    only_checks = dg.materialize(
        assets, resources=resources, selection=dg.AssetSelection.all_asset_checks()
    )
    assert only_checks.get_asset_materialization_events() == []
    checks = _checks(only_checks)
    assert checks.pop("risk.alerts") is False
    assert all(checks.values()), checks
    (failed,) = [e for e in only_checks.get_asset_check_evaluations() if not e.passed]
    assert "remove override cleanup.policy=compact" in failed.metadata["differences"].value

    repaired = dg.materialize(
        assets,
        resources=resources,
        selection=dg.AssetSelection.assets(topic_asset_key("risk.alerts")),
    )
    assert _checks(repaired) == {"risk.alerts": True}
