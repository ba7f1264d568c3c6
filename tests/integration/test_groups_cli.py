"""``ys-platform groups list|describe|reset-offsets`` against the local broker: exact committed
offsets, high watermarks and lag; a reset refused while the group has a member, a dry run that
changes nothing, and resets to the earliest, the latest and a time, each to exact offsets."""

import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import NewTopic

from ys_platform.cli import main

# Partition p holds 10 * (p + 1) records; record i of every partition is stamped T0 + i s.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SIZES = {0: 10, 1: 20, 2: 30}
COMMITTED = {0: 4, 1: 7, 2: 30}


@pytest.fixture
def group(local_stack):
    """A topic with known records and a group that committed known offsets on it, no member."""
    connection = local_stack.kafka
    tag = uuid.uuid4().hex[:8]
    topic, group_id = f"t{tag}.ops-groups", f"t{tag}.ops-group"
    admin = connection.admin()
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    producer = connection.producer()
    for partition, size in SIZES.items():
        for i in range(size):
            stamp = int((T0 + timedelta(seconds=i)).timestamp() * 1000)
            producer.produce(
                topic, f"{partition}-{i}".encode(), partition=partition, timestamp=stamp
            )
    assert producer.flush(30) == 0
    committer = connection.consumer(group_id)
    committer.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in COMMITTED.items()], asynchronous=False
    )
    committer.close()
    return topic, group_id


def _committed(admin, group_id: str) -> dict[int, int]:
    request = [ConsumerGroupTopicPartitions(group_id)]
    listed = admin.list_consumer_group_offsets(request)[group_id].result(30)
    return {tp.partition: tp.offset for tp in listed.topic_partitions}


def _rows(out: str, first: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.split()[:1] == [first]]


def test_list_and_describe_show_exact_offsets_and_lag(local_stack, group, capsys):
    topic, group_id = group
    assert main(["groups", "describe", group_id]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(
        rf"group {re.escape(group_id)}: Empty, 0 member\(s\), protocol classic/-, "
        r"coordinator \d+, total lag 19",
        out.splitlines()[0],
    )
    assert _rows(out, topic) == [
        [topic, "0", "4", "10", "6", "-"],
        [topic, "1", "7", "20", "13", "-"],
        [topic, "2", "30", "30", "0", "-"],
    ]

    assert main(["groups", "list"]) == 0
    assert _rows(capsys.readouterr().out, group_id) == [[group_id, "Empty", "0", "classic/-", "19"]]

    assert main(["groups", "describe", f"{group_id}-absent"]) == 1
    assert f"no consumer group '{group_id}-absent' on the cluster" in capsys.readouterr().err


def test_reset_is_refused_with_a_member_and_exact_when_stopped(local_stack, group, capsys):
    topic, group_id = group
    admin = local_stack.kafka.admin()
    member = local_stack.kafka.consumer(group_id, client_id="ops-test-member")
    member.subscribe([topic])
    deadline = time.monotonic() + 30
    while not member.assignment():
        assert time.monotonic() < deadline, "the member was never assigned its partitions"
        member.poll(0.2)
    try:
        assert main(["groups", "describe", group_id]) == 0
        out = capsys.readouterr().out
        assert f"group {group_id}: Stable, 1 member(s), protocol classic/range" in out
        assert "client=ops-test-member" in out
        assert f"assigned {topic}[0], {topic}[1], {topic}[2]" in out

        assert main(["groups", "reset-offsets", group_id, "--topic", topic, "--to-earliest"]) == 1
        err = capsys.readouterr().err
        assert err == (
            f"ys-platform: group {group_id} has 1 active member(s) (state Stable); stop its "
            "consumers before resetting its offsets\n"
        )
        assert _committed(admin, group_id) == COMMITTED
    finally:
        member.close()  # leaves the group at once (no static membership)

    reset = ["groups", "reset-offsets", group_id, "--topic", topic]
    assert main([*reset, "--to-latest", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{group_id} {topic}[0]: would move 4 -> 10",
        f"{group_id} {topic}[1]: would move 7 -> 20",
        f"{group_id} {topic}[2]: would move 30 -> 30",
        "3 partitions planned (dry run, nothing changed)",
    ]
    assert _committed(admin, group_id) == COMMITTED

    assert main([*reset, "--to-earliest"]) == 0
    assert f"{group_id} {topic}[1]: moved 7 -> 0" in capsys.readouterr().out
    assert _committed(admin, group_id) == {0: 0, 1: 0, 2: 0}

    # The first record at or after T0 + 5 s is offset 5 of every partition.
    assert main([*reset, "--to-datetime", (T0 + timedelta(seconds=5)).isoformat()]) == 0
    capsys.readouterr()
    assert _committed(admin, group_id) == {0: 5, 1: 5, 2: 5}
    # T0 + 15 s: partition 0 has no record that late, so its end, as kafka-consumer-groups does.
    assert main([*reset, "--to-datetime", (T0 + timedelta(seconds=15)).isoformat()]) == 0
    capsys.readouterr()
    assert _committed(admin, group_id) == {0: 10, 1: 15, 2: 15}

    assert main([*reset, "--to-latest"]) == 0
    assert _committed(admin, group_id) == {0: 10, 1: 20, 2: 30}


def test_a_caught_up_transactional_group_lags_0_not_its_marker(local_stack, capsys):
    """5 records in one transaction end at offset 6 (the commit marker takes 5): a group that
    read them all and committed 5 lags 0, as the lag monitor counts it; 3 behind lags 3."""
    connection = local_stack.kafka
    tag = uuid.uuid4().hex[:8]
    topic, caught_up, behind = f"t{tag}.ops-tx", f"t{tag}.ops-tx-done", f"t{tag}.ops-tx-behind"
    admin = connection.admin()
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    try:
        producer = connection.producer(transactional_id=f"t{tag}.ops-tx-writer")
        producer.init_transactions(30)
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, b"%d" % i, partition=0)
        producer.commit_transaction(30)
        for group_id, offset in ((caught_up, 5), (behind, 2)):
            committer = connection.consumer(group_id)
            committer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
            committer.close()

        assert main(["groups", "describe", caught_up]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0].endswith(", total lag 0")
        assert _rows(out, topic) == [[topic, "0", "5", "6", "0", "-"]]
        assert main(["groups", "describe", behind]) == 0
        assert _rows(capsys.readouterr().out, topic) == [[topic, "0", "2", "6", "3", "-"]]
    finally:
        for future in admin.delete_consumer_groups([caught_up, behind]).values():
            future.exception(10)
        admin.delete_topics([topic])[topic].exception(10)
