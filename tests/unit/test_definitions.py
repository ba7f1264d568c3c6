"""The code location loads without any service and exposes every catalog topic as an asset."""

import dagster as dg

from ys_platform.catalog.topics import ALL_TOPICS, TOPICS


def test_code_location_loads_with_every_topic_asset():
    from ys_platform.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    for spec in ALL_TOPICS:
        assert dg.AssetKey(["kafka", spec.name]) in keys
    assert len([k for k in keys if k.path[0] == "kafka" and not k.path[1].startswith("dlq.")]) == 16
    assert len(TOPICS) == 16
    check_keys = graph.asset_check_keys
    assert (
        dg.AssetCheckKey(dg.AssetKey(["kafka", "defi.transactions"]), "matches_catalog")
        in check_keys
    )
    assert graph.get(dg.AssetKey(["kafka", "defi.transactions"])).group_name == "defi"
