"""Clients follow the local stack's ports, and a stack the clients would miss does not start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ys_platform.local import LocalStackError
from ys_platform.local import connect as local_connect
from ys_platform.local import kafka as local_kafka
from ys_platform.local.config import kafka_nodes, reaches_nodes
from ys_platform.local.state import Layout
from ys_platform.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("YS_"):
            monkeypatch.delenv(name)


def test_the_local_kafka_port_alone_moves_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YS_LOCAL_KAFKA_PORT", "29092")
    assert load_settings().kafka_bootstrap_servers == "127.0.0.1:29092"


def test_postgres_and_connect_clients_follow_their_local_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("YS_POSTGRES_PORT", "21432")
    monkeypatch.setenv("YS_CONNECT_URL", "http://127.0.0.1:22083")
    settings = load_settings()
    assert settings.postgres_conninfo() == (
        "host=127.0.0.1 port=21432 dbname=yieldsensei user=yieldsensei"
    )
    # The worker the stack runs listens where the clients look: one variable for both.
    assert local_connect.is_managed(settings)
    assert local_connect.port(settings) == 22083


def test_disagreeing_kafka_variables_stop_the_local_stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("YS_LOCAL_KAFKA_PORT", "29092")
    monkeypatch.setenv("YS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    settings = load_settings(home=tmp_path)
    with pytest.raises(LocalStackError) as info:
        local_kafka.up(settings, Layout(settings.home_dir), None)
    assert str(info.value) == (
        "YS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 and YS_LOCAL_KAFKA_PORT=29092 disagree: the "
        "local brokers would listen on 127.0.0.1:29092, but the clients would connect elsewhere. "
        "Unset YS_KAFKA_BOOTSTRAP_SERVERS (the clients then follow YS_LOCAL_KAFKA_PORT) or set "
        "it to 127.0.0.1:29092."
    )
    assert not (tmp_path / "kafka").exists()  # stopped before anything was written


@pytest.mark.parametrize(
    ("bootstrap", "port"),
    [
        ("127.0.0.1:29092", "29092"),
        ("localhost:29092", "29092"),
        ("broker.example:9092", None),  # only the servers: a cluster of the user's own
        ("127.0.0.1:29092", None),
    ],
)
def test_agreeing_or_single_variables_pass(
    monkeypatch: pytest.MonkeyPatch, bootstrap: str, port: str | None
) -> None:
    monkeypatch.setenv("YS_KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    if port is not None:
        monkeypatch.setenv("YS_LOCAL_KAFKA_PORT", port)
    settings = load_settings()
    local_kafka.check_clients_reach(settings, local_kafka.nodes(settings, 1))


def test_reaches_nodes_of_a_three_broker_stack() -> None:
    nodes = kafka_nodes(29092, 3)
    assert reaches_nodes("127.0.0.1:29093", nodes)
    assert reaches_nodes("127.0.0.1:29092,localhost:29094", nodes)
    assert not reaches_nodes("127.0.0.1:29095", nodes)
    assert not reaches_nodes("127.0.0.1:29092,10.0.0.5:29093", nodes)
    assert not reaches_nodes("127.0.0.1:29192", nodes)  # a controller, not a broker
