"""Which records a deleting sink writes and which keys it deletes, within one batch."""

from dataclasses import dataclass

from ys_platform.sinks.runtime import split_tombstones


@dataclass
class Record:  # the two accessors split_tombstones reads, as confluent_kafka.Message has them
    k: bytes | None
    v: bytes | None

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v


def test_last_record_of_a_key_decides():
    records = [
        Record(b"a", b"1"),  # updated, then deleted: gone
        Record(b"b", None),  # deleted, then re-inserted: written
        Record(b"a", None),
        Record(b"b", b"2"),
        Record(b"c", b"3"),  # untouched
        Record(None, None),  # unkeyed empty record: kept, so it is dead-lettered
    ]
    keep, removed = split_tombstones(records)
    assert [(r.k, r.v) for r in keep] == [(b"b", b"2"), (b"c", b"3"), (None, None)]
    assert removed == ["a"]
