"""Kafka Connect connectors as files: load and validate them, apply them, watch and restart them.

A connector file (``connectors/<name>.json``) is Connect's own ``{"name", "config"}`` shape plus
two fields of the platform, stripped before the config is PUT:

- ``desired_state``: ``RUNNING`` or ``PAUSED``. :func:`apply` pauses or resumes the connector to
  match, so pausing a connector is a reviewed change to a file, not a REST call nobody sees.
- ``notes``: free text (JSON has no comments) explaining the choices made in ``config``.

Secrets are references only: a config key that names a secret (password, secret, token, jaas,
credentials, key material) must hold a ``${env:YS_CONNECT_...}`` reference, which the worker's
EnvVarConfigProvider resolves from its own environment (restricted to ``YS_CONNECT_*``), so the
value never reaches Kafka's config topic, the REST API, Dagster metadata or a log. A literal
there fails validation (:class:`ConnectorFileError`).

The same functions serve the CLI (``ys-platform connectors apply|status|restart``), the Dagster
assets (materialize = :func:`apply`), their checks and the health sensor (:func:`status`,
:func:`restart_failed`).

Only files with a ``config`` holding ``connector.class`` are Kafka Connect connectors; the
platform's own sink mappings (``clickhouse-sink.json``, ``vector-sink.json``) live beside them and
are skipped by :func:`connector_files`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ys_platform.catalog.topics import TopicSpec
from ys_platform.clients.jaas import jaas_config
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
from ys_platform.package_files import CONNECTORS_DIR

__all__ = [
    "CONNECTORS_DIR",
    "ApplyResult",
    "ConnectorFile",
    "ConnectorFileError",
    "ConnectorStatus",
    "DesiredState",
    "TaskStatus",
    "apply",
    "connector_files",
    "for_cluster",
    "heartbeat_topic",
    "heartbeat_topic_spec",
    "load_connector_file",
    "namespaced",
    "output_topics",
    "restart_failed",
    "source_tables",
    "status",
]

DesiredState = Literal["RUNNING", "PAUSED"]
_DESIRED_STATES: tuple[str, ...] = ("RUNNING", "PAUSED")
_PLATFORM_FIELDS = ("desired_state", "notes")

# Config keys whose values are secrets, matched on the key's last segment(s) so that a transform
# named key_tokens or key.converter is not mistaken for one.
_SECRET_KEY = re.compile(
    r"(^|[._-])(password|passwd|secret|token|credentials?|jaas\.config|api\.key|private\.key)$",
    re.I,
)
_REFERENCE = re.compile(r"^\$\{(?P<provider>[A-Za-z0-9_]+):(?P<path>[^}]*)\}$")
_ANY_REFERENCE = re.compile(r"\$\{(?P<provider>[A-Za-z0-9_]+):(?P<path>[^}:]*)(?::[^}]*)?\}")
# The local worker's EnvVarConfigProvider (and the compose worker's) resolve only these names.
_ENV_PREFIX = "YS_CONNECT_"
# Connect-only provider names the platform configures on its workers.
_PROVIDERS = ("env",)

# Debezium's default heartbeat.topics.prefix: the heartbeat topic is "<prefix>.<topic.prefix>".
_HEARTBEAT_PREFIX = "__debezium-heartbeat"
# Heartbeats are keyed by the connector's server name and only the latest matters: compact the
# topic and keep a day of segments, so it never grows however long the connector runs.
_HEARTBEAT_CONFIGS = {"cleanup.policy": "compact", "segment.ms": str(24 * 60 * 60 * 1000)}

# A config PUT on a 1-worker cluster starts the tasks within a few seconds; Debezium's first
# start also opens the replication connection and checks the slot. 60 s bounds it on a busy
# machine without letting a Dagster run hang on a connector that will never start.
APPLY_TIMEOUT_S = 60.0
_POLL_S = 0.5


class ConnectorFileError(ValueError):
    """A connector file that is not valid: the message names the file and the problem."""


@dataclass(frozen=True)
class ConnectorFile:
    """A parsed connector file. ``config`` is exactly what is PUT to Connect."""

    name: str
    config: Mapping[str, str]
    desired_state: DesiredState = "RUNNING"
    path: Path | None = None

    def with_config(self, **changes: str) -> ConnectorFile:
        """A copy with config entries replaced (dotted keys: pass them as a ``**{...}`` dict)."""
        return ConnectorFile(self.name, {**self.config, **changes}, self.desired_state, self.path)


@dataclass(frozen=True)
class TaskStatus:
    id: int
    state: str
    trace: str | None = None


@dataclass(frozen=True)
class ConnectorStatus:
    name: str
    exists: bool
    state: str | None = None
    """The connector's state (RUNNING, PAUSED, FAILED, UNASSIGNED, STOPPED); None if absent."""
    tasks: tuple[TaskStatus, ...] = ()
    trace: str | None = None

    @property
    def failed(self) -> bool:
        return self.state == "FAILED" or any(t.state == "FAILED" for t in self.tasks)

    def is_(self, desired: DesiredState) -> bool:
        """Connector and every task (at least one) are in ``desired``."""
        return (
            self.state == desired
            and bool(self.tasks)
            and all(task.state == desired for task in self.tasks)
        )

    def summary(self) -> str:
        if not self.exists:
            return f"{self.name}: not on the cluster"
        tasks = ", ".join(f"task {t.id} {t.state}" for t in self.tasks) or "no tasks"
        return f"{self.name}: {self.state} ({tasks})"

    def first_trace_line(self) -> str | None:
        """The first line of the connector's or a failed task's stack trace (the error)."""
        traces = [self.trace] + [t.trace for t in self.tasks if t.state == "FAILED"]
        for trace in traces:
            if trace:
                return trace.strip().splitlines()[0][:500]
        return None


