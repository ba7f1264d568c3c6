"""A command pointed at a cluster that is not there says so in one sentence, and quickly.

No service: the address is a closed port on loopback, refused by the kernel, so librdkafka
reports it at once (the way a wrong but well-formed YS_KAFKA_BOOTSTRAP_SERVERS looks).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ys_platform.clients.kafka import KafkaConnection, KafkaUnreachableError, check_reachable

CLI = Path(sys.executable).parent / "ys-platform"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_reachable_names_the_servers_and_what_to_do() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(KafkaUnreachableError) as info:
        check_reachable(KafkaConnection(bootstrap_servers=address))
    # Refused connections end the wait at once, not after the 10 s timeout.
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith(f"Cannot reach Kafka at {address}: ")
    assert "Connection refused" in message
    assert message.endswith(
        "Start the local stack (`ys-platform local up`) or set YS_KAFKA_BOOTSTRAP_SERVERS to the "
        "brokers of a running cluster."
    )


def test_topics_apply_against_nothing_says_one_sentence(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("YS_")}
    env |= {"YS_KAFKA_BOOTSTRAP_SERVERS": address, "YS_HOME": str(tmp_path / ".ys")}
    result = subprocess.run(
        [str(CLI), "topics", "apply"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    assert result.stderr.splitlines()[0].startswith(
        f"ys-platform: Cannot reach Kafka at {address}: "
    )
    # Before: ~580 librdkafka FAIL lines, then the sentence, 30 s later.
    assert len(lines) == 1, lines
