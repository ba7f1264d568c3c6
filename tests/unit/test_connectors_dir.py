"""The code location reads its connector files and sink mappings from YS_CONNECTORS_DIR when it is
set, and from the files shipped in the package otherwise."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from ys_platform.package_files import CONNECTORS_DIR, LOCAL_DEPLOYMENT_DIR

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("YS_"):
            monkeypatch.delenv(name)


def _full_mapping() -> dict:
    return json.loads((CONNECTORS_DIR / "clickhouse-sink.json").read_text())


def test_the_shipped_files_are_the_repository_folders() -> None:
    # One copy of each: the package's folders resolve to the repository's, file for file.
    assert CONNECTORS_DIR.resolve() == (REPO / "connectors").resolve()
    assert LOCAL_DEPLOYMENT_DIR.resolve() == (REPO / "deployments" / "local").resolve()
    assert sorted(p.name for p in CONNECTORS_DIR.glob("*.json")) == [
        "clickhouse-sink.json",
        "postgres-source.json",
        "vector-sink.json",
    ]


def test_definitions_follow_ys_connectors_dir(tmp_path: Path, monkeypatch) -> None:
    from ys_platform.definitions import defs

    folder = tmp_path / "connectors"
    folder.mkdir()
    # No postgres-source.json: no connector assets. A mapping of one topic: one sink table.
    shutil.copy(CONNECTORS_DIR / "vector-sink.json", folder)
    mapping = _full_mapping()
    mapping["topics"] = {"market.prices": "market_data"}
    (folder / "clickhouse-sink.json").write_text(json.dumps(mapping))
    monkeypatch.setenv("YS_CONNECTORS_DIR", str(folder))
    sink = dg.AssetKey(["sinks", "clickhouse-sink"])

    graph = defs().resolve_asset_graph()
    assert not [k for k in graph.get_all_asset_keys() if k.path[0] == "connectors"]
    assert graph.get(sink).parent_keys == {dg.AssetKey(["kafka", "market.prices"])}

    monkeypatch.delenv("YS_CONNECTORS_DIR")
    graph = defs().resolve_asset_graph()
    assert dg.AssetKey(["connectors", "postgres-source"]) in graph.get_all_asset_keys()
    assert graph.get(sink).parent_keys == {
        dg.AssetKey(["kafka", topic]) for topic in _full_mapping()["topics"]
    }
