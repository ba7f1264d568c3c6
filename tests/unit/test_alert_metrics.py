"""Every metric and label an alert rule reads is one a collector really emits.

The collectors are rendered as Prometheus scrapes them (``generate_latest`` on a registry of
their own, parsed back with prometheus-client's text parser), fed synthetic inputs in which
every state a rule matches on occurs: a rule that reads a name, a label or a label value no
collector emits would never fire, and fails here instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ys_platform.connectors import ConnectorStatus, TaskStatus
from ys_platform.monitoring import names
from ys_platform.monitoring.exporter import LagCollector
from ys_platform.monitoring.freshness import (
    FreshnessCollector,
    FreshnessReport,
    HeartbeatFreshness,
    TopicFreshness,
)
from ys_platform.monitoring.health import (
    ConnectHealth,
    ConnectorHealth,
    HealthCollector,
    HealthReport,
    KafkaHealth,
    PartitionRef,
    PostgresHealth,
    SlotHealth,
)
from ys_platform.monitoring.lag import Member, PartitionOffsets
from ys_platform.monitoring.snapshot import GroupLag, LagSnapshot, PartitionLag
from ys_platform.monitoring.status import Status
from ys_platform.streaming.exporter import (
    MetricsEndpoint,
    MetricsServer,
    WorkerCollector,
    WorkerIdentity,
)
from ys_platform.streaming.metrics import WorkerMetrics

PROMETHEUS_DIR = Path(__file__).parents[2] / "deployments" / "prometheus"
# Served by the JMX exporter agents from deployments/local/jmx-exporter-*.yml, not by a Python
# collector: tests/integration/test_jmx_exporter.py scrapes a real broker for them.
JMX_PREFIXES = ("kafka_server_", "kafka_controller_", "kafka_connect_")
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Far from the workers' default range (9400), as in test_worker_exporter.py.
FIRST_PORT = 19500

_SELECTOR = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")
_WORD = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?")
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_PROMQL_WORDS |= {"offset", "and", "or", "unless"}


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def read_metrics(expr: str) -> set[str]:
    """The metric names an expression reads (no function, keyword, label, string or range)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    return {
        m.group(1)
        for m in _WORD.finditer(text)
        if not m.group(2) and m.group(1) not in _PROMQL_WORDS
    }


def label_matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """``(metric, label, operator, value)`` of each matcher in a selector of ``expr``."""
    return [
        (selector.group(1), *matcher.groups())
        for selector in _SELECTOR.finditer(expr)
        for matcher in _MATCHER.finditer(selector.group(2))
    ]


# --- the collectors, rendered as a scrape sees them ------------------------------------------
def _lag_collector() -> LagCollector:
    member = Member("consumer-1", "client-1", "/127.0.0.1")
    partitions = tuple(
        PartitionLag("market.prices", i, 100, 5 * i, 2.5 * i, status, member)
        for i, status in enumerate(Status)
    )
    groups = tuple(
        GroupLag(f"group-{status.name.lower()}", "STABLE", False, partitions, status, 30.0)
        for status in Status
    )
    offsets = {("market.prices", i): PartitionOffsets(0, 200, 200) for i in range(len(Status))}
    collector = LagCollector()
    collector.on_snapshot(LagSnapshot("ys-local", 1_700_000_000.0, groups, offsets, 0.2))
    return collector


def _health_collector() -> HealthCollector:
    ref = PartitionRef("market.prices", 0)
    kafka = KafkaHealth(
        "127.0.0.1:9092",
        brokers_alive=(1, 2),
        brokers_expected=3,
        controller_id=1,
        partitions=12,
        under_replicated=(ref,),
        under_min_isr=(ref,),
        offline=(ref,),
    )
    connectors = tuple(
        ConnectorHealth(
            ConnectorStatus(f"c-{state.lower()}", True, state, (TaskStatus(0, state),)), "RUNNING"
        )
        for state in names.CONNECT_STATES
    )
    report = HealthReport(
        checked_at=1_700_000_000.0,
        kafka=kafka,
        connect=ConnectHealth("http://127.0.0.1:8083", connectors=connectors),
        postgres=PostgresHealth(
            "127.0.0.1:15432", version="PostgreSQL 16", slots=(SlotHealth("s", True, True, 64),)
        ),
    )
    return HealthCollector(lambda: report)


