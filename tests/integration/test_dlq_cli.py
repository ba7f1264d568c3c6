"""``ys-platform dlq list|show|replay`` with the price-aggregation processor on the local broker.

The case: two bad price ticks (a negative price, a value that is not JSON) are dead-lettered by
the processor. Nothing fixes them — a bad tick stays bad — which is what makes "at most once"
observable: each is replayed once, goes through the processor once, is dead-lettered again
(carrying the replay headers) and is then passed over, never replayed again, so a cause no fix
has cured cannot loop. A replay that crashed after producing (an open transaction, never
committed) leaves nothing a read-committed consumer sees, and the next replay re-produces each
dead letter exactly once.
"""

import json
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta

from kafka_helpers import create_namespaced_topics, eth_ticks, read_topic, recent_minute

from ys_platform.catalog.codec import encode, timestamp_ms
from ys_platform.cli import main
from ys_platform.operations.dead_letters import REPLAY_OFFSET, REPLAY_PARTITION, REPLAY_TOPIC
from ys_platform.operations.records import READER_SETTINGS, partitions, read_ranges
from ys_platform.processors.price_aggregation import GROUP
from ys_platform.processors.runner import run_processor
from ys_platform.streaming import dead_letter
from ys_platform.streaming.worker import WorkerConfig

NEGATIVE = (
    b'{"symbol": "ETH/USD", "base": "ETH", "quote": "USD", "price": -5.0, "source": "x",'
    b' "chain": "c", "venue": "v", "ts": "2026-01-05T12:00:00.000Z"}'
)
NOT_JSON = b"{not json"

# A replay that dies after producing, before committing: its transaction stays open until the
# next producer with its transactional id fences it.
CRASHED_REPLAY = """
import os, sys
from ys_platform.operations.dead_letters import replayed_headers
from ys_platform.operations.records import read_ranges, reader, partitions
from ys_platform.settings import load_settings
dlq, replay_group = sys.argv[1], sys.argv[2]
connection = load_settings().kafka
consumer = reader(connection)
found = read_ranges(consumer, dlq, partitions(consumer, dlq))
producer = connection.producer(transactional_id=replay_group)
producer.init_transactions(30)
producer.begin_transaction()
for records in found.values():
    for r in records:
        headers = dict(r.headers())
        producer.produce(headers["ys.dlq.topic"].decode(), r.value(), r.key(),
                         partition=int(headers["ys.dlq.partition"]), headers=replayed_headers(r))
producer.flush(30)
os._exit(0)
"""


def _run(local_stack, namespace: str):
    return run_processor(
        local_stack,
        GROUP.group_id,
        config=WorkerConfig(namespace=namespace),
        stop=threading.Event(),
        max_idle_s=3.0,
    )


