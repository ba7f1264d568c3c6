"""Storage clients and resources without services: validation, secret-free errors, REST errors.

The Kafka Connect tests talk to a small real HTTP server from the standard library on 127.0.0.1
that answers with canned Kafka Connect responses. It is a test double for the REST peer, used
only to exercise URL building and error handling; no Connect worker runs on the build machine
yet, and the Connect integration tests will run against a real one.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import pytest
from pydantic import SecretStr

from ys_platform.clients.clickhouse import ClickHouseUnavailableError, open_clickhouse
from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
from ys_platform.clients.postgres import (
    PostgresUnavailableError,
    describe_target,
    open_postgres,
    redact_conninfo,
)
from ys_platform.clients.qdrant import open_qdrant
from ys_platform.resources.clickhouse import ClickHouseResource
from ys_platform.resources.kafka_connect import KafkaConnectResource
from ys_platform.resources.postgres import PostgresResource
from ys_platform.resources.qdrant import QdrantResource

# Every test here is local (loopback, closed ports, canned answers): 30 s is generous.
pytestmark = pytest.mark.timeout(30)

PASSWORD = "s3cret-Pa55word"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released), so connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- resources: validation at construction -------------------------------------------------------
class TestResourceValidation:
    def test_qdrant_needs_exactly_one_target(self) -> None:
        with pytest.raises(ValueError, match=r"exactly one of url .* or path .*neither"):
            QdrantResource()
        with pytest.raises(ValueError, match=r"exactly one of url .* or path .*both"):
            QdrantResource(url="http://127.0.0.1:6333", path="/tmp/q")

    def test_qdrant_accepts_either_target_and_env_vars(self) -> None:
        assert QdrantResource(path="/tmp/q").path == "/tmp/q"
        resource = QdrantResource(url="http://127.0.0.1:6333", api_key=dg.EnvVar("YS_QDRANT_KEY"))
        assert resource.url == "http://127.0.0.1:6333"

    def test_timeouts_must_be_sane(self) -> None:
        with pytest.raises(ValueError, match="lock_timeout_s"):
            ClickHouseResource(dsn="chdb:///tmp/ch", lock_timeout_s=-1)
        with pytest.raises(ValueError, match="timeout_s"):
            KafkaConnectResource(url="http://127.0.0.1:8083", timeout_s=0)
        with pytest.raises(ValueError, match="connect_timeout_s"):
            PostgresResource(conninfo="host=127.0.0.1", connect_timeout_s=0)

    def test_secrets_can_be_bound_from_the_environment(self) -> None:
        # At construction an EnvVar field holds the variable's name; the value comes at run time.
        ClickHouseResource(dsn=dg.EnvVar("YS_CLICKHOUSE_URL"), password=dg.EnvVar("YS_CH_PW"))
        PostgresResource(conninfo=dg.EnvVar("YS_POSTGRES_DSN"))

    def test_bad_schemes_are_sentences(self) -> None:
        with (
            pytest.raises(ValueError, match=r"must start with chdb://, http:// or https://"),
            open_clickhouse("mysql://db:3306"),
        ):
            pass
        with pytest.raises(ValueError, match="exactly one of a Qdrant server URL"), open_qdrant():
            pass
        with (
            pytest.raises(ValueError, match="must start with http:// or https://"),
            open_qdrant(url="127.0.0.1:6333"),
        ):
            pass
        with pytest.raises(ValueError, match="must start with http:// or https://"):
            KafkaConnectClient("127.0.0.1:8083")


# --- secrets never reach error messages ----------------------------------------------------------
class TestPasswordsStayOut:
    @pytest.mark.parametrize("form", ["uri", "keyvalue"])
    def test_postgres_unreachable_names_target_not_password(self, form: str) -> None:
        port = closed_port()
        conninfo = (
            f"postgresql://alice:{PASSWORD}@127.0.0.1:{port}/defi"
            if form == "uri"
            else f"host=127.0.0.1 port={port} dbname=defi user=alice password={PASSWORD}"
        )
        with (
            pytest.raises(PostgresUnavailableError) as info,
            PostgresResource(conninfo=conninfo).get_client(),
        ):
            pass
        message = str(info.value)
        assert f"alice@127.0.0.1:{port}/defi" in message
        assert "ys-platform local up" in message and "YS_POSTGRES_DSN" in message
        assert PASSWORD not in message
        assert info.value.__cause__ is None  # psycopg's own exception is not chained on

    def test_postgres_malformed_dsn_hides_its_text(self) -> None:
        with (
            pytest.raises(ValueError, match="malformed") as info,
            open_postgres(f"host=127.0.0.1 password={PASSWORD} dbname"),
        ):
            pass
        assert PASSWORD not in str(info.value)
        assert info.value.__cause__ is None

    def test_postgres_redaction_helpers(self) -> None:
        conninfo = f"postgresql://alice:{PASSWORD}@db.internal:6543/defi?sslmode=require"
        assert PASSWORD not in redact_conninfo(conninfo)
        assert "password=***" in redact_conninfo(conninfo)
        assert describe_target(conninfo) == "alice@db.internal:6543/defi"
        assert describe_target("dbname=defi") == "localhost (default socket):5432/defi"

    @pytest.mark.parametrize("where", ["dsn", "argument"])
    def test_clickhouse_server_unreachable_hides_password(self, where: str) -> None:
        port = closed_port()
        if where == "dsn":
            dsn, password = f"http://alice:{PASSWORD}@127.0.0.1:{port}/defi", None
        else:
            dsn, password = f"http://alice@127.0.0.1:{port}/defi", SecretStr(PASSWORD)
        with pytest.raises(ClickHouseUnavailableError) as info, open_clickhouse(dsn, password):
            pass
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and "YS_CLICKHOUSE_URL" in message
        assert PASSWORD not in message
        assert info.value.__cause__ is None


# --- Kafka Connect REST client against a canned REST peer ----------------------------------------
# (method, raw path incl. query) -> (status, JSON body or raw bytes or None)
CANNED: dict[tuple[str, str], tuple[int, Any]] = {
    ("GET", "/connectors"): (200, ["postgres-source"]),
    ("GET", "/connectors/postgres-source/config"): (200, {"connector.class": "Pg", "name": "x"}),
    ("GET", "/connectors/missing/config"): (
        404,
        {"error_code": 404, "message": "Connector missing not found"},
    ),
    ("PUT", "/connectors/a%2Fb%20c/config"): (201, {"name": "a/b c", "config": {}, "tasks": []}),
    ("GET", "/connectors/postgres-source/status"): (
        200,
        {"name": "postgres-source", "connector": {"state": "RUNNING"}, "tasks": []},
    ),
    ("PUT", "/connectors/postgres-source/pause"): (202, None),
    ("PUT", "/connectors/postgres-source/resume"): (
        409,
        {
            "error_code": 409,
            "message": "Cannot complete request because of a conflicting operation",
        },
    ),
    ("POST", "/connectors/postgres-source/restart?includeTasks=true&onlyFailed=true"): (
        202,
        {"name": "postgres-source", "connector": {"state": "RESTARTING"}, "tasks": []},
    ),
    ("POST", "/connectors/postgres-source/restart?includeTasks=false&onlyFailed=false"): (
        204,
        None,
    ),
    ("POST", "/connectors/postgres-source/tasks/0/restart"): (204, None),
    ("DELETE", "/connectors/postgres-source"): (204, None),
    ("GET", "/connectors/broken/status"): (500, b"<html><body>Server Error</body></html>"),
    ("GET", "/connector-plugins"): (200, [{"class": "io.debezium.Pg", "type": "source"}]),
    ("GET", "/health"): (200, {"status": "healthy", "message": "Worker has completed startup"}),
}


class CannedConnect(BaseHTTPRequestHandler):
    canned: dict[tuple[str, str], tuple[int, Any]] = CANNED
    seen: list[tuple[str, str, Any]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append((self.command, self.path, body))
        status, payload = self.canned.get(
            (self.command, self.path),
            (404, {"error_code": 404, "message": f"no route {self.command} {self.path}"}),
        )
        data = payload if isinstance(payload, bytes) else b""
        if payload is not None and not isinstance(payload, bytes):
            data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass


def serve(handler: type[CannedConnect]) -> Iterator[str]:
    handler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def connect_url() -> Iterator[str]:
    yield from serve(CannedConnect)


class TestKafkaConnectClient:
    def test_endpoints_build_the_right_requests(self, connect_url: str) -> None:
        with KafkaConnectResource(url=connect_url + "/", timeout_s=5).get_client() as client:
            assert client.list_connectors() == ["postgres-source"]
            assert client.get_config("postgres-source")["connector.class"] == "Pg"
            assert client.put_config("a/b c", {"k": "v"})["name"] == "a/b c"
            assert client.status("postgres-source")["connector"]["state"] == "RUNNING"
            client.pause("postgres-source")
            assert client.restart("postgres-source")["connector"]["state"] == "RESTARTING"
            assert client.restart("postgres-source", include_tasks=False, only_failed=False) is None
            client.restart_task("postgres-source", 0)
            client.delete("postgres-source")
            assert client.plugins()[0]["class"] == "io.debezium.Pg"
            assert client.is_ready()
        assert ("PUT", "/connectors/a%2Fb%20c/config", {"k": "v"}) in CannedConnect.seen

    def test_http_errors_name_path_status_and_server_message(self, connect_url: str) -> None:
        with KafkaConnectClient(connect_url, timeout_s=5) as client:
            with pytest.raises(ConnectError) as info:
                client.get_config("missing")
            assert info.value.status == 404
            assert info.value.path == "/connectors/missing/config"
            assert str(info.value) == (
                f"Kafka Connect GET /connectors/missing/config at {connect_url} answered HTTP "
                "404: Connector missing not found"
            )
            with pytest.raises(ConnectError, match="HTTP 409: Cannot complete request"):
                client.resume("postgres-source")
            with pytest.raises(ConnectError, match=r"HTTP 500: <html><body>Server Error"):
                client.status("broken")

    def test_unreachable_worker(self) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        with KafkaConnectClient(url, timeout_s=2) as client:
            assert client.is_ready() is False
            with pytest.raises(ConnectError) as info:
                client.list_connectors()
        assert info.value.status is None
        assert f"GET /connectors at {url} failed without an answer" in str(info.value)
        assert "ys-platform local up" in str(info.value)

    def test_readiness_follows_health_then_root(self) -> None:
        class Starting(CannedConnect):
            canned = {("GET", "/health"): (503, {"status": "starting", "message": "starting"})}

        class Old(CannedConnect):
            canned = {("GET", "/"): (200, {"version": "3.7.0"})}  # no /health: 404

        for handler, ready in ((Starting, False), (Old, True)):
            for url in serve(handler):
                with KafkaConnectClient(url, timeout_s=5) as client:
                    assert client.is_ready() is ready
