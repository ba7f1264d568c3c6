"""chDB and Qdrant local mode for real: round trips, and the one-process-per-path lock.

A second Python process (the machine's real chDB / qdrant-client, started with
``sys.executable``) holds the store; this process must wait for it, or give up with a sentence
naming the path when it does not let go.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from qdrant_client import models

from ys_platform.clients.clickhouse import ChdbPathConflictError, open_clickhouse, waiting_readers
from ys_platform.clients.locks import StoreLockedError, flock_held
from ys_platform.clients.qdrant import open_qdrant
from ys_platform.resources.clickhouse import ClickHouseResource
from ys_platform.resources.qdrant import QdrantResource

# Each test starts at most two engines and waits at most ~10 s for a lock: 120 s is a hang.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# How long a holder keeps the store in the "waits" tests, and how much of that we must observe
# waiting (the rest is slack for the holder's exit being noticed at the next backoff step).
HOLD_S = 2.0
MIN_WAIT_S = 1.5
# The give-up tests: our deadline, and a holder that outlives it by far.
SHORT_TIMEOUT_S = 2.0
FOREVER_S = 60.0
# chDB's import alone takes ~1 s and ~250 MiB; leave room on a loaded build machine.
HOLDER_START_S = 60.0

CHDB_HOLDER = """
import sys, time, clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
client.command("SELECT 1")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
client.close()
"""

QDRANT_HOLDER = """
import sys, time
from qdrant_client import QdrantClient
client = QdrantClient(path=sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
client.close()
"""


@contextmanager
def holder(code: str, path: Path, hold_s: float) -> Iterator[subprocess.Popen[str]]:
    """Run ``code`` in another process; return once it says it holds ``path``; kill it on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(hold_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], HOLDER_START_S)
        line = proc.stdout.readline().strip() if ready else ""
        assert line == "held", f"the holder process did not take {path} (exit {proc.poll()})"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


# --- chDB ----------------------------------------------------------------------------------------
def test_chdb_arrow_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    rows = pa.table(
        {
            "ts": pa.array(
                [datetime(2025, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC), datetime(2025, 1, 1, 0, 1)],
                pa.timestamp("ms", tz="UTC"),
            ),
            "symbol": ["ETH", "BTC"],
            "price": [3312.25, 97001.5],
        }
    )
    with ClickHouseResource(dsn=f"chdb://{path}").get_client() as client:
        client.command(
            "CREATE TABLE prices (ts DateTime64(3, 'UTC'), symbol LowCardinality(String), "
            "price Float64) ENGINE = MergeTree ORDER BY (symbol, ts)"
        )
        client.insert_arrow("prices", rows)
        back = client.query("SELECT ts, symbol, price FROM prices ORDER BY ts").result_rows
    assert [(ts.astimezone(UTC), sym, price) for ts, sym, price in back] == [
        (datetime(2025, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC), "ETH", 3312.25),
        (datetime(2025, 1, 1, 0, 1, tzinfo=UTC), "BTC", 97001.5),
    ]
    # Closing the last client shuts the engine down and releases the path for other processes.
    assert flock_held(path / "status") is False
    with open_clickhouse(f"chdb://{path}") as client:
        assert client.command("SELECT count() FROM prices") == 2