def _freshness_collector() -> FreshnessCollector:
    report = FreshnessReport(
        checked_at=1_700_000_100.0,
        topics=(TopicFreshness("cdc.positions", 1_700_000_000_000, 100.0),),
        heartbeats=(
            HeartbeatFreshness("postgres-source", "__debezium-heartbeat.cdc", 10.0, 1, 100.0),
        ),
    )
    return FreshnessCollector(lambda: report)


IDENTITY = WorkerIdentity("price-aggregation-processor", "ns.price-aggregation", "r-0", "processor")


def _worker_collector() -> WorkerCollector:
    metrics = WorkerMetrics(group_id=IDENTITY.group)
    metrics.consumed, metrics.produced, metrics.dead_lettered = 100, 90, 10
    metrics.aborted_transactions, metrics.restored_records = 2, 40
    metrics.lag["market.prices[0]"] = 7
    metrics.record_batch(0.01)
    return WorkerCollector(metrics, IDENTITY)


def scrape(collector: Collector) -> dict[str, list[dict[str, str]]]:
    """Each exposed sample name with the label sets of its samples, as Prometheus reads them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(dict(sample.labels))
    return found


@pytest.fixture(scope="module")
def emitted() -> dict[str, list[dict[str, str]]]:
    """What the lag monitor's and the workers' endpoints serve, by sample name."""
    found: dict[str, list[dict[str, str]]] = {}
    for collector in (
        _lag_collector(),
        _health_collector(),
        _freshness_collector(),
        _worker_collector(),
    ):
        for name, samples in scrape(collector).items():
            assert name not in found, f"{name} is emitted by two collectors"
            found[name] = samples
    return found


@pytest.fixture(scope="module")
def worker_target_labels(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The labels ``up{job="ys-workers"}`` gets: those of the file_sd file a worker writes."""
    registry_dir = tmp_path_factory.mktemp("metrics")
    server = MetricsServer(
        MetricsEndpoint(registry_dir, first_port=FIRST_PORT), WorkerMetrics("g"), IDENTITY
    )
    server.start()
    try:
        (entry,) = json.loads(server.registry_file.read_text())
    finally:
        server.stop()
    return set(entry["labels"]) | TARGET_LABELS


def _is_jmx(name: str) -> bool:
    return name.startswith(JMX_PREFIXES)


# --- the tests ---------------------------------------------------------------------------------
def test_the_expression_readers_find_metrics_and_matchers() -> None:
    expr = (
        'sum by (group) (rate(ys_a_total{job="x", group=~"a|b"}[5m])) > 0.01 * '
        'on(group) group_left sum without (topic) (ys_b_bucket{s!="OK"}) or absent(up) > bool 1'
    )
    assert read_metrics(expr) == {"ys_a_total", "ys_b_bucket", "up"}
    assert label_matchers(expr) == [
        ("ys_a_total", "job", "=", "x"),
        ("ys_a_total", "group", "=~", "a|b"),
        ("ys_b_bucket", "s", "!=", "OK"),
    ]


