"""Every entry module imports on its own, in a fresh interpreter: the order a tool happens to
import the package in (Dagster loads ``ys_platform.definitions`` first) cannot hit an import
cycle that another order hides."""

from __future__ import annotations

import subprocess
import sys

import pytest

ENTRY_MODULES = (
    "ys_platform.definitions",
    "ys_platform.cli",
    "ys_platform.local",
    "ys_platform.security.acls",
    "ys_platform.security.principals",
    "ys_platform.local.principals",
    "ys_platform.streaming.worker",
    "ys_platform.sinks.clickhouse",
)


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_an_entry_module_imports_first(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
