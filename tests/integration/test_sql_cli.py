"""``ys-platform sql`` on a chDB store with known rows: each output format exactly, a command
(DDL, INSERT) answered "OK", and a bad statement answered with the server's error in one line
and exit code 1.

Each call is its own ``ys-platform`` process, as an operator runs it: chDB hosts one database
path per process, and the store is this test's own (``YS_CLICKHOUSE_URL``), so no running sink
holds it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).with_name("ys-platform")


@pytest.fixture(scope="module")
def sql(tmp_path_factory):
    env = {**os.environ, "YS_CLICKHOUSE_URL": f"chdb://{tmp_path_factory.mktemp('chdb')}/store"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(CLI), "sql", *args], env=env, capture_output=True, text=True, timeout=120
        )

    return run


def test_sql_formats_and_errors(sql):
    create = sql(
        "CREATE TABLE prices (symbol String, price Float64, ts DateTime64(3, 'UTC'), "
        "note Nullable(String)) ENGINE = MergeTree ORDER BY (symbol, ts)"
    )
    assert (create.returncode, create.stdout) == (0, "OK\n"), create.stderr
    insert = sql(
        "INSERT INTO prices VALUES ('BTC/USD', 65000.5, '2026-01-05 12:00:00.250', NULL), "
        "('ETH/USD', 3000.25, '2026-01-05 12:00:01.000', 'a, \"quoted\" note')"
    )
    assert (insert.returncode, insert.stdout) == (0, "OK\n"), insert.stderr

    query = "SELECT symbol, price, ts, note FROM prices ORDER BY symbol"
    table = sql(query)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == [
        "symbol   price    ts                          note",
        "-------  -------  --------------------------  ----------------",
        "BTC/USD  65000.5  2026-01-05T12:00:00.250000  NULL",
        'ETH/USD  3000.25  2026-01-05T12:00:01         a, "quoted" note',
        "(2 rows)",
    ]
    csv = sql(query, "--format", "csv")
    assert csv.stdout.splitlines() == [
        "symbol,price,ts,note",
        "BTC/USD,65000.5,2026-01-05T12:00:00.250000,",
        'ETH/USD,3000.25,2026-01-05T12:00:01,"a, ""quoted"" note"',
    ]
    as_json = sql(query, "--format", "json")
    assert json.loads(as_json.stdout) == [
        {"symbol": "BTC/USD", "price": 65000.5, "ts": "2026-01-05T12:00:00.250000", "note": None},
        {
            "symbol": "ETH/USD",
            "price": 3000.25,
            "ts": "2026-01-05T12:00:01",
            "note": 'a, "quoted" note',
        },
    ]
    bad = sql("SELECT * FROM no_such_table")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith(
        "ys-platform: ClickHouse refused the statement: Code: 60. DB::Exception: "
    )
    assert "no_such_table" in bad.stderr and bad.stderr.endswith("(UNKNOWN_TABLE)\n")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    syntax = sql("SELEC 1")
    assert syntax.returncode == 1 and syntax.stderr.count("\n") == 1
    assert "Code: 62. DB::Exception: Syntax error" in syntax.stderr
