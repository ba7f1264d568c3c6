"""The wheel is what a deployment ships: built, installed into a fresh virtual environment outside
the repository, it loads the code location and runs the local stack and the topic reconcile.

Nothing of the source tree is reachable from there (the working directory and the environment
are elsewhere), so every file the commands read (connector files, sink mappings, the local
stack's poms) must have come with the wheel.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from ys_platform.catalog.topics import ALL_TOPICS
from ys_platform.local.config import CONTROLLER_PORT_OFFSET
from ys_platform.settings import JMX_EXPORTER_PORT_OFFSET

REPO = Path(__file__).resolve().parents[2]

# Measured here: wheel ~8 s, fresh venv and install ~5 s, definitions validate ~10 s, a fresh
# one-broker Kafka ~6 s (Maven classpath cached in ~/.cache/ys-platform), apply and down ~5 s.
pytestmark = pytest.mark.timeout(240)

# pip resolves the build backend (setuptools, wheel) from its cache or PyPI; a minute is plenty.
BUILD_TIMEOUT_S = 180
COMMAND_TIMEOUT_S = 120


def _free_kafka_port() -> int:
    """A broker port whose controller (+100) and exporter (+9) ports are free too, below the
    ephemeral range (a port there can be taken at random by any outgoing connection) and away
    from the other tests'."""
    for _ in range(100):
        port = random.randrange(24_000, 31_000)
        exporter = port + JMX_EXPORTER_PORT_OFFSET  # the broker's JMX exporter agent
        if all(_is_free(p) for p in (port, port + CONTROLLER_PORT_OFFSET, exporter)):
            return port
    raise RuntimeError("no free port pair found in 24000-31000")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the working tree (setuptools writes build/ and egg-info
    next to the sources; the repository stays as it is)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(
        REPO,
        source,
        symlinks=True,  # ys_platform/_shipped links to connectors/ and deployments/local/
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".ys", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}\n{built.stderr}"
    (path,) = (tmp / "dist").glob("ys_platform-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; its dependencies come from this
    test's environment through a .pth line (which adds the folder to sys.path but does not run
    its .pth files, so this checkout's editable install stays out)."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "deps-from-the-test-environment.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        timeout=BUILD_TIMEOUT_S,
    )
    return venv


@pytest.fixture
def outside(installed: Path, tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """The environment and working directory of a user of the installed wheel: none of this
    shell's YS_* settings, a state folder and Dagster home of its own, a Kafka port of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YS_", "DAGSTER_"))}
    env |= {
        "PATH": f"{installed / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(installed),
        "YS_HOME": str(tmp_path / ".ys"),
        "YS_LOCAL_KAFKA_PORT": str(_free_kafka_port()),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    (tmp_path / "dagster").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    try:
        yield env, work
    finally:
        _run([str(installed / "bin" / "ys-platform"), "local", "down"], env, work)


def test_the_wheel_carries_the_files_it_reads(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "ys_platform/_shipped/connectors/postgres-source.json",
        "ys_platform/_shipped/connectors/clickhouse-sink.json",
        "ys_platform/_shipped/connectors/vector-sink.json",
        "ys_platform/_shipped/local/pom.xml",
        "ys_platform/_shipped/local/connect-pom.xml",
        "ys_platform/_shipped/local/log4j2.properties",
        "ys_platform/_shipped/local/jmx-exporter-pom.xml",
        "ys_platform/_shipped/local/jmx-exporter-kafka.yml",
        "ys_platform/_shipped/local/jmx-exporter-connect.yml",
    }
    assert shipped <= names
    # The same bytes as the repository's folders: one copy of each file.
    with zipfile.ZipFile(wheel) as archive:
        assert (
            archive.read("ys_platform/_shipped/local/pom.xml")
            == (REPO / "deployments" / "local" / "pom.xml").read_bytes()
        )


def test_installed_wheel_validates_runs_the_stack_and_applies_topics(
    installed: Path, outside: tuple[dict[str, str], Path]
) -> None:
    env, work = outside
    python, cli = str(installed / "bin" / "python"), str(installed / "bin" / "ys-platform")

    where = _run([python, "-c", "import ys_platform; print(ys_platform.__file__)"], env, work)
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stdout + where.stderr

    validate = _run(
        [python, "-m", "dagster", "definitions", "validate", "-m", "ys_platform.definitions"],
        env,
        work,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "Validation successful" in validate.stdout + validate.stderr

    up = _run([cli, "local", "up", "--no-connect", "--no-postgres"], env, work)
    assert up.returncode == 0, up.stdout + up.stderr
    port = env["YS_LOCAL_KAFKA_PORT"]
    assert f"127.0.0.1:{port}" in up.stdout

    apply = _run([cli, "topics", "apply"], env, work)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    total = len(ALL_TOPICS)
    assert total == 21  # 16 catalog topics and 5 dead-letter topics
    assert apply.stdout.splitlines()[-1] == f"{total} topics, {total} changed, 0 with drift"

    # The clients followed YS_LOCAL_KAFKA_PORT: the topics are on this stack's broker.
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    live = set(admin.list_topics(timeout=30).topics)
    assert {spec.name for spec in ALL_TOPICS} <= live

    again = _run([cli, "topics", "apply"], env, work)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1] == f"{total} topics, 0 changed, 0 with drift"

    down = _run([cli, "local", "down"], env, work)
    assert down.returncode == 0, down.stdout + down.stderr
