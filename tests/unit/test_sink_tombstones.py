"""Which records a deleting sink writes and which keys it deletes, within one batch."""

from dataclasses import dataclass, field

from ys_platform.catalog.codec import CDC_OP_HEADER
from ys_platform.streaming.sink_worker import split_tombstones


@dataclass
class Record:  # the accessors split_tombstones reads, as confluent_kafka.Message has them
    k: bytes | None
    v: bytes | None
    h: list[tuple[str, bytes]] = field(default_factory=list)

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.h or None


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


def _op(op: bytes) -> list[tuple[str, bytes]]:
    return [("schema-version", b"1"), (CDC_OP_HEADER, op)]


def test_a_change_stream_delete_is_a_delete_only_where_marks_are_read():
    records = [
        Record(b"a", b"1", _op(b"r")),
        Record(b"a", b"1", _op(b"d")),  # the deleted row, marked
        Record(b"b", b"2", _op(b"d")),
        Record(b"b", b"3", _op(b"c")),  # re-inserted after its delete: written
        Record(b"c", b"4", _op(b"u")),
    ]
    keep, removed = split_tombstones(records, marked_deletes=True)
    assert [(r.k, r.v) for r in keep] == [(b"b", b"3"), (b"c", b"4")]
    assert removed == ["a"]
    # On a topic that is not a change stream a header means nothing: everything is written.
    keep, removed = split_tombstones(records)
    assert len(keep) == len(records) and removed == []
