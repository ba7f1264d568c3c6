"""``ys-platform schemas export DIR``: the JSON Schema of every topic's messages."""

from __future__ import annotations

import argparse
from pathlib import Path

from ys_platform.cli.core import ExitCode, with_settings
from ys_platform.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    schemas = commands.add_parser("schemas", help="JSON Schema of every topic's messages")
    sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = sub.add_parser("export", help="write <topic>.schema.json files")
    export.add_argument("folder", help="where to write them")
    export.set_defaults(func=with_settings(_export))


def _export(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.catalog.schemas import write_json_schemas

    for path in write_json_schemas(Path(args.folder)):
        print(path)
    return ExitCode.OK
