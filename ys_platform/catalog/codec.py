"""The wire format of catalog messages: compact JSON values, string keys, version headers.

``encode`` turns a model into what a producer sends; ``decode``/``decode_batch`` turn a record
value back into a model or a :class:`DecodeError` whose text is the dead-letter reason.

Keys: a message is keyed by the value of its topic's ``TopicSpec.key`` field (``key_of``). On
``crosschain.events`` (key ``chain``) a gas price has a ``chain`` field and a bridge quote a
``chain`` property equal to its ``from_chain``, so a quote is ordered with the chain it leaves.

Decoding is strict (no string-to-number or float-to-int coercion): the producer, not the
consumer, owns the types.
"""

from __future__ import annotations

import functools
import gc
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import AwareDatetime, BaseModel, PlainSerializer, TypeAdapter, ValidationError

from ys_platform.catalog.models import MODELS, VALUE_TYPES, Message, format_utc
from ys_platform.catalog.topics import topic

__all__ = [
    "CDC_OP_HEADER",
    "CONTENT_TYPE",
    "MAX_VALUE_BYTES",
    "DecodeError",
    "decode",
    "decode_batch",
    "encode",
    "encode_record",
    "headers_of",
    "is_delete",
    "key_of",
    "timestamp_ms",
    "topic_of",
    "topic_of_model",
]

CONTENT_TYPE = b"application/json"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_TOMBSTONE = "no value (a tombstone)"

MAX_VALUE_BYTES = 256 * 1024
"""The largest value of a catalog message. The largest the platform writes are portfolios,
~170 bytes a position: this is ~1,500 positions, and a quarter of the broker's default
``message.max.bytes`` (1 MiB), so a value is never near what a topic can take. A larger value
is refused before it is parsed (a megabyte of text would cost the validator and every sink's
memory for nothing)."""
_TOPIC_BY_MODEL: dict[type, str] = {model: name for name, model in MODELS.items()}

Headers = list[tuple[str, bytes]]

CDC_OP_HEADER = "ys.cdc.op"
"""The change's operation on a record of a change-stream topic (``TopicSpec.change_stream``):
``r`` snapshot read, ``c`` insert, ``u`` update, ``d`` delete. The CDC connector sets it
(Debezium's ``add.headers=op`` with the prefix ``ys.cdc.``); a delete's value is the deleted row,
a valid message, so a consumer that does not look at the header would take it for an upsert."""
_DELETE_OP = b"d"


class DecodeError(ValueError):
    """A record value that is not a valid message of its topic.

    ``str(error)`` is one short sentence naming the topic and the first offending field, fit for
    a dead-letter header; ``errors`` holds pydantic's full list (empty when there was no value).
    """

    def __init__(
        self,
        topic: str,
        reason: str,
        field: str | None = None,
        *,
        variant: str | None = None,
        errors: Sequence[Any] = (),
    ) -> None:
        self.topic = topic
        self.reason = reason
        self.field = field
        self.variant = variant
        self.errors = list(errors)
        where = f"{topic} ({variant})" if variant else topic
        text = f"{where}: field '{field}': {reason}" if field else f"{where}: {reason}"
        if len(self.errors) > 1:
            text += f" (and {len(self.errors) - 1} more)"
        super().__init__(text)

    @classmethod
    def from_validation(cls, topic_name: str, exc: ValidationError) -> DecodeError:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        loc = list(errors[0]["loc"])
        variant = None
        # Inside a tagged union pydantic prefixes the location with the tag: lift it out so the
        # field reads as the variant's own field name.
        if loc and _is_union(topic_name) and isinstance(loc[0], str):
            variant = loc.pop(0)
        field = ".".join(str(part) for part in loc) or None
        return cls(topic_name, errors[0]["msg"], field, variant=variant, errors=errors)


def _is_union(topic_name: str) -> bool:
    return VALUE_TYPES[topic_name] is not MODELS[topic_name]


@functools.cache
def _adapter(topic_name: str) -> TypeAdapter[Any]:
    # Built on first use, not at import; a TypeAdapter over a model reuses the model's compiled
    # core schema, so this is the same Rust validator as Model.model_validate_json.
    topic(topic_name)  # KeyError naming an unknown topic
    try:
        value_type = VALUE_TYPES[topic_name]
    except KeyError:
        raise KeyError(f"{topic_name!r} has no message model (a dead-letter topic?)") from None
    return TypeAdapter(value_type)


