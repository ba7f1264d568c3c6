"""Files the package carries beside its code, found through importlib.resources.

The repository keeps them where users read and edit them: ``connectors/`` (Kafka Connect connector
files and the sinks' mappings) and ``deployments/local/`` (the local stack's Maven poms and log4j2
configuration). ``ys_platform/_shipped/`` holds two symbolic links to those folders, so setuptools
copies the files into the wheel as package data and an editable install reads the very same
files: one copy of each, found the same way installed or not.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["CONNECTORS_DIR", "LOCAL_DEPLOYMENT_DIR", "shipped"]


def shipped(*parts: str) -> Path:
    """A path below the package's ``_shipped/`` folder, e.g. ``shipped("connectors")``."""
    root = files("ys_platform")
    if not isinstance(root, Path):
        # Maven, Java and the sinks need real files; a zipped install cannot give them.
        raise RuntimeError(f"ys_platform must be installed as files on disk, not in {root}")
    return root.joinpath("_shipped", *parts)


CONNECTORS_DIR = shipped("connectors")
"""The connector files and sink mappings of the release (YS_CONNECTORS_DIR points elsewhere)."""

LOCAL_DEPLOYMENT_DIR = shipped("local")
"""The local stack's Maven poms and log4j2 configuration."""
