"""One SQL statement on ClickHouse (chDB or a server) and its result as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ys_platform.operations.admin import OperationError

if TYPE_CHECKING:
    # Imported where a statement runs: ``ys-platform --help`` loads no ClickHouse driver.
    from clickhouse_connect.driver.exceptions import DatabaseError

    from ys_platform.clients.clickhouse import ClickHouseClientFactory

FORMATS = ("table", "csv", "json")

# Statements that return rows; any other (DDL, INSERT, OPTIMIZE, ...) runs as a command.
_ROW_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
_LEADING_COMMENTS = re.compile(r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*", re.DOTALL)
# The server's message starts here; an HTTP client puts its own words before it.
_SERVER_MESSAGE = re.compile(r"Code: \d+\..*", re.DOTALL)
# The parser's "Expected one of: ..." runs to hundreds of tokens; the start says enough.
MAX_ERROR_CHARS = 400


class QueryError(OperationError):
    """ClickHouse refused the statement; the message is the server's, on one line."""


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    returns_rows: bool
    """False for a command (DDL, INSERT): there is nothing to show but that it ran."""


def returns_rows(statement: str) -> bool:
    words = _LEADING_COMMENTS.sub("", statement).lstrip("(").split(None, 1)
    return bool(words) and words[0].upper() in _ROW_STATEMENTS


def server_message(error: DatabaseError) -> str:
    """The server's error on one line, cut to :data:`MAX_ERROR_CHARS`."""
    text = str(error)
    found = _SERVER_MESSAGE.search(text)
    line = " ".join((found.group(0) if found else text).split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def run_statement(clients: ClickHouseClientFactory, statement: str) -> QueryResult:
    """Run ``statement`` with a client of ``clients`` (opened and closed here: chDB lets one
    process hold a path at a time)."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    with clients() as client:
        try:
            if returns_rows(statement):
                result = client.query(statement)
                return QueryResult(
                    tuple(result.column_names), tuple(map(tuple, result.result_rows)), True
                )
            client.command(statement)
            return QueryResult((), (), False)
        except DatabaseError as exc:
            raise QueryError(f"ClickHouse refused the statement: {server_message(exc)}") from None


def _plain(value: Any) -> Any:
    """A value as JSON has it: datetimes in ISO 8601, decimals as exact strings."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    plain = _plain(value)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)


def format_result(result: QueryResult, form: str) -> str:
    """``table`` (aligned, with a row count), ``csv`` (a header line) or ``json`` (an array of
    objects, one per row)."""
    if form == "json":
        rows = [dict(zip(result.columns, map(_plain, row), strict=True)) for row in result.rows]
        return json.dumps(rows, ensure_ascii=False, indent=None)
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([["" if v is None else _cell(v) for v in row] for row in result.rows])
        return out.getvalue().rstrip("\n")
    if form == "table":
        return _table(result.columns, [[_cell(v) for v in row] for row in result.rows])
    raise ValueError(f"unknown format {form!r}; one of {', '.join(FORMATS)}")


def _table(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.append(f"({len(cells)} row{'' if len(cells) == 1 else 's'})")
    return "\n".join(lines)
