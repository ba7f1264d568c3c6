"""Kafka Connect: one distributed worker with the Debezium PostgreSQL connector on its plugin path.

The worker's classpath and the plugin folder come from Maven Central through
deployments/local/connect-pom.xml (package data) and are cached in ~/.cache/ys-platform, keyed by
the pom's hash.
The worker keeps no state of its own: connector configs, source offsets and statuses live in the
ys-connect-* topics of the local Kafka, so `down` and `up` lose nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ys_platform.local import jmx_exporter, kafka, maven, procs
from ys_platform.local import postgres as local_postgres
from ys_platform.local.config import (
    CONNECT_PASSWORD_VARIABLE,
    LOCAL_HOSTS,
    ConnectSecurity,
    bootstrap_servers,
    connect_worker_properties,
)
from ys_platform.local.secrets import ca_path, ensure_credential, secrets_dir
from ys_platform.local.state import (
    INSTALL_HINT,
    Layout,
    LocalStackError,
    ServiceStatus,
    read_cluster,
    read_secure,
)
from ys_platform.package_files import LOCAL_DEPLOYMENT_DIR
from ys_platform.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka.admin import AclBinding

NAME = "connect"

CONNECT_POM = LOCAL_DEPLOYMENT_DIR / "connect-pom.xml"
# The brokers' log4j2 file: one rolling file named by -Dys.log.file, nothing on the console.
LOG4J2_CONFIG = kafka.LOG4J2_CONFIG

# The versions connect-pom.xml resolves (a unit test keeps the two in step).
KAFKA_VERSION = "4.4.0"
DEBEZIUM_VERSION = "3.6.1.Final"
DEBEZIUM_POSTGRES_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
# One directory per plugin below the plugin path: Connect gives each its own class loader.
DEBEZIUM_POSTGRES_DIR = "debezium-postgres-" + DEBEZIUM_VERSION.removesuffix(".Final")

# A YS_CONNECT_URL on one of config.LOCAL_HOSTS is a worker the stack runs itself, listening
# on that URL's port (so clients and worker cannot disagree); any other host is an external
# Connect cluster, which `up` only checks.

# connect-distributed.sh gives 2 GiB. An idle worker uses well under 100 MiB of heap, and a
# Debezium task buffers at most max.queue.size (8192) change events of a development database;
# 512 MiB holds that many times over and keeps the stack (brokers, PostgreSQL, Dagster) small.
# A worker out of heap dies (RUN_CLASS_OPTIONS) rather than answer REST calls and do nothing.
JVM_OPTIONS = ["-Xmx512m", *kafka.RUN_CLASS_OPTIONS]

# Measured on 2 busy cores: the worker answers /health with its plugins loaded ~10-20 s after
# the JVM starts (JVM, Jetty/Jersey, joining the group, reading the three internal topics).
# 120 s absorbs a loaded CI machine without hiding a real hang.
START_TIMEOUT_S = 120.0

# One REST call on loopback takes milliseconds; 2 s tolerates a GC pause or a busy CPU and keeps
# `status` quick when the worker is hung.
REST_TIMEOUT_S = 2.0


# --- where the worker listens --------------------------------------------------------------------
def _endpoint(settings: Settings) -> tuple[str, int]:
    parts = urlsplit(settings.connect_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def is_managed(settings: Settings) -> bool:
    """Whether the stack runs the worker itself: an http:// URL on this machine."""
    host, _ = _endpoint(settings)
    return settings.connect_url.startswith("http://") and host in LOCAL_HOSTS


def port(settings: Settings) -> int:
    """The REST port, from YS_CONNECT_URL (the one setting clients and the worker share)."""
    return _endpoint(settings)[1]


# --- the worker's jars and the plugin folder -----------------------------------------------------
def _cache_dir() -> Path:
    # Outside the repository: a fresh clone (CI) reuses it, and `git clean` does not drop it.
    return Path.home() / ".cache" / "ys-platform"


def _pom_digest() -> str:
    if not CONNECT_POM.exists():
        raise LocalStackError(
            f"{CONNECT_POM} is missing from the installed package: reinstall ys-platform."
        )
    return hashlib.sha256(CONNECT_POM.read_bytes()).hexdigest()[:16]


