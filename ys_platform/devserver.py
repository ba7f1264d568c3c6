"""`make dev`: the local stack, the topics, the lag monitor, then Dagster's dev server (`dg dev`)
in the foreground.

`dg dev` (Dagster 1.13's successor of the superseded `dagster dev`) runs in its own session so
that a terminal's Ctrl-C reaches only this process, which stops the processor and sink runs first
(each commits what it holds and ends CANCELED), then forwards one SIGTERM and waits: Dagster then
stops its webserver, daemon and code server cleanly. Signals are reset to their defaults in the
child because a shell that starts us in the background makes SIGINT ignored, and an ignored
SIGINT leaves Dagster ignoring SIGTERM too.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from ys_platform.cli.core import CommandError, ExitCode
from ys_platform.clients.env_file import load_env_file
from ys_platform.settings import Settings

# A gentle stream: enough that every processor has live output in the UI, little enough that the
# 2-core laptop stays responsive.
SIMULATOR_RATE = 50.0
SIMULATOR_SEED = 7

# How long running processors get to commit their batch when `make dev` stops.
RUN_STOP_TIMEOUT_S = 30
# How long Dagster gets to stop its webserver, daemon and code server before it is killed.
# Dagster itself waits up to 60 s for each of its subprocesses; with five runs just ended on a
# busy 2-core machine its shutdown took 10 s in one measurement and over 30 s in the next.
SHUTDOWN_GRACE_S = 90

# The monitor stops at its next wait between polls; a poll in flight ends within the admin
# client's 10 s request timeout (ys_platform.monitoring.lag.ADMIN_TIMEOUT_S), hence 15 s.
MONITOR_STOP_TIMEOUT_S = 15

_DAGSTER_YAML_MARK = "# Written by `ys-platform dev`"
_DAGSTER_YAML = f"""\
{_DAGSTER_YAML_MARK}: local SQLite storage in this folder, no telemetry.
telemetry:
  enabled: false
# The run workers print their events at INFO, not Dagster's default DEBUG (every resource
# init and materialization of five long-running runs would scroll the terminal).
python_logs:
  python_log_level: INFO
"""


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def prepare_dagster_home(home: Path) -> Path:
    """Create the instance folder; its dagster.yaml is ours unless someone wrote their own."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text().startswith(_DAGSTER_YAML_MARK):
        config.write_text(_DAGSTER_YAML)
    return home


def stop_processor_runs(dagster_home: Path, timeout_s: float = RUN_STOP_TIMEOUT_S) -> int:
    """Ask every in-progress processor run to stop (it commits its batch first) and wait.

    Done before Dagster itself stops: its code server would otherwise wait for these
    never-ending runs, and then leave them behind when it is killed.
    """

    import dagster as dg

    from ys_platform.assets.workers import WORKER_TAG
    from ys_platform.sensors.keepalive import IN_PROGRESS

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    deadline = time.monotonic() + timeout_s
    asked: set[str] = set()
    with dg.DagsterInstance.get() as instance:
        # In rounds: until Dagster stops, a keep-alive sensor may launch a run in the meantime.
        while time.monotonic() < deadline:
            active = [
                r.dagster_run
                for r in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS))
                if WORKER_TAG in r.dagster_run.tags
            ]
            if not active:
                break
            for run in active:
                if run.run_id in asked:
                    continue
                asked.add(run.run_id)
                try:
                    instance.run_coordinator.cancel_run(run.run_id)
                except Exception as exc:  # one run that cannot be reached must not stop the others
                    print(f"could not stop run {run.run_id}: {exc}", file=sys.stderr)
            time.sleep(0.5)
        runs = [instance.get_run_by_id(run_id) for run_id in asked]
        return sum(1 for run in runs if run is None or run.is_finished)  # None: deleted meanwhile


