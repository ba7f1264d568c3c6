"""The ``ys-platform`` command line: its parser, its exit codes and how errors are printed.

Each case stops before any service is reached (a bad setting, an unknown name, a missing file,
a stopped local stack on free ports), so none needs the local stack.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ys_platform.cli import build_parser, main
from ys_platform.cli.core import CommandError, ExitCode, exit_code_of, run
from ys_platform.clients.kafka import KafkaUnreachableError
from ys_platform.clients.locks import StoreLockedError
from ys_platform.connectors import ConnectorFileError
from ys_platform.local.state import LocalStackError
from ys_platform.operations import OperationError
from ys_platform.operations.sql import QueryError
from ys_platform.settings import SettingsError
from ys_platform.sinks.clickhouse import SinkConfigError, SinkRangeError
from ys_platform.streaming.topics import TopicAdminError
from ys_platform.streaming.worker import WorkerStopped

CLI = Path(sys.executable).with_name("ys-platform")
GROUPS = ["local", "topics", "acls", "groups", "dlq", "schemas", "db", "connectors", "processor"]
GROUPS += ["sink", "monitor", "health", "simulate", "load", "search", "sql", "dev"]


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Settings of a stack that is not running: a fresh YS_HOME and ports nothing listens on."""
    for name in ("YS_KAFKA_BOOTSTRAP_SERVERS", "YS_POSTGRES_DSN", "YS_CLICKHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("YS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("YS_LOCAL_KAFKA_PORT", "29392")
    monkeypatch.setenv("YS_POSTGRES_PORT", "25432")
    monkeypatch.setenv("YS_CONNECT_URL", "http://127.0.0.1:28083")
    return tmp_path


def test_exit_codes_keep_their_meanings():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 130]
    assert (ExitCode.OK, ExitCode.FAILED, ExitCode.CONFIG, ExitCode.NOT_RUNNING) == (0, 1, 2, 3)


def test_help_lists_every_command_group(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    listed = capsys.readouterr().out
    listed_groups = re.findall(r"^    ([a-z]+)\b", listed, re.MULTILINE)
    assert listed_groups == GROUPS


def test_sink_run_has_every_option_of_the_old_sink_command():
    args = build_parser().parse_args(
        [
            "sink",
            "run",
            "clickhouse",
            "--namespace",
            "t1.",
            "--max-idle",
            "5",
            "--dsn",
            "chdb:///tmp/x",
            "--mapping",
            "m.json",
            "--batch-size",
            "3000",
            "--instance",
            "2",
            "--flush-interval",
            "0.3",
        ]
    )
    assert (args.sink, args.namespace, args.max_idle, args.dsn) == (
        "clickhouse",
        "t1.",
        5.0,
        "chdb:///tmp/x",
    )
    assert (args.mapping, args.batch_size, args.instance) == ("m.json", 3000, "2")
    assert args.flush_interval == 0.3


def test_sink_and_processor_instances_default_to_none():
    parser = build_parser()
    sink = parser.parse_args(["sink", "run", "clickhouse"])
    assert sink.instance is None
    assert (sink.namespace, sink.max_idle, sink.dsn, sink.mapping) == ("", None, None, None)
    assert (sink.batch_size, sink.flush_interval) == (None, None)
    processor = parser.parse_args(["processor", "run", "price-aggregation"])
    assert processor.instance is None
    # None: the worker's own default (WorkerConfig.batch_size), written once.
    assert (processor.batch_size, processor.namespace, processor.max_idle) == (None, "", None)


def test_sink_run_rejects_an_unknown_option(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["sink", "run", "clickhouse", "--no-such-option"])
    assert exited.value.code == ExitCode.CONFIG
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_dev_takes_the_port_and_a_dagster_home():
    args = build_parser().parse_args(["dev", "--port", "3300", "--dagster-home", "/tmp/dh"])
    assert (args.port, args.dagster_home, args.simulate) == (3300, Path("/tmp/dh"), 50.0)
    assert build_parser().parse_args(["dev"]).port == 3000


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SettingsError("Invalid configuration"), ExitCode.CONFIG),
        (SinkConfigError("bad mapping"), ExitCode.CONFIG),
        (ConnectorFileError("bad connector file"), ExitCode.CONFIG),
        (CommandError("unknown name", ExitCode.CONFIG), ExitCode.CONFIG),
        (LocalStackError("kafka did not start"), ExitCode.FAILED),
        (TopicAdminError("broker down"), ExitCode.FAILED),
        (WorkerStopped("fenced"), ExitCode.FAILED),
        (WorkerStopped("dead letters not delivered"), ExitCode.FAILED),
        (KafkaUnreachableError("no broker answers"), ExitCode.FAILED),
        (SinkRangeError("range"), ExitCode.FAILED),
        (StoreLockedError("locked", path=Path("/x"), waited_s=1.0), ExitCode.FAILED),
        (CommandError("it failed"), ExitCode.FAILED),
        (OperationError("group has members"), ExitCode.FAILED),
        (QueryError("ClickHouse refused the statement"), ExitCode.FAILED),
        (ValueError("a bug"), None),
    ],
)
def test_each_error_has_one_exit_code(error, code):
    assert exit_code_of(error) == code