def _out(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_dead_letters_are_listed_shown_and_replayed_at_most_once(local_stack, capsys):
    connection = local_stack.kafka
    namespace = f"t{uuid.uuid4().hex[:8]}."
    source, dlq = f"{namespace}market.prices", f"{namespace}{GROUP.dead_letter_topic}"
    create_namespaced_topics(
        connection.admin(),
        namespace,
        ["market.prices", "market.analytics", GROUP.dead_letter_topic],
        3,
    )
    producer = connection.producer()
    for tick in eth_ticks(20, recent_minute(), 3000.0):
        key, value, headers = encode(tick)
        producer.produce(source, value, key, headers=headers, timestamp=timestamp_ms(tick))
    for bad in (NEGATIVE, NOT_JSON):
        producer.produce(source, bad, b"ETH/USD", headers=[("schema-version", b"1")])
    assert producer.flush(30) == 0

    first = _run(local_stack, namespace)
    assert (first.consumed, first.dead_lettered) == (22, 2)
    originals = {
        r.value(): r
        for r in read_topic(connection, source, idle_s=0.5)
        if r.value() in (NEGATIVE, NOT_JSON)
    }
    dead = read_topic(connection, dlq, idle_s=0.5)
    assert len(dead) == 2
    reasons = {r.value(): dead_letter.header(r.headers(), dead_letter.ERROR) for r in dead}

    cmd = ["--namespace", namespace]
    assert main(["dlq", "list", GROUP.group_id, *cmd]) == 0
    out = _out(capsys)
    assert out[0] == f"{dlq}: 2 dead letters, 0 replayed or passed over, 2 not yet replayed"
    assert sorted(out[1:]) == sorted(
        f"{1:>8}  market.prices  {reasons[v]}" for v in (NEGATIVE, NOT_JSON)
    )

    assert main(["dlq", "show", GROUP.group_id, "-n", "5", *cmd]) == 0
    shown = [json.loads(line) for line in _out(capsys)]
    assert sorted((s["partition"], s["offset"]) for s in shown) == sorted(
        (r.partition(), r.offset()) for r in dead
    )
    for line in shown:
        assert line["key"] == "ETH/USD" and line["raw"] in (NEGATIVE.decode(), NOT_JSON.decode())
        original = originals[line["raw"].encode()]
        assert line["dead_letter"] == {
            "reason": reasons[original.value()],
            "topic": source,
            "partition": original.partition(),
            "offset": original.offset(),
            "group": f"{namespace}{GROUP.group_id}",
        }
        assert line["error"] == reasons[original.value()]

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert main(["dlq", "replay", GROUP.group_id, "--since", later, "--dry-run", *cmd]) == 0
    assert (
        _out(capsys)[-1]
        == "0 would replay, 2 passed over (2 before --since) (dry run, nothing changed)"
    )
    assert main(["dlq", "replay", GROUP.group_id, "--dry-run", *cmd]) == 0
    plan = _out(capsys)
    assert plan[-1] == "2 would replay, 0 passed over (dry run, nothing changed)"
    for r in dead:
        o = originals[r.value()]
        assert (
            f"would replay {dlq}[{r.partition()}]@{r.offset()} -> {source}[{o.partition()}] "
            f"({reasons[r.value()]})"
        ) in plan
    assert len(read_topic(connection, source, idle_s=0.5)) == 22

    replay_group = f"{namespace}{GROUP.group_id}.dlq-replay"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHED_REPLAY, dlq, replay_group],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == 0, crashed.stderr

    assert main(["dlq", "replay", GROUP.group_id, *cmd]) == 0
    assert _out(capsys)[-1] == "2 replayed, 0 passed over"
    records = read_topic(connection, source, idle_s=0.5)
    assert len(records) == 24  # the crashed replay's copies were aborted, never committed
    replayed = [r for r in records if dead_letter.header(r.headers(), REPLAY_TOPIC) is not None]
    assert len(replayed) == 2
    by_dead_offset = {(r.partition(), r.offset()): r for r in dead}
    for r in replayed:
        letter = by_dead_offset[
            (
                int(dead_letter.header(r.headers(), REPLAY_PARTITION)),
                int(dead_letter.header(r.headers(), REPLAY_OFFSET)),
            )
        ]
        assert dead_letter.header(r.headers(), REPLAY_TOPIC) == dlq
        original = originals[letter.value()]
        assert (r.key(), r.value(), r.partition()) == (
            original.key(),
            original.value(),
            original.partition(),
        )
        assert r.timestamp()[1] == original.timestamp()[1]
        assert [k for k, _ in r.headers()] == [
            "schema-version",
            REPLAY_TOPIC,
            REPLAY_PARTITION,
            REPLAY_OFFSET,
        ]
    # Read uncommitted, the crashed replay's two copies are there: it did produce them.
    raw = connection.consumer(
        f"{namespace}raw", isolation_level="read_uncommitted", **READER_SETTINGS
    )
    try:
        assert sum(map(len, read_ranges(raw, source, partitions(raw, source)).values())) == 26
    finally:
        raw.close()

    assert main(["dlq", "replay", GROUP.group_id, *cmd]) == 0
    assert _out(capsys) == ["0 replayed, 0 passed over"]

    # Through the processor once: consumed, and (still bad) dead-lettered again with the
    # replay headers; the next replay passes those over.
    second = _run(local_stack, namespace)
    assert (second.consumed, second.dead_lettered) == (2, 2)
    assert main(["dlq", "replay", GROUP.group_id, *cmd]) == 0
    assert _out(capsys)[-1] == "0 replayed, 2 passed over (2 rejected again after a replay)"
    assert len(read_topic(connection, source, idle_s=0.5)) == 24
    assert main(["dlq", "list", GROUP.group_id, *cmd]) == 0
    assert (
        _out(capsys)[0] == f"{dlq}: 4 dead letters, 4 replayed or passed over, 0 not yet replayed"
    )
