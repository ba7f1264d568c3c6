"""How many brokers health expects, and who holds an embedded store: no services needed."""

from __future__ import annotations

import fcntl
import os

import pytest

from ys_platform.cli.health import GROUP_LAG_WARN_TEXT
from ys_platform.local.state import KafkaCluster, Layout, write_cluster
from ys_platform.monitoring.health import (
    GROUP_LAG_WARN_RECORDS,
    GroupHealth,
    check_clickhouse,
    expected_brokers,
    lock_holder,
)
from ys_platform.monitoring.lag import GroupFilter
from ys_platform.settings import SettingsError, load_settings


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("YS_KAFKA_BOOTSTRAP_SERVERS", "YS_KAFKA_EXPECTED_BROKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("YS_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_expected_brokers_follow_the_local_stack_unless_set(clean_env, tmp_path):
    assert expected_brokers(load_settings()) is None  # no stack formatted yet
    write_cluster(Layout(tmp_path / "home"), KafkaCluster("id", 3))
    assert expected_brokers(load_settings()) == 3
    clean_env.setenv("YS_KAFKA_EXPECTED_BROKERS", "5")
    assert expected_brokers(load_settings()) == 5


def test_expected_brokers_are_unknown_for_a_cluster_elsewhere(clean_env, tmp_path):
    write_cluster(Layout(tmp_path / "home"), KafkaCluster("id", 3))
    clean_env.setenv("YS_KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    assert expected_brokers(load_settings()) is None


def test_a_bad_expected_broker_count_names_the_variable(clean_env):
    clean_env.setenv("YS_KAFKA_EXPECTED_BROKERS", "0")
    with pytest.raises(SettingsError, match="YS_KAFKA_EXPECTED_BROKERS"):
        load_settings()


def test_lock_holder_names_the_process_holding_the_flock(tmp_path):
    lock = tmp_path / "status"
    lock.write_text("")
    assert lock_holder(lock) is None
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        holder = lock_holder(lock)
    finally:
        os.close(fd)
    assert holder is not None and holder.startswith(f"pid {os.getpid()} (")


def test_a_held_chdb_path_is_busy_not_down(tmp_path):
    path = tmp_path / "clickhouse"
    path.mkdir()
    (path / "status").write_text("")
    fd = os.open(path / "status", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Another open file description holds it, as another process would.
        health = check_clickhouse(f"chdb://{path}")
    finally:
        os.close(fd)
    assert (health.state, health.ok) == ("busy", True)
    assert health.detail.startswith(f"held by pid {os.getpid()} (")


def test_a_group_far_behind_is_a_warning_not_a_failure():
    assert f"{GROUP_LAG_WARN_RECORDS:,}" == GROUP_LAG_WARN_TEXT
    behind = GroupHealth("clickhouse-sink", "EMPTY", 0, 11, 3, warn_above=10).component()
    assert (behind.ok, behind.warn) == (True, True)
    assert behind.detail == (
        "EMPTY, 0 member(s), lag 11 on 3 partition(s): over 10 records, behind or stopped "
        "(`ys-platform monitor` tells which, in seconds)"
    )
    within = GroupHealth("clickhouse-sink", "STABLE", 1, 10, 3, warn_above=10).component()
    assert (within.ok, within.warn, within.detail) == (
        True,
        False,
        "STABLE, 1 member(s), lag 10 on 3 partition(s)",
    )
    never = GroupHealth("vector-sink", "DEAD").component()
    assert (never.ok, never.warn, never.detail) == (True, False, "no committed offsets (never ran)")
    failed = GroupHealth("vector-sink", "UNKNOWN", error="describe: timed out").component()
    assert (failed.ok, failed.warn) == (False, False)


def test_an_exact_group_filter_admits_its_groups_only():
    exact = GroupFilter.exactly(["a", "b"])
    assert [g for g in ["a", "b", "c", "a.dlq-replay", ""] if exact.admits(g)] == ["a", "b"]