def test_a_bad_setting_exits_2_with_the_variable_named(isolated, monkeypatch, capsys):
    monkeypatch.setenv("YS_KAFKA_BOOTSTRAP_SERVERS", "no-port-here")
    assert main(["topics", "apply", "--dry-run"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err.startswith("ys-platform: Invalid configuration:")
    assert "YS_KAFKA_BOOTSTRAP_SERVERS" in err and "Traceback" not in err


def test_an_unknown_processor_exits_2(isolated, capsys):
    assert main(["processor", "run", "no-such"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err == (
        "ys-platform: no processor named 'no-such'; known: crosschain-arbitrage, "
        "price-aggregation, risk-assessment\n"
    )


def test_an_unknown_topic_exits_2(isolated, capsys):
    assert main(["topics", "apply", "--dry-run", "no.such.topic"]) == ExitCode.CONFIG
    assert capsys.readouterr().err == "ys-platform: 'no.such.topic' is not a catalog topic\n"


def test_an_unknown_dead_letter_group_exits_2(isolated, capsys):
    assert main(["dlq", "list", "no-such-group"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err == "ys-platform: 'no-such-group' is not a catalog consumer group\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["groups", "reset-offsets", "g", "--topic", "t"],  # no target
        ["groups", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--to-latest"],
        ["groups", "reset-offsets", "g", "--to-earliest"],  # no topic
        ["groups", "reset-offsets", "g", "--topic", "t", "--to-datetime", "yesterday"],
        ["dlq", "replay", "price-aggregation-processor", "--since", "2026-13-01"],
        ["sql", "SELECT 1", "--format", "xml"],
    ],
)
def test_operator_command_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: ys-platform" in capsys.readouterr().err


def test_a_time_without_a_zone_is_utc():
    from datetime import UTC, datetime

    args = build_parser().parse_args(
        ["groups", "reset-offsets", "g", "--topic", "t", "--to-datetime", "2026-01-05T12:00"]
    )
    assert args.to_datetime == datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_a_missing_sink_mapping_exits_2(isolated, capsys):
    missing = isolated / "missing.json"
    assert main(["sink", "run", "clickhouse", "--mapping", str(missing)]) == ExitCode.CONFIG
    assert capsys.readouterr().err == (
        f"ys-platform: {missing}: the ClickHouse sink mapping file does not exist\n"
    )


def test_logs_of_a_service_that_never_started_exit_1(isolated, capsys):
    assert main(["local", "logs", "postgres"]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert err.startswith("ys-platform: ")
    assert err.endswith("does not exist yet (has postgres ever started?)\n")


def test_status_of_a_stopped_stack_exits_3(isolated):
    # A subprocess, as a user runs it: the real console script and its exit code.
    result = subprocess.run(
        [str(CLI), "local", "status"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == ExitCode.NOT_RUNNING, result.stdout + result.stderr
    services, workers = result.stdout.split("\n\n")
    rows = {line.split()[0]: line.split()[1] for line in services.splitlines()[1:]}
    assert rows["kafka-1"] == "stopped" and rows["postgres"] == "stopped"
    assert workers.startswith("worker metrics: none running")
    assert result.stderr == ""


def test_an_unexpected_error_is_a_sentence_then_its_traceback(capsys):
    def broken(args: argparse.Namespace, settings) -> ExitCode:
        raise ZeroDivisionError("division by zero")

    assert run(broken, argparse.Namespace()) == ExitCode.FAILED
    first, *rest = capsys.readouterr().err.splitlines()
    assert first == (
        "ys-platform: unexpected ZeroDivisionError (a bug; the traceback follows): division by zero"
    )
    assert rest[0] == "Traceback (most recent call last):"


def test_ctrl_c_exits_130_without_a_traceback(capsys):
    def interrupted(args: argparse.Namespace, settings) -> ExitCode:
        raise KeyboardInterrupt

    assert run(interrupted, argparse.Namespace()) == ExitCode.INTERRUPTED
    assert capsys.readouterr().err == "ys-platform: interrupted\n"
