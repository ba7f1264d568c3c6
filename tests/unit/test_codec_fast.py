"""The codec's orjson value encoder writes exactly pydantic's ``to_json`` bytes.

``codec.encode`` takes the fast path for every plain catalog model (see ``_value_encoder``);
pydantic stays the contract. Hypothesis builds values of every field type the catalog uses —
any unicode text (control characters, quotes, non-BMP), any finite float, ints past 64 bits,
timestamps in and out of UTC and off the millisecond — and the two encoders must agree byte for
byte on all of them. Values bypass validation (``model_construct``) so the encoders also meet
what validation would reject; the encoding must not depend on it.
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel

from ys_platform.catalog import codec
from ys_platform.catalog.models import MODELS, MarketPrice, Message

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_ZONES = st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=5, minutes=30))])
# Whole milliseconds in UTC take the fast path (the text from the epoch milliseconds), the rest
# the exact one: draw both, over the whole range datetime allows.
# Years 2-9998: format_utc's astimezone(UTC) overflows for an offset datetime at either end of
# datetime's range, in pydantic's path as in ours (no wire value is there).
_RANGE = {"min_value": datetime(2, 1, 1), "max_value": datetime(9998, 12, 31)}
_WHOLE_MS = st.datetimes(timezones=st.just(UTC), **_RANGE).map(
    lambda value: value.replace(microsecond=value.microsecond // 1000 * 1000)
)
_DATETIMES = _WHOLE_MS | st.datetimes(timezones=_ZONES, **_RANGE)


def _strategy(annotation: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _strategy(args[0])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_strategy(arg) for arg in args))
    if origin is tuple:
        return st.lists(_strategy(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(_strategy(args[0]), _strategy(args[1]), max_size=3)
    if annotation is type(None):
        return st.none()
    if annotation is str:
        return st.text()
    if annotation is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
    if annotation in (datetime, AwareDatetime):
        return _DATETIMES
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _constructed(annotation)
    raise AssertionError(f"no strategy for {annotation!r}: extend the test with the new type")


def _constructed(model: type[BaseModel]) -> st.SearchStrategy[BaseModel]:
    fields = {name: _strategy(f.annotation) for name, f in model.model_fields.items()}
    return st.fixed_dictionaries(fields).map(lambda values: model.model_construct(**values))


_CLASSES = sorted(
    {cls for model in MODELS.values() for cls in (model, *model.__subclasses__())},
    key=lambda cls: cls.__name__,
)
_CONCRETE = [cls for cls in _CLASSES if cls.model_fields]


def test_every_catalog_model_takes_the_fast_path() -> None:
    # A model that stops being plain silently falls back to to_json: say so here instead.
    slow = [cls.__name__ for cls in _CONCRETE if not codec._plain_model(cls)]
    assert slow == []


@pytest.mark.parametrize("model", _CONCRETE, ids=lambda cls: cls.__name__)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_encoder_writes_pydantics_bytes(model: type[Message], data: st.DataObject) -> None:
    message = data.draw(_constructed(model))
    expected = message.__pydantic_serializer__.to_json(message)
    _, _, value, _, timestamp = codec.encode_record(message)
    assert value == expected
    event = getattr(message, model.EVENT_TIME_FIELD)
    assert timestamp == (event - _EPOCH) // timedelta(milliseconds=1)
    assert codec._value_encoder(model)(message, None) == expected


def test_encode_record_is_encode_with_the_topic_and_timestamp() -> None:
    tick = _tick(symbol="ETH/USD", ts=datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC))
    topic, key, value, headers, timestamp = codec.encode_record(tick)
    assert (key, value, headers) == codec.encode(tick)
    assert (topic, key, timestamp) == ("market.prices", b"ETH/USD", 1_772_366_400_250)
    assert headers == [("schema-version", b"1"), ("content-type", b"application/json")]
    # encode's list is the caller's to extend; the shared one is not touched.
    codec.encode(tick)[2].append(("x", b"y"))
    assert len(codec.encode_record(tick)[3]) == 2


def _tick(**fields: Any) -> MarketPrice:
    values = {
        "symbol": "S/T",
        "base": "B",
        "quote": "Q",
        "price": 1.0,
        "volume": None,
        "source": "s",
        "chain": "c",
        "venue": "v",
        "reserve_base": None,
        "reserve_quote": None,
        "liquidity_usd": None,
        "ts": datetime(2026, 3, 1, tzinfo=UTC),
    }
    return MarketPrice.model_construct(**{**values, **fields})


def test_the_awkward_strings_and_numbers_match() -> None:
    tick = _tick(
        symbol='q"b\\s/\x00\x01\x1f\x7f\u2028\u2029é\U0001f600\t\n\r\b\f',
        price=5e-324,
        volume=1e16,
        reserve_base=2.5e-05,
        reserve_quote=-0.0,
        ts=datetime(2026, 3, 1, 12, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=-7))),
    )
    assert codec.encode_record(tick)[2] == tick.__pydantic_serializer__.to_json(tick)


def test_a_lone_surrogate_fails_as_pydantic_fails() -> None:
    # orjson refuses it and hands over to to_json, whose own error is the caller's to see.
    tick = _tick(base="\ud800")
    with pytest.raises(Exception) as pydantic_error:
        tick.__pydantic_serializer__.to_json(tick)
    with pytest.raises(type(pydantic_error.value)):
        codec.encode_record(tick)