def _kill_session(session_id: int) -> None:
    """SIGKILL whatever is left in the session `dg dev` ran in (its code servers too)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session_id:
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            continue


def _prepare_cdc(settings: Settings) -> bool:
    """Migrations and the CDC connectors, so Postgres changes flow while the UI is up. A failure
    here leaves the rest of the platform running and says what to run by hand; returns whether
    CDC runs."""
    import argparse

    from ys_platform.cli import connectors, db
    from ys_platform.cli.core import run
    from ys_platform.local import postgres as local_postgres
    from ys_platform.local.state import Layout

    no_args = argparse.Namespace(names=[])
    failed = run(db.migrate, no_args, settings)
    # The secure stack's Debezium role reads only the captured tables, which the migrations
    # may just have made.
    secrets = local_postgres.postgres_secrets(settings, Layout(settings.home_dir))
    if not failed and secrets:
        local_postgres.grant_capture(settings, secrets)
    if failed or run(connectors.apply, no_args, settings):
        print(
            "CDC is not running: see above, then `ys-platform db migrate` and "
            "`ys-platform connectors apply`",
            file=sys.stderr,
        )
        return False
    return True


def _secure_identities(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """The two identities of a secure `make dev`: the administrator's settings, with which this
    process sets the cluster up (topics, ACLs, connectors), and the environment of what it
    starts (Dagster, the monitor): Dagster's principal, and the credentials folder in which each
    worker Dagster runs finds its own (``YS_KAFKA_CREDENTIALS_DIR``). The administrator's
    password stays in this process; the children's passwords reach them through their
    environment, never their command lines."""
    from ys_platform.local.postgres_secrets import ENV_FILE
    from ys_platform.local.secrets import ADMIN_PRINCIPAL, read_credential, secrets_dir
    from ys_platform.security.principals import DAGSTER_NAME

    home = settings.home_dir
    secrets = secrets_dir(home)
    # libpq reads the roles' passwords from PGPASSFILE: here (the migrations) and in the children.
    os.environ.update(load_env_file(secrets / ENV_FILE))
    admin = read_credential(home, ADMIN_PRINCIPAL).connection(credentials_dir=secrets)
    children = {
        **os.environ,
        **read_credential(home, DAGSTER_NAME).environment(),
        "YS_KAFKA_CREDENTIALS_DIR": str(secrets),
    }
    # A shell that sourced an administrator's file passes no other Kafka secret on.
    children.pop("YS_KAFKA_SSL_KEY_PASSWORD", None)
    return settings.model_copy(update={"kafka": admin}), children


def _apply_acls(settings: Settings) -> None:
    """The catalog's ACLs for every principal, as the administrator (what `ys-platform acls
    apply` does); extra grants are reported, not removed."""
    from ys_platform.connectors import connector_files
    from ys_platform.security.acls import reconcile
    from ys_platform.security.principals import principals

    found = principals(connector_files(settings.connectors_dir))
    result = reconcile(settings.kafka.admin(), found)
    print(
        f"acls: {len(found)} principals, {len(result.plan.create)} grant(s) created, "
        f"{len(result.plan.extra)} extra (`ys-platform acls check` lists them)",
        file=sys.stderr,
    )


def _start_simulator(
    settings: Settings, rate: float, seed: int, *, cdc: bool
) -> tuple[threading.Thread, threading.Event]:
    from ys_platform.sources.publish import run_simulation

    stop = threading.Event()

    def stream() -> None:
        try:
            run_simulation(settings, rate, math.inf, seed, stop, cdc=cdc)
        except Exception as exc:  # the UI stays up; the note says why data stopped
            print(f"simulator stopped: {exc}", file=sys.stderr)

    thread = threading.Thread(target=stream, name="simulator", daemon=True)
    thread.start()
    return thread, stop


def start_monitor(settings: Settings, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`ys-platform monitor` as a child: the lag endpoint beside Dagster. In its own session, so
    a terminal's Ctrl-C reaches only us and the monitor is stopped in order, like Dagster."""
    command = [sys.executable, "-m", "ys_platform.cli", "monitor"]
    monitor = subprocess.Popen(command, env=env, preexec_fn=_reset_signals, start_new_session=True)
    print(
        f"lag monitor: http://127.0.0.1:{settings.monitor_port}/metrics (pid {monitor.pid})",
        file=sys.stderr,
    )
    return monitor


def stop_monitor(monitor: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within MONITOR_STOP_TIMEOUT_S."""
    if monitor.poll() is None:
        monitor.send_signal(signal.SIGTERM)
        try:
            monitor.wait(timeout=MONITOR_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print("the lag monitor did not stop in time: killing it", file=sys.stderr)
            monitor.kill()
            monitor.wait()


def run_dev(
    settings: Settings,
    *,
    brokers: int | None = None,
    port: int = 3000,
    simulate_rate: float = SIMULATOR_RATE,
    dagster_home: Path | None = None,
    secure: bool = False,
) -> ExitCode:
    """Run the platform in the foreground until Ctrl-C/SIGTERM; ``dagster_home`` (default:
    ``YS_HOME/dagster``) is Dagster's instance folder, the stack's state stays under ``YS_HOME``.

    ``secure``: the secure stack (`local up --secure`). This process sets it up as the
    administrator and applies the catalog's ACLs; Dagster runs as its principal, and every
    processor, sink, connector, the monitor and the simulator as their own
    (:func:`_secure_identities`).
    """
    from ys_platform.catalog.topics import ALL_TOPICS
    from ys_platform.local.stack import up
    from ys_platform.local.state import LocalStackError
    from ys_platform.security.acls import AclAdminError
    from ys_platform.streaming.topics import TopicAdminError, apply_plans, plan_topics

    children = dict(os.environ)
    try:
        up(settings, brokers=brokers, connect=True, secure=secure)
        if secure:
            settings, children = _secure_identities(settings)
        if secure:
            # Before the topics: a broker applies new grants after the logs of every partition
            # created before them (acls._await_enforced).
            _apply_acls(settings)
        admin = settings.kafka.admin()
        plans = plan_topics(admin, list(ALL_TOPICS))
        apply_plans(admin, plans)
    except (LocalStackError, TopicAdminError, AclAdminError) as exc:
        raise CommandError(f"make dev could not start the platform: {exc}") from exc
    cdc = _prepare_cdc(settings)
    print(
        f"topics: {len(plans)} in the catalog, {sum(1 for p in plans if p.changes)} changed",
        file=sys.stderr,
    )

    # A seed per run: the transactions of a seed, once in PostgreSQL, cannot recur at another
    # time (see run_simulation); the seed is printed so a run's market can be replayed.
    seed = SIMULATOR_SEED + int(time.time())
    simulator = (
        _start_simulator(settings, simulate_rate, seed, cdc=cdc) if simulate_rate > 0 else None
    )
    if simulator:
        where = (
            "the CDC-captured entities into PostgreSQL (Debezium carries them to their topics), "
            "market data and cross-chain events into Kafka"
            if cdc
            else "every topic straight into Kafka"
        )
        print(f"simulator: {simulate_rate:g} messages/s (seed {seed}): {where}", file=sys.stderr)
    home = prepare_dagster_home(dagster_home or settings.dagster_home)
    env = {**children, "DAGSTER_HOME": str(home)}
    command = [str(Path(sys.executable).with_name("dg")), "dev", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--module-name", "ys_platform.definitions"]
    print(f"Dagster: http://127.0.0.1:{port} (Ctrl-C stops it)", file=sys.stderr)
    monitor = start_monitor(settings, children)
    try:
        child = subprocess.Popen(
            command, env=env, preexec_fn=_reset_signals, start_new_session=True
        )
    except BaseException:
        stop_monitor(monitor)
        raise

    stopping = threading.Event()

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        while child.poll() is None and not stopping.wait(1.0):
            pass
    finally:
        if simulator:
            simulator[1].set()
        if child.poll() is None:
            print("stopping: processor and sink runs first, then Dagster", file=sys.stderr)
            stopped = stop_processor_runs(home)
            print(f"stopped {stopped} processor and sink run(s)", file=sys.stderr)
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=SHUTDOWN_GRACE_S)
            except subprocess.TimeoutExpired:
                print("Dagster did not stop in time: killing it", file=sys.stderr)
        _kill_session(child.pid)
        stop_monitor(monitor)
        if simulator:
            simulator[0].join(10)
    code = child.wait()
    print(
        "Dagster stopped; the local stack keeps running (`ys-platform local down` stops it)",
        file=sys.stderr,
    )
    # A clean stop on our own signal is success, not the child's -15.
    if code == 0 or (stopping.is_set() and code in (-signal.SIGTERM, 128 + signal.SIGTERM)):
        return ExitCode.OK
    raise CommandError(f"Dagster exited with code {code}")
