"""Code and data versions, so that Dagster's "Unsynced" means out of date, not "streaming".

Dagster calls an asset Unsynced (``StaleStatus.STALE``) when its code version changed since its
latest materialization, or when a direct parent's data version differs from the one recorded in
that materialization's provenance; a materialization without provenance is compared by time, and a
parent that was never materialized counts as "a new input" (``CachingStaleStatusResolver``).
Every materialized asset used to show Unsynced because:

* the outputs of the long-running workers (topics, tables, collections) are recorded with
  ``log_event(AssetMaterialization)``, which carries no provenance (the events in a ``make dev``
  instance had no tags at all), so Dagster compares them by time; their parent, the processor or
  sink asset, materializes only when its run ends, never while it runs: "has a new input";
* without a code version Dagster uses the run id as the code version and derives the data
  version from it, so every materialization of a parent is a new data version for its children
  (materializing the sink's tables made every analytics partition Unsynced).

So every asset has :data:`CODE_VERSION`, every materialization carries a data version naming
what downstream assets depend on, and worker outputs carry the provenance Dagster itself writes
on the assets a step returns (:func:`worker_output_event`). A stream (topic, stream-fed table,
collection) is versioned by its definition: its content moves every second, and how far a reader
is behind it is what the consumer-lag checks measure, not a sync badge (versioned by its rows, a
sink table would make every analytics day Unsynced each time the sink records it, every 30 s).
A day of an analytics table is versioned by its rows (count and checksum).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER,
    extract_data_version_from_entry,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)

import ys_platform
from ys_platform.catalog.topics import TopicSpec

__all__ = [
    "CODE_VERSION",
    "PendingVersion",
    "data_version",
    "topic_data_version",
    "worker_output_event",
]

CODE_VERSION = ys_platform.__version__
"""The code version of every asset: the definitions change with the package and a release is
the unit they change in. A new release marks what it materialized before as Unsynced, which is
the point: it may compute them differently."""

# 16 bytes of SHA-256: far more than enough to tell definitions apart, short enough to read.
_DIGEST_HEX = 32


def data_version(*parts: object) -> dg.DataVersion:
    """A data version from JSON-serialisable ``parts`` (key order does not matter)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return dg.DataVersion(hashlib.sha256(canonical.encode()).hexdigest()[:_DIGEST_HEX])


def topic_data_version(spec: TopicSpec) -> dg.DataVersion:
    """A topic's layout: what its readers depend on (partitions key the order, configs the
    retention and compaction, the key field the per-key order)."""
    return data_version(
        "topic",
        spec.name,
        spec.partitions,
        spec.replication_factor,
        dict(spec.configs),
        spec.key,
        spec.change_stream,
    )


@dataclass(frozen=True)
class PendingVersion:
    """A parent's data version that is about to be recorded by this same step (the worker asset
    returning its MaterializeResult right after its outputs' last events)."""

    key: dg.AssetKey
    version: dg.DataVersion


def _parent_version(
    instance: dg.DagsterInstance, key: dg.AssetKey
) -> tuple[dg.DataVersion, int | None]:
    # As Dagster records a parent for the assets a step returns: its latest materialization (or
    # observation), INITIAL when it has none or no data version.
    record = instance.get_latest_data_version_record(key)
    if record is None:
        return DEFAULT_DATA_VERSION, None
    version = extract_data_version_from_entry(record.event_log_entry)
    return version or DEFAULT_DATA_VERSION, record.storage_id


def worker_output_event(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    parents: Iterable[dg.AssetKey],
    version: dg.DataVersion,
    *,
    description: str,
    metadata: Mapping[str, dg.MetadataValue],
    pending: PendingVersion | None = None,
) -> dg.AssetMaterialization:
    """A materialization of ``key``, an asset a running step writes but does not return, with
    the code version, data version and parent versions Dagster records on returned assets, so
    that the asset is in sync right after it (see the module docstring).

    ``parents`` must be all of ``key``'s parents in the asset graph (a parent missing from the
    provenance reads as a new dependency): a run's job knows only the assets it executes.
    """
    tags = {
        CODE_VERSION_TAG: CODE_VERSION,
        DATA_VERSION_TAG: version.value,
        DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
    }
    for parent in sorted(parents):
        if pending is not None and parent == pending.key:
            parent_version, storage_id = pending.version, None
        else:
            parent_version, storage_id = _parent_version(instance, parent)
        tags[get_input_data_version_tag(parent)] = parent_version.value
        tags[get_input_event_pointer_tag(parent)] = (
            str(storage_id) if storage_id is not None else NULL_EVENT_POINTER
        )
    return dg.AssetMaterialization(
        asset_key=key, description=description, metadata=metadata, tags=tags
    )
