"""``ys-platform sql "SELECT ..."``: one statement on ClickHouse (chDB or YS_CLICKHOUSE_URL)."""

from __future__ import annotations

import argparse

from ys_platform.cli.core import ExitCode, with_settings
from ys_platform.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    from ys_platform.operations.sql import FORMATS

    sql = commands.add_parser("sql", help="run one SQL statement on ClickHouse")
    sql.add_argument("statement", help='e.g. "SELECT count() FROM market_data"')
    sql.add_argument("--format", choices=FORMATS, default="table")
    sql.set_defaults(func=with_settings(_sql))


def _sql(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.clickhouse import client_factory
    from ys_platform.operations.sql import format_result, run_statement

    clients = client_factory(settings.clickhouse_dsn, settings.clickhouse_password)
    result = run_statement(clients, args.statement)
    print(format_result(result, args.format) if result.returns_rows else "OK")
    return ExitCode.OK