@functools.cache
def topic_of_model(model: type[BaseModel]) -> str:
    """The catalog topic of a model class (a union variant's is its base's topic)."""
    for cls in model.__mro__:
        name = _TOPIC_BY_MODEL.get(cls)
        if name is not None:
            return name
    raise TypeError(f"{model.__name__} is not a catalog message model")


def topic_of(message: BaseModel) -> str:
    """The catalog topic a model instance belongs on."""
    return topic_of_model(type(message))


@functools.cache
def _key_field(model: type[Message]) -> str | None:
    return topic(topic_of_model(model)).key


def key_of(message: Message) -> str | None:
    """The record key of a message: the value of its topic's key field (None if unkeyed)."""
    field = _key_field(type(message))
    return None if field is None else str(getattr(message, field))


def timestamp_ms(message: Message) -> int:
    """The event time in epoch milliseconds, for the Kafka record timestamp."""
    return _epoch_ms(getattr(message, message.EVENT_TIME_FIELD))


def _epoch_ms(value: datetime) -> int:
    if _whole_utc_ms(value):
        return _fast_epoch_ms(value)
    return (value - _EPOCH) // _MS


def _whole_utc_ms(value: datetime) -> bool:
    return value.tzinfo is UTC and not value.microsecond % 1000


def _fast_epoch_ms(value: datetime) -> int:
    # The float timestamp, rounded, is exact for whole milliseconds in UTC (its error is below
    # 0.1 ms until year 9999) at a third of the timedelta arithmetic's cost.
    return round(value.timestamp() * 1000)


def encode(message: Message) -> tuple[bytes | None, bytes, Headers]:
    """``(key, value, headers)`` for producing ``message`` to ``topic_of(message)``."""
    _, key, value, headers, _ = encode_record(message)
    # A fresh list each time: callers append their own headers (trace ids, DLQ reasons).
    return key, value, list(headers)


def encode_record(message: Message) -> tuple[str, bytes | None, bytes, Headers, int]:
    """``(topic, key, value, headers, timestamp_ms)``: everything a producer sends of a message.

    The headers list is shared by every message of the class: pass it to ``produce`` as it is
    (librdkafka copies it), never change it; :func:`encode` gives a list of one's own.
    """
    wire = _wire(type(message))
    key_field = wire.key_field
    if key_field is None:
        key = None
    else:
        key_value = getattr(message, key_field)
        # Only plain str keys are looked up: a str enum equals its value yet prints otherwise.
        key = _KEY_BYTES.get(key_value) if type(key_value) is str else None
        if key is None:
            key = _key_bytes(key_value)
    event = getattr(message, wire.event_field)
    times = _EVENT_TIMES.get(event)
    if times is None:
        times = _event_times(event)
    timestamp, text = times
    return wire.topic, key, wire.value(message, text), wire.headers, timestamp


# The record keys and event times of recent messages, worked out once: a stream has few keys
# (symbols, chains) and its neighbours share event times, and on the produce loop the two cost
# ~0.7 us a record (str().encode() ~0.17 us, the epoch milliseconds ~0.54 us, measured on 200k
# market.prices ticks) against ~0.1 us for two lookups. Cleared when full, so they stay small.
_KEY_BYTES: dict[str, bytes] = {}
_EVENT_TIMES: dict[datetime, tuple[int, str | None]] = {}
_RECENT_TABLE_SIZE = 1 << 16


def _key_bytes(value: object) -> bytes:
    key = str(value).encode()
    if type(value) is str:
        if len(_KEY_BYTES) >= _RECENT_TABLE_SIZE:
            _KEY_BYTES.clear()
        _KEY_BYTES[value] = key
    return key


def _event_times(event: datetime) -> tuple[int, str | None]:
    """(epoch ms, the wire text) of an event time; the text only for a whole UTC millisecond
    (the value encoder's fast case), which is also all the table keeps. Equal instants share an
    entry whatever their zone: both the milliseconds and ``format_utc`` are of the instant."""
    if not _whole_utc_ms(event):
        return (event - _EPOCH) // _MS, None
    event_ms = _fast_epoch_ms(event)
    times = (event_ms, _ms_text(event_ms))
    if len(_EVENT_TIMES) >= _RECENT_TABLE_SIZE:
        _EVENT_TIMES.clear()
    _EVENT_TIMES[event] = times
    return times


