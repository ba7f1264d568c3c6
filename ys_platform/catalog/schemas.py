"""JSON Schema of every catalog topic's value, generated from the models (never hand-written).

For consumers outside Python (ClickHouse/Connect mappings, other teams) and for review: a change to
a model shows up as a diff of its ``<topic>.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from ys_platform.catalog.models import MODELS, VALUE_TYPES
from ys_platform.catalog.topics import topic

__all__ = ["JSON_SCHEMA_DIALECT", "json_schema", "json_schemas", "schema_id", "write_json_schemas"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_id(topic_name: str, version: int) -> str:
    """A stable identifier naming the topic and the schema version."""
    return f"urn:ys-platform:schema:{topic_name}:v{version}"


def json_schema(topic_name: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one topic's value."""
    spec = topic(topic_name)
    version = MODELS[topic_name].SCHEMA_VERSION
    body = TypeAdapter(VALUE_TYPES[topic_name]).json_schema()
    # Our keys first, so a schema file opens with what it is; the model's own title (the class
    # name) moves to x-model, since the title names the topic.
    model_title = body.pop("title", None) or MODELS[topic_name].__name__
    description = body.pop("description", None) or spec.description
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(topic_name, version),
        "title": f"{topic_name} v{version}",
        "description": description,
        "x-topic": topic_name,
        "x-schema-version": version,
        "x-key-field": spec.key,
        "x-model": model_title,
        **body,
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """Topic name -> JSON Schema of its value, for every catalog topic with a model."""
    return {name: json_schema(name) for name in MODELS}


def write_json_schemas(folder: Path) -> list[Path]:
    """Write one ``<topic>.schema.json`` per topic into ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
