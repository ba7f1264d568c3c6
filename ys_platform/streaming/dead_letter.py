"""Dead-letter records: the original bytes, untouched, with headers saying why and from where.

Keeping key and value byte for byte means a fixed consumer can replay the dead letters into the
source topic as they were.
"""

from __future__ import annotations

from confluent_kafka import Message

Headers = list[tuple[str, bytes]]

# Header names are the de-facto Kafka Connect style, prefixed for the platform.
ERROR = "ys.dlq.error"
SOURCE_TOPIC = "ys.dlq.topic"
SOURCE_PARTITION = "ys.dlq.partition"
SOURCE_OFFSET = "ys.dlq.offset"
SOURCE_TIMESTAMP = "ys.dlq.timestamp"
GROUP = "ys.dlq.group"

# A header value is bytes on the wire; an error text beyond this is cut, with a mark.
MAX_ERROR_BYTES = 1000


def dead_letter_headers(record: Message, reason: str, group_id: str) -> Headers:
    error = reason.encode()
    if len(error) > MAX_ERROR_BYTES:
        error = error[: MAX_ERROR_BYTES - 3] + b"..."
    _, timestamp = record.timestamp()
    headers: Headers = list(record.headers() or [])
    headers += [
        (ERROR, error),
        (SOURCE_TOPIC, record.topic().encode()),
        (SOURCE_PARTITION, str(record.partition()).encode()),
        (SOURCE_OFFSET, str(record.offset()).encode()),
        (SOURCE_TIMESTAMP, str(timestamp).encode()),
        (GROUP, group_id.encode()),
    ]
    return headers


def header(headers: Headers | None, name: str) -> str | None:
    """The last value of header ``name`` as text (None if absent)."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = value.decode() if value is not None else None
    return found
