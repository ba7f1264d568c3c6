"""Asset keys follow the system they name: ``["kafka", topic]``, ``["processors", group]``..."""

import dagster as dg


def topic_asset_key(topic_name: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic_name])


def processor_asset_key(group_id: str) -> dg.AssetKey:
    return dg.AssetKey(["processors", group_id])
