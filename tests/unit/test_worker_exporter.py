"""A worker's Prometheus endpoint without Kafka: the families it serves from the worker's
counters, its file_sd file, the port range and a clean stop."""

import json
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ys_platform.streaming.exporter import (
    PORT_SPAN,
    MetricsEndpoint,
    MetricsPortsExhausted,
    MetricsServer,
    WorkerIdentity,
    registered_workers,
)
from ys_platform.streaming.metrics import Histogram, WorkerMetrics

# Far from the default range (9400) so a test does not meet a worker running on this machine.
FIRST_PORT = 19400
IDENTITY = WorkerIdentity(
    "price-aggregation-processor", "t1.price-aggregation-processor", "0", "processor"
)
LABELS = {"worker": IDENTITY.worker, "group": IDENTITY.group, "replica": "0"}


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _key(name: str, **extra: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted({**LABELS, **extra}.items())))


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_histogram_buckets_are_cumulative_and_le_is_inclusive():
    h = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(seconds)
    assert h.snapshot() == ([2, 4, 5], pytest.approx(8.65))
    assert h.count == 5


def test_serves_the_counters_histograms_and_lag_then_closes_and_unregisters(tmp_path):
    metrics = WorkerMetrics(group_id=IDENTITY.group)
    server = MetricsServer(
        MetricsEndpoint(tmp_path / "metrics", first_port=FIRST_PORT), metrics, IDENTITY
    )
    server.start()
    try:
        port = server.port
        assert port is not None and FIRST_PORT <= port < FIRST_PORT + PORT_SPAN
        file = tmp_path / "metrics" / "t1.price-aggregation-processor-0.json"
        assert json.loads(file.read_text()) == [
            {"targets": [f"127.0.0.1:{port}"], "labels": {**LABELS, "kind": "processor"}}
        ]
        assert [(w.target, w.answers()) for w in registered_workers(tmp_path / "metrics")] == [
            (f"127.0.0.1:{port}", True)
        ]
        # What the worker does once per batch; the scrape reads it as it is now.
        metrics.consumed, metrics.produced, metrics.dead_lettered = 1000, 40, 3
        metrics.aborted_transactions, metrics.restored_records = 1, 250
        metrics.record_batch(0.2)
        metrics.record_batch(0.03)
        metrics.commit_seconds.observe(0.009)
        metrics.restore_seconds.observe(1.5)
        metrics.lag["t1.market.prices[3]"] = 17
        samples = _samples(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.stop()
    assert samples[_key("ys_worker_records_consumed_total")] == 1000
    assert samples[_key("ys_worker_records_produced_total")] == 40
    assert samples[_key("ys_worker_records_dead_lettered_total")] == 3
    assert samples[_key("ys_worker_records_restored_total")] == 250
    assert samples[_key("ys_worker_transactions_aborted_total")] == 1
    assert samples[_key("ys_worker_batch_seconds_count")] == 2
    assert samples[_key("ys_worker_batch_seconds_sum")] == pytest.approx(0.23)
    assert samples[_key("ys_worker_batch_seconds_bucket", le="0.025")] == 0
    assert samples[_key("ys_worker_batch_seconds_bucket", le="0.05")] == 1
    assert samples[_key("ys_worker_batch_seconds_bucket", le="0.25")] == 2
    assert samples[_key("ys_worker_batch_seconds_bucket", le="+Inf")] == 2
    assert samples[_key("ys_worker_commit_seconds_count")] == 1
    assert samples[_key("ys_worker_restore_seconds_count")] == 1
    assert samples[_key("ys_worker_consumer_lag", topic="t1.market.prices", partition="3")] == 17
    assert samples[_key("ys_worker_start_time_seconds")] == pytest.approx(metrics.started_at)
    assert not file.exists()
    assert registered_workers(tmp_path / "metrics") == []
    assert _refused(port)
    server.stop()  # idempotent


def test_takes_the_next_free_port_and_fails_naming_the_setting_when_none_is(tmp_path):
    endpoint = MetricsEndpoint(tmp_path, first_port=FIRST_PORT + 50)
    servers = []
    try:
        for replica in range(2):
            identity = WorkerIdentity("w", "g", str(replica), "sink")
            servers.append(MetricsServer(endpoint, WorkerMetrics(group_id="g"), identity))
            servers[-1].start()
        assert [s.port for s in servers] == [FIRST_PORT + 50, FIRST_PORT + 51]
        assert sorted(p.name for p in tmp_path.glob("*.json")) == ["g-0.json", "g-1.json"]
    finally:
        for s in servers:
            s.stop()
    # Every port of a range taken: a sentence naming the variable, nothing left behind.
    taken = []
    try:
        for port in range(FIRST_PORT - PORT_SPAN, FIRST_PORT):
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            taken.append(sock)
        server = MetricsServer(
            MetricsEndpoint(tmp_path, first_port=FIRST_PORT - PORT_SPAN),
            WorkerMetrics(group_id="g"),
            WorkerIdentity("w", "g", "9", "sink"),
        )
        with pytest.raises(MetricsPortsExhausted, match="set YS_WORKER_METRICS_PORT"):
            server.start()
    finally:
        for sock in taken:
            sock.close()
    assert not (tmp_path / "g-9.json").exists()


def test_a_file_left_on_the_port_a_worker_takes_is_removed(tmp_path):
    stale = tmp_path / "gone-0.json"
    target = f"127.0.0.1:{FIRST_PORT + 70}"
    stale.write_text(json.dumps([{"targets": [target], "labels": {"group": "gone"}}]))
    elsewhere = tmp_path / "other-0.json"
    elsewhere.write_text(json.dumps([{"targets": ["127.0.0.1:1"], "labels": {"group": "other"}}]))
    server = MetricsServer(
        MetricsEndpoint(tmp_path, first_port=FIRST_PORT + 70),
        WorkerMetrics(group_id="g"),
        WorkerIdentity("w", "g", "0", "sink"),
    )
    server.start()
    try:
        assert server.target == target
        assert sorted(p.name for p in tmp_path.glob("*.json")) == ["g-0.json", "other-0.json"]
    finally:
        server.stop()


def test_a_file_of_a_killed_worker_is_listed_as_not_answering(tmp_path):
    (tmp_path / "g-0.json").write_text(
        json.dumps([{"targets": ["127.0.0.1:1"], "labels": {"group": "g"}}])
    )
    (tmp_path / "broken.json").write_text("{")
    (worker,) = registered_workers(tmp_path)
    assert worker.target == "127.0.0.1:1" and not worker.answers()


def test_file_names_keep_to_safe_characters():
    identity = WorkerIdentity("w", "ns/g", "standalone host:1", "processor")
    assert identity.file_name == "ns_g-standalone_host_1.json"


def test_a_worker_serves_where_the_settings_say_unless_told_not_to(monkeypatch, tmp_path):
    from ys_platform.settings import SettingsError
    from ys_platform.streaming.sink_worker import SinkConfig
    from ys_platform.streaming.worker import WorkerConfig

    monkeypatch.setenv("YS_HOME", str(tmp_path))
    monkeypatch.setenv("YS_WORKER_METRICS_PORT", "19500")
    assert WorkerConfig().metrics == MetricsEndpoint(
        tmp_path / "run" / "metrics", "127.0.0.1", 19500
    )
    assert SinkConfig(metrics=None).metrics is None
    monkeypatch.setenv("YS_WORKER_METRICS_PORT", "80")
    with pytest.raises(SettingsError, match="YS_WORKER_METRICS_PORT: Input should be greater"):
        WorkerConfig()
