"""A normal stop of ``make dev``: Ctrl-C while the processor and sink runs are live.

The real command (``ys-platform dev``) runs against the local stack, with a Dagster home of its
own (``--dagster-home``) so the test's runs are the only ones. Once every worker's run is
STARTED, one SIGINT, as a terminal's Ctrl-C sends: the command exits 0, prints no traceback,
and every worker run ended CANCELED (not FAILURE) after its worker committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families
from secure_helpers import generated_passwords, leaks

from ys_platform.assets.workers import WORKER_TAG, worker_job_name
from ys_platform.catalog.topics import CONSUMER_GROUPS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CLI = Path(sys.executable).with_name("ys-platform")
# The five long-running workers: three processors and two sinks, each kept alive by a sensor.
WORKER_JOBS = {worker_job_name(g.group_id) for g in CONSUMER_GROUPS}
UI_TIMEOUT_S = 180
# The sensors tick every 15 s and five runs start on two cores: ~90 s measured on a busy machine.
RUNS_TIMEOUT_S = 360
# A catalog group has lag series from the monitor's first poll after its input topics exist,
# committed or not (a fresh group counts from the start, monitoring/lag.py); the monitor starts
# with the dev server, so the runs' 360 s already covers it: 60 s is for a slow poll.
GROUPS_TIMEOUT_S = 60
# The dev server's own bounds: 30 s for the runs to stop, 90 s for Dagster to shut down.
STOP_TIMEOUT_S = 150

RUNS_QUERY = """
{ runsOrError(limit: 50) { ... on Runs { results { runId jobName status tags { key value } } } } }
"""


def _lagging_groups(port: int) -> set[str]:
    """The groups with a ``kafka_consumergroup_group_lag`` series on the monitor's endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["group"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "kafka_consumergroup_group_lag"
    }


def _worker_runs(port: int) -> list[dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": RUNS_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        runs = json.load(response)["data"]["runsOrError"]["results"]
    return [r for r in runs if any(t["key"] == WORKER_TAG for t in r["tags"])]


def _all_started(port: int) -> list[dict] | None:
    runs = _worker_runs(port)
    return runs if {r["jobName"] for r in runs if r["status"] == "STARTED"} == WORKER_JOBS else None


def _wait(what: str, check, timeout_s: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ys-platform dev exited ({proc.returncode}):\n{log.read_text()}")
        try:
            result = check()
        except OSError:  # the UI is not answering yet
            result = None
        if result:
            return result
        time.sleep(2)
    raise AssertionError(f"{what} not within {timeout_s} s:\n{log.read_text()[-5000:]}")


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """After a failure: the command and everything it started (Dagster runs in its own session)."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(30)


def test_ctrl_c_of_make_dev_cancels_the_worker_runs_quietly(local_stack, tmp_path):
    port = free_port(3300)
    # Not 9308: a `make dev` of the developer's may be serving its monitor there.
    monitor_port = free_port(9328)
    dagster_home = tmp_path / "dagster"
    log = tmp_path / "dev.log"
    env = {
        **os.environ,
        "YS_KAFKA_BOOTSTRAP_SERVERS": local_stack.kafka_bootstrap_servers,
        "YS_MONITOR_PORT": str(monitor_port),
    }
    command = [str(CLI), "dev", "--port", str(port), "--simulate", "0"]
    command += ["--dagster-home", str(dagster_home)]
    with log.open("w") as output:
        proc = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait("the Dagster UI", lambda: _worker_runs(port) is not None, UI_TIMEOUT_S, proc, log)
        started = _wait(
            "a STARTED run of every worker", lambda: _all_started(port), RUNS_TIMEOUT_S, proc, log
        )
        # The monitor the dev server started serves the lag of the five workers' groups.
        catalog = {g.group_id for g in CONSUMER_GROUPS}
        _wait(
            "the five groups' lag on the monitor",
            lambda: catalog <= _lagging_groups(monitor_port),
            GROUPS_TIMEOUT_S,
            proc,
            log,
        )
        proc.send_signal(signal.SIGINT)
        code = proc.wait(STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
    output = log.read_text()
    assert code == 0, output[-5000:]
    for marker in ("Traceback", "Stack Trace"):
        assert marker not in output, output
    (stopped,) = re.findall(r"^stopped (\d+) processor and sink run\(s\)$", output, re.M)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = [r.dagster_run for r in instance.get_run_records()]
        runs = [run for run in runs if WORKER_TAG in run.tags]
        stop_logs = {
            run.run_id: [
                entry.user_message
                for entry in instance.all_logs(run.run_id)
                if "stopped on request after committing" in entry.user_message
            ]
            for run in runs
        }
    statuses = {run.run_id: (run.job_name, run.status) for run in runs}
    live = {r["runId"] for r in started if r["status"] == "STARTED"}
    # Every run the sensors launched, the five live ones included, ended canceled ...
    assert live <= statuses.keys()
    assert {job for job, _ in statuses.values()} == WORKER_JOBS
    assert {status for _, status in statuses.values()} == {dg.DagsterRunStatus.CANCELED}, statuses
    assert int(stopped) == len(runs)
    # ... and each live one only after its worker had stopped and committed.
    assert all(len(stop_logs[run_id]) == 1 for run_id in live), stop_logs


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:  # exited meanwhile
        return {}
    return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)


def _committed(connection, group: str, topic: str) -> int:
    """The sum of ``group``'s committed offsets on ``topic`` (as the administrator)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    admin = connection.admin()
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    if not partitions:  # the topic does not exist yet
        return 0
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in sorted(partitions)]
    )
    (future,) = admin.list_consumer_group_offsets([request]).values()
    return sum(max(tp.offset, 0) for tp in future.result(10).topic_partitions)


