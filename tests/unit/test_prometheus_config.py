"""deployments/prometheus against the code: metric names, ports and scrape targets agree."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from ys_platform.local import jmx_exporter
from ys_platform.monitoring import names
from ys_platform.settings import Settings, load_settings

PROMETHEUS_DIR = Path(__file__).parents[2] / "deployments" / "prometheus"

# PromQL words that look like metric names in an expression.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers that are no function, keyword, label
    (in {...}, by (...), on (...)), string, range or number."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    found = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS:
            continue
        found.add(name)
    return found


def _known(name: str) -> bool:
    if name in names.all_names():
        return True
    return any(
        name.endswith(s) and name[: -len(s)] in names.all_names() for s in _HISTOGRAM_SUFFIXES
    )


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_extractor_finds_every_metric_and_nothing_else() -> None:
    expr = (
        'sum by (group) (rate(ys_a_total{job="x", group=~"a|b"}[5m])) > 0.01 * '
        "on(group) group_left sum without (topic) (ys_b_bucket) or absent(up) unless 3 > bool 1e3"
    )
    assert metric_names(expr) == {"ys_a_total", "ys_b_bucket", "up"}


def test_alert_rules_read_only_metrics_the_exporters_define() -> None:
    used = {name for rule in _rules() for name in metric_names(str(rule["expr"]))}
    unknown = sorted(name for name in used if not _known(name))
    assert unknown == [], f"alerts.yml reads metrics no exporter defines: {unknown}"
    # Each family is read: the JMX exporter, kafka-lag-exporter's names, the monitor, the workers.
    assert {
        names.KAFKA_UNDER_REPLICATED_PARTITIONS,
        names.KAFKA_CONSUMERGROUP_GROUP_SUM_LAG,
        names.KAFKA_CONSUMERGROUP_GROUP_MAX_LAG_SECONDS,
        names.YS_CONSUMERGROUP_STATUS,
        names.YS_CDC_HEARTBEAT_AGE_SECONDS,
        names.YS_CONNECTOR_TASK_STATE,
        names.YS_WORKER_RECORDS_DEAD_LETTERED_TOTAL,
        names.YS_WORKER_TRANSACTIONS_ABORTED_TOTAL,
        names.UP,
    } <= used


def test_the_alerts_the_issue_asks_for_exist() -> None:
    alerts = {str(rule["alert"]) for rule in _rules()}
    assert {
        "HighConsumerLag",
        "UnderReplicatedPartitions",
        "BrokerDown",
        "HighConsumerLagSeconds",
        "ConsumerGroupStopped",
        "ConsumerGroupStalled",
        "HighDeadLetterRate",
        "WorkerDown",
        "ConnectorTaskFailed",
        "CdcSourceSilent",
        "TransactionsAborting",
    } <= alerts
    assert all(rule["labels"]["severity"] in {"warning", "critical"} for rule in _rules())


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    alerts = {str(rule["alert"]) for rule in _rules()}
    assert sorted(alerts - fires) == []
    assert sorted(alerts - quiet) == []


def test_scrape_config_lists_the_endpoints_the_code_serves() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert config["rule_files"] == ["alerts.yml"]
    assert jobs["ys-monitor"]["static_configs"] == [
        {"targets": [f"127.0.0.1:{names.LAG_MONITOR_PORT}"]}
    ]
    # The workers announce themselves (streaming/exporter.py) in YS_HOME/run/metrics, relative
    # to this file the default .ys; their labels are kept as they send them.
    workers = jobs["ys-workers"]
    assert "static_configs" not in workers
    assert workers["honor_labels"] is True
    assert workers["file_sd_configs"] == [{"files": ["../../.ys/run/metrics/*.json"]}]
    home = Settings.model_construct(home=Path(".ys"))
    assert home.worker_metrics_dir == Path(".ys").resolve() / "run" / "metrics"
    assert Settings.model_fields["worker_metrics_port"].default == names.WORKER_METRICS_FIRST_PORT
    # The brokers and Connect come from the files `local up` writes into the default YS_HOME
    # (.ys in the repository root, two folders up from this configuration).
    assert Settings.model_fields["home"].default == Path(".ys")
    written = jmx_exporter.scrape_targets(9101, 3, connect=True)
    assert jobs["kafka"]["file_sd_configs"] == [{"files": ["../../.ys/prometheus/kafka.json"]}]
    assert jobs["kafka-connect"]["file_sd_configs"] == [
        {"files": ["../../.ys/prometheus/kafka-connect.json"]}
    ]
    assert set(written) == {"kafka.json", "kafka-connect.json"}


def test_scrape_targets_list_the_brokers_and_connect_that_run() -> None:
    assert jmx_exporter.scrape_targets(9101, 3, connect=True) == {
        "kafka.json": [
            {"targets": ["127.0.0.1:9101"], "labels": {"broker": "1"}},
            {"targets": ["127.0.0.1:9102"], "labels": {"broker": "2"}},
            {"targets": ["127.0.0.1:9103"], "labels": {"broker": "3"}},
        ],
        "kafka-connect.json": [{"targets": ["127.0.0.1:9110"]}],
    }
    assert jmx_exporter.scrape_targets(26101, 1, connect=False) == {
        "kafka.json": [{"targets": ["127.0.0.1:26101"], "labels": {"broker": "1"}}],
        "kafka-connect.json": [],
    }


def test_exporter_ports_follow_the_kafka_port_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("YS_"):
            monkeypatch.delenv(name)
    assert load_settings().jmx_exporter_port == 9101  # the seed's
    assert load_settings(local_kafka_port=21092).jmx_exporter_port == 21101
    monkeypatch.setenv("YS_LOCAL_JMX_EXPORTER_PORT", "19101")
    settings = load_settings(local_kafka_port=21092)
    assert settings.jmx_exporter_port == 19101
    assert jmx_exporter.connect_port(settings.jmx_exporter_port) == 19110


def test_the_agent_serves_on_loopback_with_the_shipped_rules() -> None:
    option = jmx_exporter.agent_option("/m2/agent.jar", 9102, jmx_exporter.KAFKA_RULES)
    assert option == f"-javaagent:/m2/agent.jar=127.0.0.1:9102:{jmx_exporter.KAFKA_RULES}"
    for rules in (jmx_exporter.KAFKA_RULES, jmx_exporter.CONNECT_RULES):
        config = yaml.safe_load(rules.read_text())
        assert config["lowercaseOutputName"] is True
        assert config["includeObjectNames"]  # never every MBean of the JVM
        assert all("pattern" in rule and "name" in rule for rule in config["rules"])
