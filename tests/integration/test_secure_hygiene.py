"""No generated password leaks: a secure run of a processor from the command line (each worker
as its own principal) and a Dagster materialization on the secure stack, then every log the stack
and the run wrote, the run's output, Dagster's event log and ``ps`` output are searched for each
password in ``$YS_HOME/secrets``: none is found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from kafka_helpers import create_namespaced_topics
from secure_helpers import generated_passwords, leaks
from targets import secure_target

from ys_platform.assets.acls import build_acl_assets
from ys_platform.catalog.codec import encode, timestamp_ms
from ys_platform.clients.env_file import load_env_file
from ys_platform.clients.kafka import produce_record
from ys_platform.connectors import connector_files
from ys_platform.processors.price_aggregation import GROUP
from ys_platform.resources.bindings import bind_resources
from ys_platform.settings import load_settings
from ys_platform.sources.simulator import MarketSimulator

CLI = Path(sys.executable).with_name("ys-platform")
TICKS = 3_000


def test_no_password_in_logs_event_log_output_or_command_lines(secure_stack, tmp_path):
    secrets = secure_stack.home / "secrets"
    target = secure_target(secure_stack)
    namespace = target.namespace()
    connection = target.settings.kafka
    create_namespaced_topics(
        connection.admin(),
        namespace,
        ["market.prices", "market.analytics", GROUP.dead_letter_topic],
        3,
    )
    producer = connection.producer()
    start_ms = (time.time_ns() // 1_000_000 - 600_000) // 1000 * 1000
    for tick in MarketSimulator(5, symbols=6, start_ms=start_ms).price_ticks(TICKS, rate=50.0):
        key, value, headers = encode(tick)
        produce_record(
            producer, f"{namespace}market.prices", value, key, headers, timestamp_ms(tick)
        )
    assert producer.flush(30) == 0

    # The operator's shell: the administrator's variables from its file, plus the folder the
    # workers find their own principals in.
    admin_env = load_env_file(secrets / "ys-admin.env")
    env = {
        **os.environ,
        **admin_env,
        "YS_HOME": str(secure_stack.home),
        "YS_LOCAL_KAFKA_PORT": str(secure_stack.settings.local_kafka_port),
        "YS_KAFKA_CREDENTIALS_DIR": str(secrets),
        "YS_WORKER_METRICS_PORT": "9600",
    }
    command = [str(CLI), "processor", "run", "price-aggregation", "--namespace", namespace]
    process = subprocess.Popen(
        [*command, "--max-idle", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    command_lines = []
    while process.poll() is None:
        command_lines.append(
            subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        )
        time.sleep(1.0)
    stdout, stderr = process.communicate(30)
    assert process.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["consumed"] == TICKS and summary["produced"] > 0, summary

    # Dagster: the ACL asset and its check materialized as Dagster's principal, secrets
    # bound from the environment (EnvVar), into an instance whose event log is searched.
    # (The namespace's own Dagster principal: the namespace's grants are the ones applied.)
    dagster_env = load_env_file(secrets / f"{namespace}ys-dagster.env")
    saved = {name: os.environ.get(name) for name in dagster_env}
    os.environ.update(dagster_env)
    try:
        settings = load_settings(
            home=secure_stack.home, local_kafka_port=secure_stack.settings.local_kafka_port
        )
        assert settings.kafka.sasl_username == f"{namespace}ys-dagster"
        asset, check = build_acl_assets(connector_files(settings.connectors_dir))
        with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
            result = dg.materialize(
                [asset, check],
                resources={"kafka": bind_resources(settings)["kafka"]},
                instance=instance,
                run_config={"ops": {"security__kafka_acls": {"config": {"namespace": namespace}}}},
            )
            assert result.success
            events = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert "kafka_acls" in events

    passwords = generated_passwords(secrets)
    found = leaks(passwords, "the run's output", stdout + stderr)
    found += leaks(passwords, "the Dagster event log", events)
    found += [leak for text in command_lines for leak in leaks(passwords, "ps", text)]
    written = [p for p in secure_stack.home.rglob("*") if p.is_file() and secrets not in p.parents]
    logs = [p for p in written if p.suffix in (".log", ".out", ".json", ".properties", ".txt")]
    assert any(p.suffix == ".log" for p in logs), written[:20]
    for path in logs:
        found += leaks(passwords, str(path), path.read_text(errors="replace"))
    assert not found, found
