"""The session's 3-broker cluster (RF 3, min.insync 2 possible) and how a test that breaks it
leaves it whole again.

``three_broker_settings`` and ``start_three_brokers`` bring the stack up in a state folder and
on ports of its own (the conftest's session fixture ``three_brokers`` wraps them).
``restore_brokers`` is for every test that kills or stops a broker: it starts what is missing
and waits until the cluster is whole, so the next user of the shared stack finds 3 brokers and
every partition fully replicated (the conftest's ``restored_brokers`` calls it after a test).
"""

from __future__ import annotations

import time
from pathlib import Path

from ports import free_port

from ys_platform.local import LocalStackError, kafka_bootstrap, up
from ys_platform.local.config import CONTROLLER_PORT_OFFSET
from ys_platform.local.jmx_exporter import CONNECT_PORT_OFFSET
from ys_platform.settings import JMX_EXPORTER_PORT_OFFSET, Settings, load_settings

BROKERS = 3
# Below the ephemeral range (32768..) and clear of the shared stack (9092, 8083, 15432), the
# secure stack (19092.., 18083, 15433) and the other tests' own ports (21xxx, 23999, 25xxx..).
KAFKA_PORT = 26092
JMX_EXPORTER_PORT = 26301
CONNECT_PORT = 26083
POSTGRES_PORT = 26432  # named so that status() reads no one else's; nothing starts there
# Measured here: a killed broker restarts in 8-10 s (its restore and the session's down took
# 89 s together under a load of 20 on 2 cores) and its partitions are back in their ISRs within
# 0.1 s of it answering. 60 s after it answers bounds a slow CI machine.
RESTORE_TIMEOUT_S = 60.0
# Client requests against a local broker finish in milliseconds; 10 s only bounds a hang.
METADATA_TIMEOUT_S = 10.0


def _all_free(ports: list[int]) -> bool:
    for port in ports:
        try:
            if free_port(port, 1) != port:
                return False
        except AssertionError:
            return False
    return True


def _first_free_base(first: int, offsets: tuple[int, ...], width: int, step: int = 5) -> int:
    """The first base from ``first`` (in ``step``s) with base+offset+i free for every offset
    and i < width."""
    for base in range(first, first + 20 * step, step):
        if _all_free([base + offset + i for offset in offsets for i in range(width)]):
            return base
    raise AssertionError(f"no free port range from {first} for {offsets} x {width}")


def three_broker_settings(home: Path) -> Settings:
    """Settings of a 3-broker stack in ``home`` on free ports: brokers P..P+2, controllers
    P+100.., JMX exporters J..J+2 and Connect's J+9 (J set, not derived from P, so the
    exporter tests also prove the variable moves them), Connect's REST API on its own port."""
    kafka = _first_free_base(KAFKA_PORT, (0, CONTROLLER_PORT_OFFSET), BROKERS)
    # From 26301: never the derived kafka+9 (at most 26196 here).
    jmx = _first_free_base(JMX_EXPORTER_PORT, (0, CONNECT_PORT_OFFSET), BROKERS)
    assert jmx != kafka + JMX_EXPORTER_PORT_OFFSET
    return load_settings(
        home=home,
        local_kafka_port=kafka,
        local_jmx_exporter_port=jmx,
        connect_url=f"http://127.0.0.1:{free_port(CONNECT_PORT, besides=range(kafka, kafka + 3))}",
        postgres_port=free_port(POSTGRES_PORT),
    )


def start_three_brokers(settings: Settings, *, connect: bool = True) -> None:
    """Bring the 3 brokers of ``settings`` (and the Connect worker) up, healthy, or raise
    AssertionError saying what failed; ``down(settings)`` stops them."""
    try:
        services = up(settings, brokers=BROKERS, postgres=False, connect=connect)
    except LocalStackError as exc:
        raise AssertionError(
            f"The 3-broker test stack in {settings.home_dir} did not start: {exc}"
        ) from exc
    failing = [f"{s.name}: {s.detail or s.state}" for s in services if not s.healthy]
    if failing and all(f.startswith("kafka-") for f in failing):
        # A broker just started may not have registered yet ("2 broker(s)"): wait for the
        # cluster to be whole before calling it unhealthy.
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while (gaps := cluster_gaps(settings)) and time.monotonic() < deadline:
            time.sleep(0.5)
        failing = gaps
    assert not failing, f"The 3-broker test stack in {settings.home_dir} is unhealthy: {failing}"


def cluster_gaps(settings: Settings) -> list[str]:
    """What keeps the cluster from being whole, in words: brokers missing from the metadata,
    partitions whose ISR is short of their replicas or that have no leader ([] when whole).

    The cluster's view: a broker killed less than broker.session.timeout.ms (9 s) ago still
    shows as whole; whether each broker's process runs is up()'s check (restore_brokers)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # Every broker's address, not settings.kafka's (the first broker's only): the first one may
    # be the broker that is down.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap(settings)})
    try:
        metadata = admin.list_topics(timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        return [f"no metadata: {exc.args[0].str()}"]
    gaps = []
    missing = sorted(set(range(1, BROKERS + 1)) - set(metadata.brokers))
    if missing:
        gaps.append(f"brokers {missing} not in the metadata")
    for topic in sorted(metadata.topics.values(), key=lambda t: t.topic):
        for partition in sorted(topic.partitions.values(), key=lambda p: p.id):
            if partition.leader < 0:
                gaps.append(f"{topic.topic}-{partition.id} has no leader")
            elif sorted(partition.isrs) != sorted(partition.replicas):
                gaps.append(
                    f"{topic.topic}-{partition.id} under-replicated: ISR {sorted(partition.isrs)}"
                    f" of replicas {sorted(partition.replicas)}"
                )
    return gaps


def restore_brokers(settings: Settings, timeout_s: float = RESTORE_TIMEOUT_S) -> float:
    """Make the 3-broker cluster of ``settings`` whole again after a test killed or stopped
    brokers, and return the seconds it took.

    ``up`` starts every node that is not running (its data and cluster id stay, so it rejoins
    as itself; bounded by up's own start timeout); then this waits, at most ``timeout_s``, until
    all 3 brokers are in the metadata and no partition is under-replicated or leaderless. Raises
    AssertionError naming what is still missing (at most 10 partitions) when that does not
    happen in time.
    """
    started = time.monotonic()
    try:
        up(settings, brokers=BROKERS, postgres=False)
    except LocalStackError as exc:
        raise AssertionError(
            f"restoring the 3-broker cluster: a broker did not start: {exc}"
        ) from exc
    # From here: the restart itself is bounded by up()'s own start timeout (90 s).
    deadline = time.monotonic() + timeout_s
    while gaps := cluster_gaps(settings):
        if time.monotonic() > deadline:
            shown = "; ".join(gaps[:10]) + (
                f"; and {len(gaps) - 10} more" if len(gaps) > 10 else ""
            )
            raise AssertionError(
                f"the 3-broker cluster in {settings.home_dir} is not whole {timeout_s:.0f} s "
                f"after restarting its brokers: {shown}"
            )
        time.sleep(0.5)
    return time.monotonic() - started
