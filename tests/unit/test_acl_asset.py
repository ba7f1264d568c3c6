"""The ACL asset and its check are part of the code location, beside the topics."""

import dagster as dg

from ys_platform.assets.acls import ACLS_KEY


def test_acl_asset_and_check_are_registered():
    from ys_platform.definitions import defs

    graph = defs().resolve_asset_graph()
    assert dg.AssetKey(["security", "kafka_acls"]) == ACLS_KEY
    node = graph.get(ACLS_KEY)
    assert node.group_name == "security"
    assert node.kinds == {"kafka"}
    assert dg.AssetCheckKey(ACLS_KEY, "matches_catalog") in graph.asset_check_keys