def headers_of(model: type[Message]) -> Headers:
    """The headers every message of ``model`` carries (shared: do not change the list)."""
    return _wire(model).headers


@dataclass(frozen=True, slots=True)
class _Wire:
    """How the messages of one model class go on the wire, worked out once per class."""

    topic: str
    key_field: str | None
    event_field: str
    headers: Headers
    value: Callable[[Message, str | None], bytes]
    """The JSON value; given the event time's wire text when it is known (see _event_times)."""


@functools.cache
def _wire(model: type[Message]) -> _Wire:
    version = str(model.SCHEMA_VERSION).encode()
    return _Wire(
        topic=topic_of_model(model),
        key_field=_key_field(model),
        event_field=model.EVENT_TIME_FIELD,
        headers=[("schema-version", version), ("content-type", CONTENT_TYPE)],
        value=_value_encoder(model),
    )


# --- the value encoder -------------------------------------------------------------------------
#
# pydantic's ``to_json`` is the contract; for the catalog's plain models (fields of str, float,
# int, bool, None, Literal, tuples, str dicts, nested plain models and UTC timestamps) orjson
# writes the same bytes from ``__dict__`` at a fraction of the cost: measured on market.prices
# ticks, 0.6 us + 0.4 us for the timestamp against 4.7-6.6 us for ``to_json`` (most of it the
# timestamp's Python serializer). Both write floats as the shortest round-trip form with the
# same exponent style and strings as raw UTF-8 with the same escapes; the property test
# (tests/unit/test_codec_fast.py) checks the two byte for byte over generated messages of every
# catalog model. A model the fast path cannot prove plain, or a value orjson refuses (an int
# beyond 64 bits, a lone surrogate), goes through ``to_json``.

_SCALARS = (str, int, float, bool, type(None))
_DATETIMES = (datetime, AwareDatetime)


def _iso_utc(value: datetime) -> str:
    """``format_utc(value)``, fast for a whole millisecond in UTC."""
    if _whole_utc_ms(value):
        return _ms_text(_fast_epoch_ms(value))
    return format_utc(value)


# The text of recent milliseconds and seconds: a stream's timestamps share their millisecond
# or at least their second with many neighbours, and isoformat costs ~2.8 us against ~0.1 us
# for a lookup. Each table is cleared when full, so it stays small whatever the input.
_MS_TEXT: dict[int, str] = {}
_SECOND_TEXT: dict[int, str] = {}
_TEXT_TABLE_SIZE = 1 << 16


def _ms_text(event_ms: int) -> str:
    """``format_utc`` of an epoch millisecond (1970-01-01 to 9999-12-31)."""
    text = _MS_TEXT.get(event_ms)
    if text is None:
        second, ms = divmod(event_ms, 1000)
        prefix = _SECOND_TEXT.get(second)
        if prefix is None:
            if len(_SECOND_TEXT) >= _TEXT_TABLE_SIZE:
                _SECOND_TEXT.clear()
            moment = _EPOCH + timedelta(seconds=second)
            prefix = _SECOND_TEXT[second] = moment.replace(tzinfo=None).isoformat()
        if len(_MS_TEXT) >= _TEXT_TABLE_SIZE:
            _MS_TEXT.clear()
        text = _MS_TEXT[event_ms] = f"{prefix}.{ms:03d}Z"
    return text


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso_utc(value)
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(type(value).__name__)


