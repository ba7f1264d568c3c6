"""`make dev`: the local stack, the topics, then `dagster dev` in the foreground.

`dagster dev` runs in its own session so that a terminal's Ctrl-C reaches only this process,
which forwards one SIGTERM and waits: Dagster then stops its webserver and daemon cleanly.
Signals are reset to their defaults in the child because a shell that starts us in the background
makes SIGINT ignored, and an ignored SIGINT leaves `dagster dev` ignoring SIGTERM too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from ys_platform.settings import Settings

# How long Dagster gets to stop its webserver, daemon and code server before it is killed.
SHUTDOWN_GRACE_S = 30

_DAGSTER_YAML = """\
# Written by `ys-platform dev`: local SQLite storage in this folder, no telemetry.
telemetry:
  enabled: false
"""


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def prepare_dagster_home(settings: Settings) -> Path:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(_DAGSTER_YAML)
    return home


def run_dev(settings: Settings, *, brokers: int | None = None, port: int = 3000) -> int:
    from ys_platform.catalog.topics import ALL_TOPICS
    from ys_platform.clients.kafka import KafkaConnection
    from ys_platform.local.stack import LocalStackError, up
    from ys_platform.streaming.topics import TopicAdminError, apply_plans, plan_topics

    try:
        up(settings, brokers=brokers)
        admin = KafkaConnection.from_settings(settings).admin()
        plans = plan_topics(admin, list(ALL_TOPICS))
        apply_plans(admin, plans)
    except (LocalStackError, TopicAdminError) as exc:
        print(f"make dev could not start the platform: {exc}", file=sys.stderr)
        return 1
    print(
        f"topics: {len(plans)} in the catalog, {sum(1 for p in plans if p.changes)} changed",
        file=sys.stderr,
    )

    env = {**os.environ, "DAGSTER_HOME": str(prepare_dagster_home(settings))}
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port)]
    command += ["-m", "ys_platform.definitions"]
    print(f"dagster dev: http://127.0.0.1:{port} (Ctrl-C stops it)", file=sys.stderr)
    child = subprocess.Popen(command, env=env, preexec_fn=_reset_signals, start_new_session=True)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                code = child.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if child.poll() is None:
            try:
                child.wait(timeout=SHUTDOWN_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
    print(
        "dagster dev stopped; the local stack keeps running (`ys-platform local down` stops it)",
        file=sys.stderr,
    )
    # A clean stop on our own signal is success, not the child's -15.
    return 0 if code in (0, -signal.SIGTERM, 128 + signal.SIGTERM) else code