def test_the_collectors_emit_the_names_of_names_py(
    emitted: dict[str, list[dict[str, str]]],
) -> None:
    """Every family a collector emits is a names.py constant (histograms by their base name)."""
    known = names.all_names()
    unknown = sorted(
        n
        for n in emitted
        if n not in known and re.sub(r"_(bucket|sum|count|created)$", "", n) not in known
    )
    assert unknown == []


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: str(rule["alert"]))
def test_each_rule_reads_what_a_collector_emits(
    rule: dict[str, object],
    emitted: dict[str, list[dict[str, str]]],
    worker_target_labels: set[str],
) -> None:
    expr = str(rule["expr"])
    metrics = read_metrics(expr)
    assert metrics, f"no metric found in {expr!r}"
    assert metrics <= names.all_names(), f"not names.py constants: {metrics - names.all_names()}"
    label_keys: dict[str, set[str]] = {}
    for name in metrics:
        if name == names.UP:
            continue  # its labels depend on the job: checked with the matchers below
        if _is_jmx(name):
            continue  # the JMX exporter's, scraped for real in test_jmx_exporter.py
        assert name in emitted, f"{rule['alert']} reads {name}, which no collector emits"
        label_keys[name] = {k for labels in emitted[name] for k in labels} | TARGET_LABELS

    matched_labels: set[str] = set()
    for name, label, op, value in label_matchers(expr):
        if name == names.UP:
            assert (label, op) == ("job", "="), f"up is selected by its job, not {label}"
            jobs = _scrape_jobs()
            assert value in jobs, f"up{{job={value!r}}}: no such job in prometheus.yml"
            if value == "ys-workers":
                label_keys[name] = worker_target_labels
            else:
                label_keys[name] = set(jobs[value]) | TARGET_LABELS
            continue
        if _is_jmx(name):
            continue
        assert label in label_keys[name], f"{name} has no label {label!r}"
        if label not in TARGET_LABELS and op == "=":
            values = {labels.get(label) for labels in emitted[name]}
            assert value in values, f'{name}{{{label}="{value}"}} is never emitted: {values}'
        matched_labels.add(label)

    # Labels the expression groups by and the annotations name exist on what it reads.
    used = {
        label.strip()
        for grouping in _GROUPING.findall(expr)
        for label in grouping.split(",")
        if label.strip()
    }
    templates = " ".join(str(v) for v in dict(rule.get("annotations", {})).values())  # type: ignore[arg-type]
    used |= set(_TEMPLATE_LABEL.findall(templates))
    for name, keys in label_keys.items():
        missing = used - keys
        assert not missing, f"{rule['alert']}: {name} has no label(s) {sorted(missing)}"


def _scrape_jobs() -> dict[str, set[str]]:
    """Each job of prometheus.yml with the labels its static targets set."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    return {
        job["job_name"]: {
            label for entry in job.get("static_configs", []) for label in entry.get("labels", {})
        }
        for job in config["scrape_configs"]
    }


def test_status_and_state_gauges_have_one_series_per_value(
    emitted: dict[str, list[dict[str, str]]],
) -> None:
    """The encoding the rules rely on: for each group (connector, task) one series per value,
    exactly one of them 1."""
    statuses = {s["status"] for s in emitted[names.YS_CONSUMERGROUP_STATUS]}
    assert statuses == {s.name for s in Status}
    per_group: dict[str, int] = {}
    for labels in emitted[names.YS_CONSUMERGROUP_STATUS]:
        per_group[labels["group"]] = per_group.get(labels["group"], 0) + 1
    assert set(per_group.values()) == {len(Status)}
    states = {s["state"] for s in emitted[names.YS_CONNECTOR_TASK_STATE]}
    assert states == set(names.CONNECT_STATES)


def test_worker_series_carry_only_the_worker_labels(
    emitted: dict[str, list[dict[str, str]]],
) -> None:
    worker_series = {n: s for n, s in emitted.items() if n.startswith("ys_worker_")}
    for name, samples in worker_series.items():
        for labels in samples:
            extra = set(labels) - set(names.WORKER_LABELS) - {"le", "topic", "partition"}
            assert not extra, (name, extra)
            assert labels["worker"] == IDENTITY.worker and labels["replica"] == IDENTITY.replica
    assert "topic" not in emitted[names.YS_WORKER_RECORDS_DEAD_LETTERED_TOTAL][0]
