"""The ``ys-platform`` command: one module per command group, errors and exit codes in ``core``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ys_platform.cli import (
    acls,
    connectors,
    db,
    dev,
    dlq,
    groups,
    health,
    load,
    local,
    monitor,
    processor,
    schemas,
    search,
    simulate,
    sink,
    sql,
    topics,
)
from ys_platform.cli.core import PROG, ExitCode

__all__ = ["ExitCode", "build_parser", "main"]

# In the order `ys-platform --help` lists them.
GROUPS = (
    local,
    topics,
    acls,
    groups,
    dlq,
    schemas,
    db,
    connectors,
    processor,
    sink,
    monitor,
    health,
)
GROUPS += (simulate, load, search, sql, dev)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="YieldSensei's real-time DeFi data platform."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