@dataclass(frozen=True)
class ApplyResult:
    name: str
    action: Literal["created", "updated", "unchanged"]
    desired_state: DesiredState
    status: ConnectorStatus
    ok: bool
    """The connector and its tasks reached ``desired_state`` within the timeout."""
    waited_s: float = 0.0
    changed_keys: tuple[str, ...] = field(default=())

    @property
    def message(self) -> str:
        text = f"{self.action}; {self.status.summary()}"
        if not self.ok:
            error = self.status.first_trace_line()
            text += f"; wanted {self.desired_state}" + (f": {error}" if error else "")
        return text


# --- loading and validation ----------------------------------------------------------------------
def load_connector_file(path: str | Path) -> ConnectorFile:
    """Read and validate a connector file (ConnectorFileError names what is wrong)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConnectorFileError(f"{path}: cannot read it as JSON ({exc}).") from None
    return parse_connector(document, path)


def parse_connector(document: Any, path: Path | None = None) -> ConnectorFile:
    where = str(path) if path else "connector"
    if not isinstance(document, dict):
        raise ConnectorFileError(f"{where}: expected a JSON object.")
    unknown = set(document) - {"name", "config", *_PLATFORM_FIELDS}
    if unknown:
        raise ConnectorFileError(f"{where}: unknown top-level fields {sorted(unknown)}.")
    name = document.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConnectorFileError(f"{where}: 'name' must be letters, digits, '.', '_' or '-'.")
    desired = document.get("desired_state", "RUNNING")
    if desired not in _DESIRED_STATES:
        raise ConnectorFileError(
            f"{where}: desired_state must be RUNNING or PAUSED, not {desired!r}."
        )
    config = document.get("config")
    if not isinstance(config, dict) or "connector.class" not in config:
        raise ConnectorFileError(f"{where}: 'config' must be an object with a connector.class.")
    for key, value in config.items():
        # Connect stores every value as a string; a JSON number or boolean would be accepted by
        # some versions and rejected by others, and would never compare equal to what GET returns.
        if not isinstance(value, str):
            raise ConnectorFileError(f"{where}: config {key!r} must be a string, not {value!r}.")
    if config.get("name", name) != name:
        raise ConnectorFileError(f"{where}: config.name differs from name {name!r}.")
    _check_secrets(where, config)
    return ConnectorFile(name=name, config=dict(config), desired_state=desired, path=path)


def _check_secrets(where: str, config: Mapping[str, str]) -> None:
    for key, value in config.items():
        for match in _ANY_REFERENCE.finditer(value):
            provider, target = match["provider"], match["path"]
            if provider not in _PROVIDERS:
                raise ConnectorFileError(
                    f"{where}: config {key!r} uses the config provider {provider!r}; the "
                    f"platform's workers configure only {list(_PROVIDERS)}."
                )
            if not target.startswith(_ENV_PREFIX):
                raise ConnectorFileError(
                    f"{where}: config {key!r} reads {target!r}; the worker resolves only "
                    f"{_ENV_PREFIX}* variables."
                )
        if _SECRET_KEY.search(key) and not _REFERENCE.match(value):
            # The value is not echoed: it may be the secret.
            raise ConnectorFileError(
                f"{where}: config {key!r} holds a literal; secrets must be references such as "
                f"${{env:{_ENV_PREFIX}PG_PASSWORD}} resolved by the worker."
            )


def connector_files(directory: str | Path = CONNECTORS_DIR) -> list[ConnectorFile]:
    """Every Kafka Connect connector file in ``directory`` (sink mappings are skipped); the
    default is the package's own folder, ``Settings.connectors_dir`` the configured one."""
    found = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            document = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise ConnectorFileError(f"{path}: cannot read it as JSON ({exc}).") from None
        if isinstance(document, dict) and isinstance(document.get("config"), dict):
            found.append(parse_connector(document, path))
    return found


