"""A worker's Prometheus endpoint: its :class:`WorkerMetrics` at ``http://HOST:PORT/metrics``.

Every processor and sink worker serves its own figures for the life of its run (standalone or in
a Dagster run: the member loop starts and stops the server). The port is the first free one from
``YS_WORKER_METRICS_PORT`` (9400) upward: a worker's identity is its group and replica id, which
are free strings, so no fixed offset per worker can be derived; instead each running worker
announces its port in ``$YS_HOME/run/metrics/<group>-<replica>.json``, in Prometheus' file_sd
format (``[{"targets": ["127.0.0.1:PORT"], "labels": {...}}]``), removed when it stops.
Prometheus scrapes ``run/metrics/*.json`` through ``file_sd_configs`` and ``ys-platform local
status`` lists them. A worker killed without stopping leaves its file: Prometheus reads its
target as down (``up == 0``), ``local status`` as not answering, until the same replica restarts
(and rewrites it) or another worker binds that port (and removes it).

The series carry ``worker`` (the catalog group), ``group`` (the physical, namespaced group),
``replica`` (the instance id); the file's target labels repeat them (and ``kind``) so that
``up`` names the worker too — scrape with ``honor_labels: true`` so the two do not become
``exported_*``. (``replica``, not ``instance``: Prometheus sets ``instance`` to the target's
address.) There is no ``topic`` label on the counters: they count the worker's whole input;
only ``ys_worker_consumer_lag`` is per partition. Names and labels are
:mod:`ys_platform.monitoring.names`' constants.

The collector reads the counters at scrape time: nothing is copied on the worker's hot path,
which updates them once per batch. Each worker has its own ``CollectorRegistry``, so several
workers in one process (tests, a bench) do not clash on the global one.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ys_platform.monitoring import names
from ys_platform.settings import load_settings
from ys_platform.streaming.metrics import Histogram, WorkerMetrics

log = logging.getLogger(__name__)

LABELS = names.WORKER_LABELS
# Workers on one host: 3 processors and 2 sinks, a few replicas each, plus tests and copies on
# namespaces; a hundred ports leave room and stay out of the way of the monitor's 9308.
PORT_SPAN = 100
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class MetricsPortsExhausted(RuntimeError):
    """No port of the range was free; the message names the setting to change."""


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where workers serve their metrics and announce them."""

    registry_dir: Path
    """``$YS_HOME/run/metrics``: one file_sd file per running worker."""
    host: str = "127.0.0.1"
    first_port: int = names.WORKER_METRICS_FIRST_PORT

    @classmethod
    def from_settings(cls) -> MetricsEndpoint:
        """From ``YS_HOME``, ``YS_WORKER_METRICS_HOST`` and ``YS_WORKER_METRICS_PORT``."""
        settings = load_settings()
        return cls(
            settings.worker_metrics_dir,
            settings.worker_metrics_host,
            settings.worker_metrics_port,
        )


@dataclass(frozen=True)
class WorkerIdentity:
    """The labels of a worker's series and of its scrape target."""

    worker: str
    group: str
    replica: str
    kind: str

    @property
    def values(self) -> tuple[str, str, str]:
        return (self.worker, self.group, self.replica)

    @property
    def file_name(self) -> str:
        return _UNSAFE_IN_FILE_NAME.sub("_", f"{self.group}-{self.replica}") + ".json"


class WorkerCollector(Collector):
    """The ``ys_worker_*`` families of one worker, read from its metrics at each scrape."""

    def __init__(self, metrics: WorkerMetrics, identity: WorkerIdentity) -> None:
        self.metrics = metrics
        self.identity = identity

    def collect(self) -> Iterator[Metric]:
        m, labels = self.metrics, self.identity.values
        for name, doc, value in (
            (names.YS_WORKER_RECORDS_CONSUMED_TOTAL, "Records consumed and committed.", m.consumed),
            (
                names.YS_WORKER_RECORDS_PRODUCED_TOTAL,
                "Records produced to output topics (processor) or written to the store (sink).",
                m.produced,
            ),
            (
                names.YS_WORKER_RECORDS_DEAD_LETTERED_TOTAL,
                "Records sent to the dead-letter topic.",
                m.dead_lettered,
            ),
            (
                names.YS_WORKER_RECORDS_RESTORED_TOTAL,
                "Input records replayed to rebuild state.",
                m.restored_records,
            ),
            (
                names.YS_WORKER_TRANSACTIONS_ABORTED_TOTAL,
                "Transactions aborted and their batch rewound.",
                m.aborted_transactions,
            ),
        ):
            # The family's name drops ``_total``; the exposition puts it back.
            counter = CounterMetricFamily(name, doc, labels=LABELS)
            counter.add_metric(labels, value)
            yield counter
        for name, doc, histogram in (
            (
                names.YS_WORKER_BATCH_SECONDS,
                "Time to handle and commit one batch (sink: one flush).",
                m.batch_seconds,
            ),
            (
                names.YS_WORKER_COMMIT_SECONDS,
                "Time to commit one batch: the transaction (processor), the store write (sink).",
                m.commit_seconds,
            ),
            (
                names.YS_WORKER_RESTORE_SECONDS,
                "Time to restore on an assignment: state (processor), resume offsets (sink).",
                m.restore_seconds,
            ),
        ):
            yield _histogram(name, doc, labels, histogram)
        lag = GaugeMetricFamily(
            names.YS_WORKER_CONSUMER_LAG,
            "Offset lag per owned partition: high watermark minus position.",
            labels=(*LABELS, "topic", "partition"),
        )
        for key, value in dict(m.lag).items():  # a copy: the worker's thread updates it
            topic, _, partition = key.rpartition("[")
            lag.add_metric((*labels, topic, partition.rstrip("]")), value)
        yield lag
        started = GaugeMetricFamily(
            names.YS_WORKER_START_TIME_SECONDS,
            "When the worker started (Unix time).",
            labels=LABELS,
        )
        started.add_metric(labels, m.started_at)
        yield started