def _plain_type(annotation: Any, metadata: Sequence[Any] = ()) -> bool:
    """Whether orjson (with :func:`_default`) writes values of this type as pydantic does."""
    for item in metadata:
        if isinstance(item, PlainSerializer) and item.func is not format_utc:
            return False
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _plain_type(base, [*metadata, *extra])
    if origin is typing.Literal:
        return all(isinstance(arg, _SCALARS) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType, tuple, list, dict):
        return all(_plain_type(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _plain_model(annotation)
    if annotation in _DATETIMES:
        # A datetime is written by the catalog's UtcDatetime serializer, or not plain.
        return any(
            isinstance(item, PlainSerializer) and item.func is format_utc for item in metadata
        )
    return annotation in _SCALARS or annotation is type(None)


@functools.cache
def _plain_model(model: type[BaseModel]) -> bool:
    config = model.model_config
    if model.model_computed_fields or any(key.startswith("ser_") for key in config):
        return False
    if (
        model.__pydantic_decorators__.field_serializers
        or model.__pydantic_decorators__.model_serializers
    ):
        return False
    for field in model.model_fields.values():
        if field.alias or field.serialization_alias or field.exclude:
            return False
        if not _plain_type(field.annotation, field.metadata):
            return False
    return True


@functools.cache
def _value_encoder(model: type[Message]) -> Callable[[Message, str | None], bytes]:
    to_json = model.__pydantic_serializer__.to_json
    if not _plain_model(model):
        return lambda message, _event_text: to_json(message)
    dumps = orjson.dumps
    passthrough = orjson.OPT_PASSTHROUGH_DATETIME
    event_field = model.EVENT_TIME_FIELD

    def encode_value(message: Message, event_text: str | None) -> bytes:
        fields = message.__dict__
        if event_text is not None:
            fields = fields.copy()
            fields[event_field] = event_text
        try:
            return dumps(fields, default=_default, option=passthrough)
        except (TypeError, orjson.JSONEncodeError):
            return to_json(message)

    return encode_value


def is_delete(headers: Headers | None) -> bool:
    """Whether a record's headers mark it as the delete of its row (see :data:`CDC_OP_HEADER`)."""
    for name, value in headers or ():
        if name == CDC_OP_HEADER:
            return value == _DELETE_OP
    return False


def decode(topic_name: str, value: bytes | bytearray | str | None) -> Message:
    """The message in a record value of ``topic_name``; DecodeError if it is not a valid one.

    A None value (a tombstone on a compacted topic) is a DecodeError too: callers that expect
    tombstones check for them first. An unknown topic is a KeyError (a bug, not bad data).
    """
    adapter = _adapter(topic_name)
    if value is None:
        raise DecodeError(topic_name, _TOMBSTONE)
    if len(value) > MAX_VALUE_BYTES:
        raise _oversized(topic_name, len(value))
    try:
        message: Message = adapter.validator.validate_json(value, strict=True)
    except ValidationError as exc:
        raise DecodeError.from_validation(topic_name, exc) from None
    return message


def _oversized(topic_name: str, size: int) -> DecodeError:
    return DecodeError(
        topic_name, f"value of {size:,} bytes is over the catalog's limit of {MAX_VALUE_BYTES:,}"
    )


def decode_batch(
    topic_name: str, values: Sequence[bytes | None]
) -> tuple[list[Message], list[tuple[int, DecodeError]]]:
    """Decode many values of one topic: ``(messages, [(index in values, error), ...])``.

    Messages keep their input order. One Rust validator call per value: measured as fast as or
    faster than validating the batch joined into one JSON array (TypeAdapter(list[Model])), and
    unlike the array a value holding ``{...},{...}`` cannot shift the others' indices.
    """
    validate = _adapter(topic_name).validator.validate_json
    messages: list[Message] = []
    failures: list[tuple[int, DecodeError]] = []
    append = messages.append
    # The cyclic GC is paused while the batch is built: it would otherwise rescan the growing
    # list of (acyclic, refcount-freed) models over and over: ~190k -> ~300k msg/s on 100k
    # market.prices values. Nothing here makes cycles, so nothing is left for it to collect.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index, value in enumerate(values):
            if value is not None and len(value) > MAX_VALUE_BYTES:
                failures.append((index, _oversized(topic_name, len(value))))
                continue
            try:
                append(validate(value, strict=True))
            except ValidationError as exc:
                # Checked only on failure, to keep the per-message path to one Rust call.
                error = (
                    DecodeError(topic_name, _TOMBSTONE)
                    if value is None
                    else DecodeError.from_validation(topic_name, exc)
                )
                failures.append((index, error))
    finally:
        if gc_was_enabled:
            gc.enable()
    return messages, failures
