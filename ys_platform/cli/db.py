"""``ys-platform db migrate``: the PostgreSQL source of record."""

from __future__ import annotations

import argparse

from ys_platform.cli.core import CommandError, ExitCode, with_settings
from ys_platform.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    db = commands.add_parser("db", help="the PostgreSQL source of record")
    sub = db.add_subparsers(dest="db_command", required=True)
    sub.add_parser("migrate", help="apply pending migrations").set_defaults(
        func=with_settings(migrate)
    )


def migrate(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.postgres import PostgresUnavailableError
    from ys_platform.postgres import MigrationError
    from ys_platform.postgres import migrate as apply_migrations

    try:
        applied = apply_migrations(settings.postgres_conninfo())
    except (PostgresUnavailableError, MigrationError) as exc:
        raise CommandError(f"migrations failed: {exc}") from exc
    print("\n".join(f"applied {name}" for name in applied) or "up to date")
    return ExitCode.OK
