"""Asset keys follow the system they name: ``["kafka", topic]``, ``["processors", group]``..."""

import dagster as dg


def topic_asset_key(topic_name: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic_name])


def processor_asset_key(group_id: str) -> dg.AssetKey:
    return dg.AssetKey(["processors", group_id])


def sink_asset_key(group_id: str) -> dg.AssetKey:
    return dg.AssetKey(["sinks", group_id])


def clickhouse_table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["clickhouse", table])


def qdrant_collection_key(collection: str) -> dg.AssetKey:
    return dg.AssetKey(["qdrant", collection])