# --- what a connector reads and writes -----------------------------------------------------------
def source_tables(file: ConnectorFile) -> list[str]:
    """Tables of ``table.include.list`` (schema dropped): the ``["postgres", t]`` upstreams."""
    listed = file.config.get("table.include.list", "")
    return [entry.strip().split(".")[-1] for entry in listed.split(",") if entry.strip()]


def _routers(file: ConnectorFile) -> list[str]:
    names = [t.strip() for t in file.config.get("transforms", "").split(",") if t.strip()]
    return [
        n
        for n in names
        if file.config.get(f"transforms.{n}.type")
        == "org.apache.kafka.connect.transforms.RegexRouter"
    ]


def output_topics(file: ConnectorFile) -> list[str]:
    """The topics the connector's routers write (their replacements), in transform order."""
    return [file.config[f"transforms.{n}.replacement"] for n in _routers(file)]


def heartbeat_topic(file: ConnectorFile) -> str | None:
    """Debezium's heartbeat topic, or None when heartbeats are off or it is not Debezium."""
    interval = file.config.get("heartbeat.interval.ms", "0")
    if not file.config.get("connector.class", "").startswith("io.debezium.") or interval == "0":
        return None
    prefix = file.config.get("heartbeat.topics.prefix", _HEARTBEAT_PREFIX)
    return f"{prefix}.{file.config['topic.prefix']}"


def heartbeat_topic_spec(file: ConnectorFile) -> TopicSpec | None:
    """The heartbeat topic as a spec for the platform's topic reconcile (brokers do not
    auto-create topics, and the connector does not create any: see :func:`apply`)."""
    name = heartbeat_topic(file)
    if name is None:
        return None
    return TopicSpec(
        name=name,
        # One record per heartbeat interval from one task: one partition carries it.
        partitions=1,
        description=f"Debezium heartbeats of connector {file.name}.",
        key=None,
        configs=_HEARTBEAT_CONFIGS,
    )


def namespaced(file: ConnectorFile, namespace: str, *, name: str | None = None) -> ConnectorFile:
    """A copy writing every routed topic under ``namespace`` (tests, side-by-side stacks)."""
    config = dict(file.config)
    for router in _routers(file):
        key = f"transforms.{router}.replacement"
        config[key] = f"{namespace}{config[key]}"
    return ConnectorFile(name or file.name, config, file.desired_state, file.path)


# The settings of a connector's own Kafka principal, for its tasks' producers: the only clients a
# source connector makes (its offsets go through the worker's producer, and topic creation is
# off: see apply). The worker's Principal override policy allows exactly the SASL settings.
_PRINCIPAL_OVERRIDE = "producer.override.sasl.jaas.config"
# The key of the password in a principal's credentials file (KafkaConnection.as_principal).
_PASSWORD_KEY = "YS_KAFKA_SASL_PASSWORD"


def for_cluster(file: ConnectorFile, connection: KafkaConnection) -> ConnectorFile:
    """The file as it is applied to ``connection``'s cluster.

    With per-principal credentials (``credentials_dir`` set, SASL), the connector's clients log
    in as the connector's own principal, named like the connector
    (``security.principals.connector_principal``): the JAAS line names the user and refers to
    the password as ``${file:<credentials_dir>/<name>.env:YS_KAFKA_SASL_PASSWORD}``, which the
    worker's FileConfigProvider resolves when a task starts, so the password never reaches
    Connect's config topic, its REST API or this process. The worker must see the credentials
    folder at the same path (the local worker does; elsewhere, mount it there). Otherwise the
    file is unchanged and its clients are the worker's.

    Raises ``CredentialsError`` when the connector's credentials file is missing.
    """
    if connection.credentials_dir is None or connection.sasl_mechanism is None:
        return file
    own = connection.as_principal(file.name)
    path = connection.credentials_dir / f"{file.name}.env"
    reference = f"${{file:{path}:{_PASSWORD_KEY}}}"
    jaas = jaas_config(connection.sasl_mechanism, own.sasl_username or file.name, reference)
    return file.with_config(**{_PRINCIPAL_OVERRIDE: jaas})


