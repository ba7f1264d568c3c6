"""``ys-platform sql``'s pure parts: which statements return rows, the server's error on one
line, and the three output formats of a known result."""

import json
from datetime import datetime
from decimal import Decimal

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from ys_platform.operations.sql import (
    MAX_ERROR_CHARS,
    QueryResult,
    format_result,
    returns_rows,
    server_message,
)

RESULT = QueryResult(
    ("symbol", "price", "at", "tags", "note"),
    (
        ("ETH/USD", Decimal("3000.10"), datetime(2026, 1, 5, 12, 0, 0, 250000), ["a", "b"], None),
        ("BTC/USD", 65000.5, datetime(2026, 1, 5, 12, 0, 1), [], "x,y"),
    ),
    True,
)


@pytest.mark.parametrize(
    ("statement", "rows"),
    [
        ("SELECT 1", True),
        ("  with x as (select 1) select * from x", True),
        ("-- a comment\n/* another */ SHOW TABLES", True),
        ("(SELECT 1) UNION ALL (SELECT 2)", True),
        ("DESCRIBE TABLE t", True),
        ("EXPLAIN SELECT 1", True),
        ("INSERT INTO t VALUES (1)", False),
        ("CREATE TABLE t (a Int8) ENGINE = Memory", False),
        ("OPTIMIZE TABLE t FINAL", False),
        ("", False),
    ],
)
def test_statements_that_return_rows(statement, rows):
    assert returns_rows(statement) is rows


def test_the_server_message_is_one_line_from_its_code():
    error = DatabaseError(
        "HTTPDriver for http://h:8123 received ClickHouse error code 60\n"
        " Code: 60. DB::Exception: Unknown table expression identifier 'nope'.\n (UNKNOWN_TABLE)"
    )
    assert server_message(error) == (
        "Code: 60. DB::Exception: Unknown table expression identifier 'nope'. (UNKNOWN_TABLE)"
    )
    long = server_message(DatabaseError("Code: 62. DB::Exception: Syntax error " + "x, " * 500))
    assert len(long) == MAX_ERROR_CHARS and long.endswith("…")


def test_table_format():
    assert format_result(RESULT, "table").splitlines() == [
        "symbol   price    at                          tags        note",
        "-------  -------  --------------------------  ----------  ----",
        'ETH/USD  3000.10  2026-01-05T12:00:00.250000  ["a", "b"]  NULL',
        "BTC/USD  65000.5  2026-01-05T12:00:01         []          x,y",
        "(2 rows)",
    ]


def test_csv_format():
    assert format_result(RESULT, "csv").splitlines() == [
        "symbol,price,at,tags,note",
        'ETH/USD,3000.10,2026-01-05T12:00:00.250000,"[""a"", ""b""]",',
        'BTC/USD,65000.5,2026-01-05T12:00:01,[],"x,y"',
    ]


def test_json_format_keeps_decimals_exact():
    assert json.loads(format_result(RESULT, "json")) == [
        {
            "symbol": "ETH/USD",
            "price": "3000.10",
            "at": "2026-01-05T12:00:00.250000",
            "tags": ["a", "b"],
            "note": None,
        },
        {
            "symbol": "BTC/USD",
            "price": 65000.5,
            "at": "2026-01-05T12:00:01",
            "tags": [],
            "note": "x,y",
        },
    ]
    empty = QueryResult(("a",), (), True)
    assert format_result(empty, "json") == "[]"
    assert format_result(empty, "table").splitlines() == ["a", "-", "(0 rows)"]
