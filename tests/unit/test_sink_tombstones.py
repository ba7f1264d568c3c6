"""Which records a deleting sink writes and which keys it deletes, within one batch."""

from dataclasses import dataclass, field

from ys_platform.catalog.codec import CDC_OP_HEADER
from ys_platform.streaming.sink_worker import deletes_by_tombstone, split_tombstones


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


def test_a_tombstone_deletes_only_where_the_topic_reads_it_so():
    records = [Record(b"a", b"1"), Record(b"a", None), Record(b"b", None)]
    # A topic that is not compacted: a record without a value is no delete, it is dead-lettered.
    keep, removed = split_tombstones(records, tombstones=False)
    assert [(r.k, r.v) for r in keep] == [(b"a", b"1"), (b"a", None), (b"b", None)]
    assert removed == []
    assert deletes_by_tombstone("defi.protocols")
    assert not any(deletes_by_tombstone(t) for t in ("defi.tokens", "market.sentiment"))


def test_a_key_that_is_not_utf8_deletes_nothing_and_stays_in():
    # It used to be decoded to text for the delete, and the error stopped the sink.
    records = [Record(b"\xff\xfe", None), Record(b"ok", None), Record(b"\x80", b"{}", _op(b"d"))]
    keep, removed = split_tombstones(records, marked_deletes=True)
    assert [(r.k, r.v) for r in keep] == [(b"\xff\xfe", None), (b"\x80", b"{}")]
    assert removed == ["ok"]