def _histogram(
    name: str, doc: str, labels: tuple[str, ...], histogram: Histogram
) -> HistogramMetricFamily:
    cumulative, total = histogram.snapshot()
    bounds = [floatToGoString(b) for b in histogram.bounds] + ["+Inf"]
    family = HistogramMetricFamily(name, doc, labels=LABELS)
    family.add_metric(labels, list(zip(bounds, cumulative, strict=True)), sum_value=total)
    return family


class MetricsServer:
    """One worker's endpoint and its registry file; :meth:`stop` closes the port and removes
    the file."""

    def __init__(
        self, endpoint: MetricsEndpoint, metrics: WorkerMetrics, identity: WorkerIdentity
    ) -> None:
        self.endpoint = endpoint
        self.identity = identity
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkerCollector(metrics, identity))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def registry_file(self) -> Path:
        return self.endpoint.registry_dir / self.identity.file_name

    @property
    def target(self) -> str:
        host = self.endpoint.host
        return f"{socket.gethostname() if host in _WILDCARDS else host}:{self.port}"

    def start(self) -> None:
        first = self.endpoint.first_port
        for port in range(first, min(first + PORT_SPAN, 65536)):
            try:
                self._server, self._thread = start_http_server(
                    port, addr=self.endpoint.host, registry=self.registry
                )
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            self.port = port
            break
        else:
            raise MetricsPortsExhausted(
                f"{self.identity.group}: no free port for the worker's metrics in "
                f"{first}-{first + PORT_SPAN - 1} on {self.endpoint.host}; set "
                "YS_WORKER_METRICS_PORT to the start of a free range"
            )
        self._write_registry_file()
        self._remove_stale_files()
        log.info("%s: metrics on http://%s/metrics", self.identity.group, self.target)

    def _write_registry_file(self) -> None:
        entry = {
            "targets": [self.target],
            "labels": {
                "worker": self.identity.worker,
                "group": self.identity.group,
                "replica": self.identity.replica,
                "kind": self.identity.kind,
            },
        }
        path = self.registry_file
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: Prometheus re-reads the folder on change and must never see half a file.
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps([entry], indent=2) + "\n")
        tmp.replace(path)

    def _remove_stale_files(self) -> None:
        """Files of workers that died without stopping and named the port just bound: it was
        free, so they are stale, and left in place Prometheus would scrape this worker twice."""
        for other in registered_workers(self.endpoint.registry_dir):
            if other.target == self.target and other.path != self.registry_file:
                log.info(
                    "%s: removing %s, stale (its port is now ours)", self.identity.group, other.path
                )
                other.path.unlink(missing_ok=True)

    def stop(self) -> None:
        """Remove the file, then close the port; idempotent."""
        if self.port is not None:
            self.registry_file.unlink(missing_ok=True)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None
        self.port = None


@dataclass(frozen=True)
class RegisteredWorker:
    """A worker's file_sd entry as ``local status`` reads it."""

    target: str
    labels: dict[str, str]
    path: Path

    def answers(self, timeout_s: float = 0.5) -> bool:
        """Whether the target accepts a connection (a killed worker leaves its file behind)."""
        host, _, port = self.target.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            return False


def registered_workers(registry_dir: Path) -> list[RegisteredWorker]:
    """The entries of ``registry_dir``'s file_sd files, by file name; unreadable files skipped
    with a warning (a file being replaced is never half-written)."""
    found: list[RegisteredWorker] = []
    for path in sorted(registry_dir.glob("*.json")):
        try:
            entries = json.loads(path.read_text())
            found.extend(
                RegisteredWorker(target, dict(entry.get("labels", {})), path)
                for entry in entries
                for target in entry["targets"]
            )
        except FileNotFoundError:
            continue  # the worker stopped meanwhile
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s is not a file_sd file: %s", path, exc)
    return found
