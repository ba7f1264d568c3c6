"""What the sinks' mapping files (``connectors/<sink>.json``) share: the group and the reading.

Each sink's mapping model says where its topics go; the consumer group it names, the error a bad
file raises and how the file is read are the same for all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from ys_platform.catalog.topics import consumer_group

__all__ = ["SinkConfigError", "SinkGroup", "read_mapping_file"]


class SinkConfigError(ValueError):
    """The mapping file is missing or invalid; the message names the file and the key."""


def _known_sink_group(value: str) -> str:
    try:
        group = consumer_group(value)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None
    if group.kind != "sink":
        raise ValueError(f"{value!r} is a {group.kind}, not a sink")
    return value


SinkGroup = Annotated[str, AfterValidator(_known_sink_group)]
"""A mapping's ``group``: a catalog consumer group of kind sink."""


def read_mapping_file(path: Path, sink: str) -> Any:
    """The JSON of ``sink``'s mapping file (``sink`` as a sentence names it: "vector sink").

    Raises :class:`SinkConfigError` naming the file when it is missing or not JSON.
    """
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SinkConfigError(f"{path}: the {sink} mapping file does not exist") from None
    except json.JSONDecodeError as exc:
        raise SinkConfigError(f"{path}: not valid JSON ({exc})") from None