def _maven(profile: str, goal: list[str], what: str) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalStackError(f"Maven (mvn) is needed to fetch {what}. {INSTALL_HINT}")
    result = subprocess.run(
        [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(CONNECT_POM), "-P", profile, *goal],
        capture_output=True,
        text=True,
        timeout=maven.MAVEN_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise LocalStackError(
            f"Maven could not resolve {what} (it needs Maven Central, or a filled ~/.m2):\n"
            + (result.stdout + result.stderr).strip()[-3000:]
        )


def worker_classpath() -> str:
    """$KAFKA_HOME/libs if set (a Kafka install has Connect), else the jars of connect-pom.xml."""
    installed = kafka.kafka_home_classpath()
    if installed:
        return installed
    cache = _cache_dir() / f"connect-classpath-{_pom_digest()}.txt"
    if cache.exists():
        cached = cache.read_text().strip()
        # ~/.m2 may have been cleaned since: then resolve again rather than fail in the JVM.
        if cached and all(Path(jar).exists() for jar in cached.split(os.pathsep)):
            return cached
    procs.progress(f"connect: resolving the Kafka Connect {KAFKA_VERSION} jars with Maven ...")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    _maven(
        "worker",
        ["dependency:build-classpath", f"-Dmdep.outputFile={tmp}"],
        f"the Kafka Connect {KAFKA_VERSION} jars",
    )
    if not tmp.exists():
        raise LocalStackError(f"Maven wrote no classpath for Kafka Connect to {tmp}.")
    tmp.replace(cache)
    return cache.read_text().strip()


def plugin_path() -> Path:
    """The worker's plugin.path, holding the Debezium PostgreSQL plugin folder.

    One plugin path per pom hash (~/.cache/ys-platform/connect-plugins/<hash>/): Connect loads
    every folder below its plugin path, so a folder left by an older Debezium version beside the
    current one would put two versions of the same connector class on the worker.
    """
    root = _cache_dir() / "connect-plugins" / _pom_digest()
    plugin = root / DEBEZIUM_POSTGRES_DIR
    if (plugin / f"debezium-connector-postgres-{DEBEZIUM_VERSION}.jar").exists():
        return root
    procs.progress(f"connect: fetching the Debezium PostgreSQL {DEBEZIUM_VERSION} plugin ...")
    root.mkdir(parents=True, exist_ok=True)
    # Copied into a temporary folder and renamed: a plugin folder is either complete or absent,
    # even when Maven fails half-way or two `up`s on different state folders race. The staging
    # folder sits beside the plugin path, not in it, where a worker would load a leftover one.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root.parent))
    try:
        _maven(
            "debezium-postgres",
            ["dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            f"the Debezium PostgreSQL {DEBEZIUM_VERSION} plugin",
        )
        try:
            staging.rename(plugin)
        except OSError:
            if not plugin.is_dir():  # not the other racer's complete copy: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


# --- starting ------------------------------------------------------------------------------------
def running_pid(layout: Layout) -> int | None:
    """The PID of this state folder's worker if it runs; a stale PID file is removed."""
    return procs.owned_pid(layout.connect_pid, str(layout.connect_properties))


def _check_port_free(rest_port: int) -> None:
    procs.check_port_free(
        rest_port,
        NAME,
        main_class="org.apache.kafka.connect.cli.ConnectDistributed",
        config_suffix="worker.properties",
        others="Connect workers",
        remedy="YS_CONNECT_URL to another port (e.g. http://127.0.0.1:18083)",
    )


def up(settings: Settings, layout: Layout) -> ServiceStatus:
    """Start the worker unless it runs; needs this state folder's Kafka to be running."""
    if not is_managed(settings):
        return status(settings, layout)
    if running_pid(layout) is not None:
        return status(settings, layout)
    cluster = read_cluster(layout)
    if cluster is None:
        raise LocalStackError(
            f"connect: the local Kafka in {layout.home} has never started; Connect keeps its "
            "state in Kafka, so start Kafka first (`ys-platform local up`)."
        )
    java, cp, plugins = kafka.java_binary(), worker_classpath(), plugin_path()
    rest_port = port(settings)
    _check_port_free(rest_port)
    exporter_port = jmx_exporter.connect_port(settings.jmx_exporter_port)
    jmx_exporter.check_port_free(exporter_port, NAME)
    agent = jmx_exporter.agent_option(
        jmx_exporter.agent_jar(), exporter_port, jmx_exporter.CONNECT_RULES
    )
    bootstrap = bootstrap_servers(settings.local_kafka_port, cluster.brokers)
    env = worker_environment(settings, layout)
    security = None
    if read_secure(layout):
        security, env[CONNECT_PASSWORD_VARIABLE] = _secure_worker(layout, bootstrap)
    layout.connect.mkdir(parents=True, exist_ok=True)
    layout.connect_properties.write_text(
        connect_worker_properties(
            bootstrap=bootstrap,
            port=rest_port,
            brokers=cluster.brokers,
            plugin_path=plugins,
            security=security,
        )
    )
    layout.logs.mkdir(parents=True, exist_ok=True)
    process = _spawn(java, cp, layout, agent, env)
    try:
        procs.wait_ready(
            NAME,
            settings.connect_url,
            ready=lambda: _ready(settings, plugins),
            alive=lambda: process.poll() is None,
            timeout_s=START_TIMEOUT_S,
            log=layout.log(NAME),
        )
    except LocalStackError:
        # A worker that never became ready holds the port and a group membership; the log stays.
        procs.stop([process.pid])
        layout.connect_pid.unlink(missing_ok=True)
        raise
    return _settled_status(settings, layout)


# GET /health answers once the herder's thread is free (KIP-1017). Just after the worker became
# ready that thread may still be busy for a moment (writing the session key, reading its config
# topic): a status call then waits past REST_TIMEOUT_S and reports the worker not ready (seen in
# CI on a loaded machine). 15 s of re-checks absorb that without hiding a worker that went away.
SETTLE_TIMEOUT_S = 15.0


def _settled_status(settings: Settings, layout: Layout) -> ServiceStatus:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    current = status(settings, layout)
    while not current.healthy and current.state == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        current = status(settings, layout)
    return current


# The worker's principal on the secure stack; its connectors use it too unless they bring their
# own (connector.client.config.override.policy=Principal).
CONNECT_PRINCIPAL = "ys-connect"
# Creating a principal and its ACLs goes through the controller quorum: a few milliseconds here.
ACL_TIMEOUT_S = 30.0


def worker_acls() -> tuple[AclBinding, ...]:
    """The ACLs the Connect worker needs for itself: its principal's grants in the catalog
    (``security.principals.connect_worker_principal``: its internal topics, its group); the
    topics its connectors write are the connectors' own principals'."""
    from ys_platform.security.principals import connect_worker_principal

    return connect_worker_principal().bindings


def _secure_worker(layout: Layout, bootstrap: str) -> tuple[ConnectSecurity, str]:
    """The worker's SCRAM user and ACLs, created as the administrator; returns the worker's
    security settings and the password its environment carries."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from ys_platform.security.users import ScramUserError, ensure_scram_users

    credential = ensure_credential(layout.home, CONNECT_PRINCIPAL, bootstrap_servers=bootstrap)
    admin = AdminClient(kafka.client_config(layout, bootstrap))
    try:
        ensure_scram_users(admin, [credential])
        for binding, future in admin.create_acls(
            list(worker_acls()), request_timeout=ACL_TIMEOUT_S
        ).items():
            try:
                future.result()
            except KafkaException as exc:
                raise LocalStackError(
                    f"connect: the ACL {binding} for the worker could not be created: "
                    f"{exc.args[0].str()}"
                ) from None
    except ScramUserError as exc:
        raise LocalStackError(f"connect: {exc}") from None
    security = ConnectSecurity(
        username=CONNECT_PRINCIPAL,
        truststore=ca_path(layout.home),
        credentials_dir=secrets_dir(layout.home),
    )
    return security, credential.password.get_secret_value()


def worker_environment(settings: Settings, layout: Layout) -> dict[str, str]:
    """The worker's environment: ours, plus — for the local stack's own PostgreSQL — the
    ``YS_CONNECT_PG_*`` values ``connectors/postgres-source.json`` refers to, unless set already.

    The plaintext cluster trusts loopback (see ``postgres.py``), so its password is a
    placeholder; the secure one gives Debezium its own role and that role's password.
    """
    env = dict(os.environ)
    if not settings.uses_local_postgres:
        return env
    user, password = local_postgres.APP_ROLE, "local-trust-auth"
    secrets = local_postgres.postgres_secrets(settings, layout)
    if secrets:
        user = local_postgres.DEBEZIUM_ROLE
        password = secrets.password(user).get_secret_value()
        # A shell that sourced an administrator's env file passes no Kafka password on.
        for name in ("YS_KAFKA_SASL_PASSWORD", "YS_KAFKA_SSL_KEY_PASSWORD"):
            env.pop(name, None)
    defaults = {
        "YS_CONNECT_PG_HOST": "127.0.0.1",
        "YS_CONNECT_PG_PORT": str(settings.postgres_port),
        "YS_CONNECT_PG_DBNAME": "yieldsensei",
        "YS_CONNECT_PG_USER": user,
        "YS_CONNECT_PG_PASSWORD": password,
    }
    for name, value in defaults.items():
        env.setdefault(name, value)
    return env


def _spawn(
    java: str, cp: str, layout: Layout, agent: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    return procs.spawn(
        [
            java,
            *JVM_OPTIONS,
            agent,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dys.log.file={layout.log(NAME)}",
            "-cp",
            cp,
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(layout.connect_properties),
        ],
        layout.connect_console,
        layout.connect_pid,
        cwd=layout.home,
        # The environment is passed on: connector configs read YS_CONNECT_* from it through the
        # env config provider, as the worker found it at start (a change needs a restart).
        env=env,
    )


# --- health and stopping -------------------------------------------------------------------------
def _ready(settings: Settings, plugins: Path) -> bool:
    """True once the worker has joined its group with the Debezium plugin loaded.

    A ready worker without the plugin will not grow one: that raises at once, naming the folder.
    """
    from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient

    if not procs.port_open(port(settings)):
        return False
    with KafkaConnectClient(settings.connect_url, timeout_s=REST_TIMEOUT_S) as client:
        if not client.is_ready():
            return False
        try:
            classes = {p.get("class") for p in client.plugins()}
        except ConnectError:
            return False
    if DEBEZIUM_POSTGRES_CLASS not in classes:
        raise LocalStackError(
            f"connect: the worker started without {DEBEZIUM_POSTGRES_CLASS}; its plugin folder "
            f"is {plugins / DEBEZIUM_POSTGRES_DIR} (remove it to fetch it again). Plugins found: "
            f"{', '.join(sorted(str(c) for c in classes)) or 'none'}."
        )
    return True


def health(connect_url: str) -> tuple[bool, str]:
    """(healthy, detail) of the worker at connect_url, from its REST API (never raises)."""
    from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient

    with KafkaConnectClient(connect_url, timeout_s=REST_TIMEOUT_S) as client:
        if not client.is_ready():
            return False, "REST API not ready (starting, or lost its Kafka cluster)"
        try:
            plugins = client.plugins()
            connectors = client.list_connectors()
        except ConnectError as exc:
            return False, str(exc)
    debezium = next((p for p in plugins if p.get("class") == DEBEZIUM_POSTGRES_CLASS), None)
    count = f"{len(connectors)} connector(s)"
    if debezium is None:
        return False, f"Debezium PostgreSQL plugin missing ({len(plugins)} plugin(s)), {count}"
    return True, f"Debezium PostgreSQL {debezium.get('version')}, {count}"


def status(settings: Settings, layout: Layout) -> ServiceStatus:
    url = settings.connect_url
    if not is_managed(settings):
        healthy, detail = health(url)
        return ServiceStatus(NAME, url, "external", healthy, detail=detail)
    pid = running_pid(layout)
    if pid is None:
        return ServiceStatus(NAME, url, "stopped", healthy=False)
    healthy, detail = health(url)
    metrics = jmx_exporter.serving_url(jmx_exporter.connect_port(settings.jmx_exporter_port))
    return ServiceStatus(
        NAME, url, "running", healthy, pid, procs.memory_bytes(pid), detail, metrics=metrics
    )


def was_started(settings: Settings, layout: Layout) -> bool:
    """Whether this state folder has a worker to report: one ran here, or an external one."""
    return not is_managed(settings) or layout.connect_properties.exists()


def down(layout: Layout) -> list[str]:
    """Stop this state folder's worker; returns ["connect"] if it was running."""
    pid = running_pid(layout)
    if pid is None:
        return []
    procs.progress("connect: stopping the worker ...")
    for killed in procs.stop([pid]):
        procs.progress(f"connect: pid {killed} ignored SIGTERM and was killed")
    layout.connect_pid.unlink(missing_ok=True)
    return [NAME]