def test_make_dev_secure_runs_every_component_as_its_own_principal(secure_connect, tmp_path):
    """``make dev SECURE=1`` on the secure stack: the dev server sets the cluster up as the
    administrator (topics, the catalog's ACLs, the CDC connector), Dagster and the monitor run as
    Dagster's and the monitor's principals with no administrator password in their environment,
    the simulator's rows reach Kafka through Debezium as the connector's principal, and a
    processor run Dagster launched commits as its own principal. Ctrl-C stops it quietly."""
    from ys_platform.clients.env_file import load_env_file
    from ys_platform.clients.kafka_connect import KafkaConnectClient
    from ys_platform.connectors import status

    stack = secure_connect
    settings = stack.settings
    secrets = stack.home / "secrets"
    admin_password = stack.admin.password.get_secret_value()
    dagster_env = load_env_file(secrets / "ys-dagster.env")
    port = free_port(3320)
    monitor_port = free_port(9348)
    log = tmp_path / "dev.log"
    env = {
        **os.environ,
        "YS_HOME": str(stack.home),
        "YS_LOCAL_KAFKA_PORT": str(settings.local_kafka_port),
        "YS_CONNECT_URL": settings.connect_url,
        "YS_POSTGRES_PORT": str(settings.postgres_port),
        "YS_MONITOR_PORT": str(monitor_port),
    }
    command = [str(CLI), "dev", "--secure", "--port", str(port), "--simulate", "20"]
    command += ["--dagster-home", str(tmp_path / "dagster")]
    before = _committed(stack.connection(), "price-aggregation-processor", "market.prices")
    captured = _end_offsets(stack.connection(), "defi.transactions")
    with log.open("w") as output:
        proc = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait("the Dagster UI", lambda: _worker_runs(port) is not None, UI_TIMEOUT_S, proc, log)
        # The catalog's ACLs were applied as the administrator before anything else started.
        assert re.search(
            r"^acls: 10 principals, \d+ grant\(s\) created, 0 extra", log.read_text(), re.M
        )
        # Dagster (every process of `dg dev`) and the monitor: their own principals only.
        children = _descendants(proc.pid)
        dagster_pids = [p for p in children if "dagster" in " ".join(_cmdline(p))]
        monitor_pids = [p for p in children if "ys_platform.cli monitor" in " ".join(_cmdline(p))]
        assert dagster_pids and len(monitor_pids) == 1, (dagster_pids, monitor_pids)
        for pid in [*dagster_pids, *monitor_pids]:
            environ = _environ(pid)
            if not environ:
                continue
            assert environ["YS_KAFKA_SASL_USERNAME"] == "ys-dagster", pid
            assert environ["YS_KAFKA_SASL_PASSWORD"] == dagster_env["YS_KAFKA_SASL_PASSWORD"]
            assert environ["YS_KAFKA_CREDENTIALS_DIR"] == str(secrets)
            assert admin_password not in "\0".join(environ.values()), pid
        # CDC: the connector runs as its own principal and carries the simulator's rows.
        with KafkaConnectClient(settings.connect_url) as client:
            jaas = client.get_config("postgres-source").get("producer.override.sasl.jaas.config")
            assert jaas and 'username="postgres-source"' in jaas and "${file:" in jaas, jaas
            live = status(client, "postgres-source")
        assert live.is_("RUNNING"), (
            live.summary(),
            live.first_trace_line(),
            log.read_text()[-3000:],
        )
        _wait(
            "CDC records on defi.transactions",
            lambda: _end_offsets(stack.connection(), "defi.transactions") > captured,
            RUNS_TIMEOUT_S,
            proc,
            log,
        )
        # A processor run the sensors launched commits as the processor's principal.
        _wait(
            "price-aggregation-processor committing",
            lambda: (
                _committed(stack.connection(), "price-aggregation-processor", "market.prices")
                > before
            ),
            RUNS_TIMEOUT_S,
            proc,
            log,
        )
        proc.send_signal(signal.SIGINT)
        code = proc.wait(STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
        with KafkaConnectClient(settings.connect_url) as client, contextlib.suppress(Exception):
            client.delete("postgres-source")
    output = log.read_text()
    assert code == 0, output[-5000:]
    # Nothing of the platform's was refused (the monitor may say once that it cannot describe
    # another namespace's group: the tests' own, left on the session's stack).
    markers = ("Traceback", "Stack Trace", "Topic authorization", "Cluster authorization")
    for marker in (*markers, "TopicAuthorization", "simulator stopped"):
        assert marker not in output, output[-5000:]
    # The monitor's health report could read everything it checks.
    assert "alert raised health:" not in output, output[-5000:]
    # No generated password in the terminal's output or anywhere in Dagster's instance (event
    # log, run storage, compute logs).
    passwords = generated_passwords(secrets)
    found = leaks(passwords, "the dev server's output", output)
    for path in (tmp_path / "dagster").rglob("*"):
        if path.is_file():
            found += leaks(passwords, str(path), path.read_bytes())
    assert not found, found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _end_offsets(connection, topic: str) -> int:
    from confluent_kafka import TopicPartition

    consumer = connection.consumer(f"test-dev-{os.getpid()}")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()