# --- lifecycle -----------------------------------------------------------------------------------
def status(client: KafkaConnectClient, name: str) -> ConnectorStatus:
    """The connector's live status; ``exists=False`` when Connect does not know it."""
    try:
        raw = client.status(name)
    except ConnectError as exc:
        if exc.status == 404:
            return ConnectorStatus(name=name, exists=False)
        raise
    connector = raw.get("connector") or {}
    tasks = tuple(
        TaskStatus(id=int(t["id"]), state=str(t["state"]), trace=t.get("trace"))
        for t in sorted(raw.get("tasks") or [], key=lambda t: int(t["id"]))
    )
    return ConnectorStatus(
        name=name,
        exists=True,
        state=connector.get("state"),
        tasks=tasks,
        trace=connector.get("trace"),
    )


def _current_config(client: KafkaConnectClient, name: str) -> dict[str, str] | None:
    try:
        return client.get_config(name)
    except ConnectError as exc:
        if exc.status == 404:
            return None
        raise


def apply(
    client: KafkaConnectClient,
    file: ConnectorFile,
    *,
    timeout_s: float = APPLY_TIMEOUT_S,
    ensure_topics: Callable[[list[TopicSpec]], None] | None = None,
) -> ApplyResult:
    """Make the cluster match the file: PUT the config if it differs, pause or resume to the
    desired state, and wait (at most ``timeout_s``) until connector and tasks are there.

    Idempotent: applying an unchanged file PUTs nothing (no task restart, no rebalance).
    ``ensure_topics`` creates topics the connector needs besides the catalog's — Debezium's
    heartbeat topic — before the connector starts writing; pass the platform's reconcile (the
    Dagster asset does). Connect's own ``topic.creation.*`` is deliberately not used: its
    mandatory default group would also create any *catalog* topic missing at that moment, with
    the wrong partitions and no compaction, where a missing catalog topic should be an error.
    """
    desired = dict(file.config)
    desired.setdefault("name", file.name)
    spec = heartbeat_topic_spec(file)
    if ensure_topics is not None and spec is not None:
        ensure_topics([spec])
    current = _current_config(client, file.name)
    if current is None:
        action: Literal["created", "updated", "unchanged"] = "created"
        changed = tuple(sorted(desired))
    else:
        keys = set(current) | set(desired)
        changed = tuple(sorted(k for k in keys if current.get(k) != desired.get(k)))
        action = "updated" if changed else "unchanged"
    if action != "unchanged":
        client.put_config(file.name, desired)
    # Pause/resume are idempotent on Connect's side; sending them each time also corrects a
    # connector someone paused or resumed by hand.
    if file.desired_state == "PAUSED":
        client.pause(file.name)
    else:
        client.resume(file.name)
    started = time.monotonic()
    live = wait_for_state(client, file.name, file.desired_state, timeout_s=timeout_s)
    return ApplyResult(
        name=file.name,
        action=action,
        desired_state=file.desired_state,
        status=live,
        ok=live.is_(file.desired_state),
        waited_s=round(time.monotonic() - started, 3),
        changed_keys=changed if action == "updated" else (),
    )


def wait_for_state(
    client: KafkaConnectClient, name: str, desired: DesiredState, *, timeout_s: float
) -> ConnectorStatus:
    """Poll until connector and tasks are ``desired``, a task FAILED, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        live = status(client, name)
        # A FAILED task does not recover on its own: stop waiting and report it.
        if live.is_(desired) or live.failed or time.monotonic() >= deadline:
            return live
        time.sleep(_POLL_S)


def restart_failed(client: KafkaConnectClient, name: str) -> ConnectorStatus:
    """Restart the connector if it failed and each failed task (Connect's onlyFailed restart).

    Returns the status right after the request: tasks show RESTARTING, then their new state.
    """
    client.restart(name, include_tasks=True, only_failed=True)
    return status(client, name)
