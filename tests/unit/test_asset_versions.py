"""Every asset of the code location has the code version, and the versions the workers write
match the lineage graph (no services)."""

from dataclasses import replace

from ys_platform.assets.keys import topic_asset_key
from ys_platform.assets.processors import PROCESSOR_GROUPS
from ys_platform.assets.topics import topic_processors
from ys_platform.assets.versions import CODE_VERSION, topic_data_version
from ys_platform.catalog.topics import topic


def test_every_asset_has_the_code_version():
    from ys_platform.definitions import defs

    graph = defs().resolve_asset_graph()
    # Without one, Dagster uses the run id: every run is "new code" to the assets below it.
    missing = sorted(
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).code_version != CODE_VERSION
    )
    assert missing == []


def test_processor_outputs_name_all_their_parents():
    from ys_platform.definitions import defs

    # A parent missing from a worker output's provenance reads as a new dependency: Unsynced.
    graph = defs().resolve_asset_graph()
    outputs = [name for group in PROCESSOR_GROUPS for name in group.outputs]
    assert len(outputs) == 4
    for name in outputs:
        assert set(topic_processors(name)) == graph.get(topic_asset_key(name)).parent_keys, name


def test_topic_data_version_follows_the_layout_not_the_description():
    spec = topic("market.prices")
    version = topic_data_version(spec)
    assert version == topic_data_version(topic("market.prices"))
    assert version != topic_data_version(topic("market.analytics"))
    assert version != topic_data_version(replace(spec, partitions=spec.partitions + 1))
    assert version != topic_data_version(replace(spec, configs={**spec.configs, "x": "1"}))
    assert version == topic_data_version(replace(spec, description="reworded"))