def test_chdb_second_path_in_one_process_is_explained(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    with open_clickhouse(f"chdb://{first}") as client:
        client.command("SELECT 1")
        with pytest.raises(ChdbPathConflictError) as info, open_clickhouse(f"chdb://{second}"):
            pass
    message = str(info.value)
    assert str(first) in message and str(second) in message and "one database path" in message
    with open_clickhouse(f"chdb://{second}") as client:  # fine once the first is closed
        assert client.command("SELECT 2") == 2


def test_chdb_other_failures_are_not_taken_for_a_lock(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    started = time.monotonic()
    with pytest.raises(Exception) as info, open_clickhouse(f"chdb://{not_a_directory}"):
        pass
    assert not isinstance(info.value, StoreLockedError)
    assert time.monotonic() - started < 10  # no 30 s wait for a lock nobody holds


def test_chdb_waits_for_the_holder_to_exit(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    with holder(CHDB_HOLDER, path, HOLD_S):
        started = time.monotonic()
        with open_clickhouse(f"chdb://{path}", lock_timeout_s=30) as client:
            waited = time.monotonic() - started
            assert client.command("SELECT 42") == 42
    assert waited >= MIN_WAIT_S


WAITER = """
import sys
from ys_platform.clients.clickhouse import open_clickhouse
with open_clickhouse("chdb://" + sys.argv[1], lock_timeout_s=30) as client:
    print(client.command("SELECT 42"), flush=True)
"""


def test_chdb_waits_quietly(tmp_path: Path) -> None:
    """chDB prints "Cannot lock file …" to stderr whenever it starts on a held path; a waiter
    probes the lock first, so its stderr holds nothing but what it says itself."""
    path = tmp_path / "clickhouse"
    with holder(CHDB_HOLDER, path, HOLD_S):
        waiter = subprocess.run(
            [sys.executable, "-c", WAITER, str(path)],
            capture_output=True,
            text=True,
            timeout=HOLDER_START_S,
        )
    assert waiter.returncode == 0, waiter.stderr
    assert waiter.stdout.strip() == "42"
    assert "Cannot lock" not in waiter.stderr and "Exception" not in waiter.stderr


def test_chdb_a_second_client_in_this_process_does_not_wait_for_the_first(
    tmp_path: Path,
) -> None:
    """This process's own lock is not another process's: the probe is skipped while it holds
    the path, and the second client joins the engine at once."""
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    with open_clickhouse(dsn) as first:
        assert first.command("SELECT 1") == 1
        started = time.monotonic()
        with open_clickhouse(dsn, lock_timeout_s=SHORT_TIMEOUT_S) as second:
            assert second.command("SELECT 2") == 2
        assert time.monotonic() - started < SHORT_TIMEOUT_S


def test_chdb_gives_up_with_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    with holder(CHDB_HOLDER, path, FOREVER_S):
        started = time.monotonic()
        with (
            pytest.raises(StoreLockedError) as info,
            open_clickhouse(f"chdb://{path}", lock_timeout_s=SHORT_TIMEOUT_S),
        ):
            pass
        elapsed = time.monotonic() - started
    assert SHORT_TIMEOUT_S <= elapsed < SHORT_TIMEOUT_S + 5
    message = str(info.value)
    assert f"'{path}'" in message and "another process" in message
    assert "YS_CLICKHOUSE_URL" in message
    assert info.value.path == str(path)


# --- Qdrant local mode ---------------------------------------------------------------------------
def test_qdrant_round_trip(tmp_path: Path) -> None:
    resource = QdrantResource(path=str(tmp_path / "qdrant"))
    with resource.get_client() as client:
        client.create_collection(
            "tokens", vectors_config=models.VectorParams(size=3, distance=models.Distance.COSINE)
        )
        client.upsert(
            "tokens",
            [
                models.PointStruct(id=1, vector=[1.0, 0.0, 0.0], payload={"symbol": "ETH"}),
                models.PointStruct(id=2, vector=[0.0, 1.0, 0.0], payload={"symbol": "BTC"}),
            ],
        )
    with resource.get_client() as client:  # reopened: the data is on disk, the lock was freed
        hits = client.query_points("tokens", query=[0.9, 0.1, 0.0], limit=1).points
        assert [(hit.id, hit.payload) for hit in hits] == [(1, {"symbol": "ETH"})]


def test_qdrant_second_client_in_one_process_waits_then_fails(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    with (
        open_qdrant(path=path),
        pytest.raises(StoreLockedError, match="in this or another process"),
        open_qdrant(path=path, lock_timeout_s=0.5),
    ):
        pass


def test_qdrant_waits_for_the_holder_to_exit(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    with holder(QDRANT_HOLDER, path, HOLD_S):
        started = time.monotonic()
        with open_qdrant(path=path, lock_timeout_s=30) as client:
            waited = time.monotonic() - started
            assert client.get_collections().collections == []
    assert waited >= MIN_WAIT_S


def test_qdrant_gives_up_with_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    with holder(QDRANT_HOLDER, path, FOREVER_S):
        started = time.monotonic()
        with (
            pytest.raises(StoreLockedError) as info,
            open_qdrant(path=path, lock_timeout_s=SHORT_TIMEOUT_S),
        ):
            pass
        elapsed = time.monotonic() - started
    assert SHORT_TIMEOUT_S <= elapsed < SHORT_TIMEOUT_S + 5
    message = str(info.value)
    assert f"'{path}'" in message and "YS_QDRANT_URL" in message


# --- waiters announce themselves -----------------------------------------------------------------
def test_a_waiter_is_announced_while_it_waits_and_not_after(tmp_path: Path) -> None:
    """A process waiting for a held chDB path shows in WaitingReaders (what a sink checks
    between flushes) until it has opened the path; nobody shows before or after."""
    path = tmp_path / "clickhouse"
    readers = waiting_readers(f"chdb://{path}")
    assert readers is not None and not readers.any()
    with holder(CHDB_HOLDER, path, HOLD_S):
        assert not readers.any()  # the holder itself is not a waiter
        waiter = subprocess.Popen(
            [sys.executable, "-c", WAITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + HOLDER_START_S
            while not readers.any():
                assert waiter.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            assert readers.wait_until_served(HOLDER_START_S) < HOLDER_START_S
            stdout, _ = waiter.communicate(timeout=HOLDER_START_S)
        finally:
            waiter.kill()
    assert stdout.strip() == "42" and not readers.any()
    assert waiting_readers("chdb://memory") is None
    assert waiting_readers("http://localhost:8123") is None
