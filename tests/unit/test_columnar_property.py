"""Property: ``decode_columns`` accepts exactly what ``decode_batch`` accepts, with the same values
and the same dead-letter reasons, on generated batches mixing good and bad record values.

Good records are drawn per topic (validators satisfied) and written either as a producer writes
them (``encode``) or in other spellings pydantic reads the same (offsets, fewer fraction digits,
escapes, whitespace, other number forms). Bad ones take one mutation: a wrong type or token in a
field, a missing, repeated or unknown key, a bad timestamp, broken JSON, a tombstone, bytes that
are not UTF-8, a newline, ... The reference is ``decode_batch`` itself, with the one documented
difference: an integer beyond Int64 fails in columns.
"""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ys_platform.catalog import MODELS, encode, format_utc
from ys_platform.catalog.codec import decode_batch
from ys_platform.catalog.columnar import arrow_schema, decode_columns
from ys_platform.catalog.models import MAX_QUANTITY

TOPICS = ("market.prices", "defi.transactions", "market.analytics", "risk.assessments")
INT64 = (-(2**63), 2**63 - 1)
INT64_REASON = (
    "Input should be between -9223372036854775808 and 9223372036854775807 "
    "(the range of an Int64 column)"
)
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- good records, as Python values --------------------------------------------------------------

tickers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", fullmatch=True)
texts = st.text(min_size=1, max_size=12) | st.sampled_from(
    ['x","health_factor":1', '"vwap":', "naïve ☕", "\u2028", "a\\b", "\x00", "\U0001f680"]
)
positive = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False) | st.sampled_from(
    [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1.0, 0.1, 1e16, 1e-7]
)
non_negative = st.floats(min_value=0.0, allow_infinity=False).map(lambda x: x + 0.0)
# Prices and quantities are bounded (models.MAX_QUANTITY): both decoders refuse beyond it.
price = st.floats(min_value=0.0, exclude_min=True, max_value=MAX_QUANTITY) | st.sampled_from(
    [5e-324, 2.2250738585072014e-308, MAX_QUANTITY, 1.0, 0.1, 1e16, 1e-7]
)
quantity = st.floats(min_value=0.0, max_value=MAX_QUANTITY).map(lambda x: x + 0.0)
unit = st.floats(min_value=0.0, max_value=1.0).map(lambda x: x + 0.0)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
instants = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=LATEST.replace(tzinfo=None),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC))


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def market_price(draw: st.DrawFn) -> dict[str, Any]:
    base, quote = draw(tickers), draw(tickers)
    reserves = draw(optional(st.tuples(price, price)))
    return {
        "symbol": f"{base}/{quote}",
        "base": base,
        "quote": quote,
        "price": draw(price),
        "volume": draw(optional(quantity)),
        "source": draw(texts),
        "chain": draw(texts),
        "venue": draw(texts),
        "reserve_base": None if reserves is None else reserves[0],
        "reserve_quote": None if reserves is None else reserves[1],
        "liquidity_usd": draw(optional(quantity)),
        "ts": draw(instants),
    }


@st.composite
def defi_transaction(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "tx_hash": draw(texts),
        "user_id": draw(texts),
        "protocol": draw(texts),
        "chain": draw(texts),
        "action": draw(st.sampled_from(["deposit", "withdraw", "borrow", "repay", "swap"])),
        "asset": draw(tickers),
        "amount": draw(quantity),
        "ts": draw(instants),
    }


@st.composite
def market_analytics(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(instants)
    length = timedelta(milliseconds=draw(st.integers(0, 10**9)))
    return {
        "symbol": f"{draw(tickers)}/{draw(tickers)}",
        "window_start": start,
        "window_end": start + min(length, LATEST - start),
        "twap": draw(positive),
        "vwap": draw(optional(positive)),
        "volatility": draw(non_negative),
        "consolidated_price": draw(optional(positive)),
        "sources": draw(st.integers(0, 2**63 - 1)),
        "ticks": draw(st.integers(1, 2**63 - 1)),
    }


@st.composite
def risk_assessment(draw: st.DrawFn) -> dict[str, Any]:
    debt = draw(st.just(0.0) | positive)
    return {
        "user_id": draw(texts),
        "health_factor": None if debt == 0 else draw(non_negative),
        "ltv": draw(non_negative),
        "collateral_usd": draw(non_negative),
        "debt_usd": debt,
        "risk_score": draw(unit),
        "hhi": draw(unit),
        "var_95_1d_usd": draw(non_negative),
        "assessed_at": draw(instants),
    }


RECORDS = {
    "market.prices": market_price(),
    "defi.transactions": defi_transaction(),
    "market.analytics": market_analytics(),
    "risk.assessments": risk_assessment(),
}

# --- writing a record as JSON, in the producer's form or another one pydantic accepts -------------


def timestamp_spellings(value: datetime) -> st.SearchStrategy[str]:
    canonical = format_utc(value)
    plain = canonical[:19]
    ms = value.microsecond // 1000
    spellings = [
        canonical,
        f"{plain}.{ms:03d}".rstrip("0").rstrip(".") + "Z",  # .5Z, .12Z, Z
        f"{plain}.{ms:03d}+00:00",
        f"{plain}.{ms:03d}000Z",  # microseconds (zero: the same instant)
        plain.replace("T", " ") + "Z",
        canonical.replace("Z", "z"),
        f"{plain}.{ms:03d}-00:00",
    ]
    return st.sampled_from(spellings)


def float_spellings(value: float) -> st.SearchStrategy[str]:
    spellings = [repr(value), f"{value:.17g}", f"{value:.17e}", f"{value:.17E}"]
    if value.is_integer() and abs(value) < 1e300:
        spellings.append(str(int(value)))  # an integer token for a float field
    return st.sampled_from(spellings)


@st.composite
def fragment(draw: st.DrawFn, value: Any) -> bytes:
    """``value`` as a JSON fragment, in one of the spellings that decode to it."""
    if value is None:
        return b"null"
    if isinstance(value, datetime):
        return json.dumps(draw(timestamp_spellings(value))).encode()
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return draw(float_spellings(value)).encode()
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode()


def assemble(items: list[tuple[bytes, bytes]], separator: bytes = b",") -> bytes:
    return b"{" + separator.join(b'"' + k + b'":' + v for k, v in items) + b"}"


@st.composite
def spelled(draw: st.DrawFn, topic: str, record: dict[str, Any]) -> bytes:
    """Valid JSON of the record with the keys in any order and optional None fields left out."""
    fields = MODELS[topic].model_fields
    items = []
    for name, value in record.items():
        if value is None and not fields[name].is_required() and draw(st.booleans()):
            continue
        items.append((name.encode(), draw(fragment(value))))
    return assemble(draw(st.permutations(items)))


# --- bad values ----------------------------------------------------------------------------------

BAD_TOKENS = [
    b'"1.5"', b"1", b"1.0", b"1e3", b"true", b"false", b"null", b"[]", b'["x"]', b"{}",
    b'{"a":1}', b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400",
    b"-1e-400", b"-0", b"-0.0", b"0", b"0.0", b"-1", b"-5e-324", b"01", b"1.", b".5", b"+1",
    b"0x10", b"1e", b"--1", str(2**64).encode(), str(-(2**63) - 1).encode(), str(2**63).encode(),
    b"1" * 400, b"9" * 310, b"123456789012345678901234567890.5", b'""', b'" "', b'"x"',
    b'"' + b"A" * 33 + b'"', b'"ETH/"', b'"/USD"', b'"ETH USD"', b'"ETH/USD/X"', b'"\xc3\xa9TH"',
    b'"\\ud800"', b'"\\udc00x"', b'"\\ud83d\\ude80"', b'"\xff"', b'"\xed\xa0\x80"', b'"a\nb"',
    b'"a\x01b"', b'"\\x"', b'"unterminated', b'"deposit"', b'"Deposit"', b'"lend"',
    b'"2026-01-02T03:04:05.678Z"', b'"2026-01-02T03:04:05.678"', b'"2026-01-02T03:04:05+01:00"',
    b'"2026-01-02T03:04:05.123456Z"', b'"2026-01-02T03:04:05.1234567891Z"',
    b'"2026-02-29T00:00:00Z"', b'"2024-02-29T00:00:00.000Z"', b'"2026-13-01T00:00:00Z"',
    b'"2026-01-01T24:00:00Z"', b'"2026-01-01T23:59:60Z"', b'"0000-01-01T00:00:00Z"',
    b'"2026-01-01T00:00Z"', b'"2026-01-01"', b'"1767323045678"', b"1767323045678",
    b'"2026-01-01T00:00:00.Z"', b'"2026-01-01T00:00:00,5Z"', b'"\xef\xbc\x92026-01-01T00:00:00Z"',
    b'"9999-12-31T23:59:59.999Z"', b'"0001-01-01T00:00:00.000Z"', b'"1969-12-31T23:59:59.999Z"',
]  # fmt: skip
DIGITS = st.text("0123456789", min_size=1, max_size=2)


@st.composite
def odd_timestamp(draw: st.DrawFn) -> bytes:
    """Canonical-looking timestamps with any digits: the reader's cast must reject what pydantic
    rejects (month 13, day 31 of a 30-day month, ...)."""
    parts = [draw(st.text("0123456789", min_size=4, max_size=4))]
    parts += [draw(DIGITS).zfill(2) for _ in range(5)]
    y, mo, d, h, mi, s = parts
    fraction = draw(st.sampled_from(["", ".", ".0", ".12", ".999", ".1234"]))
    return f'"{y}-{mo}-{d}T{h}:{mi}:{s}{fraction}Z"'.encode()


@st.composite
def mutated(draw: st.DrawFn, record: dict[str, Any]) -> bytes | None:
    items = [(k.encode(), draw(fragment(v))) for k, v in record.items()]
    i = draw(st.integers(0, len(items) - 1))
    name = items[i][0]
    kind = draw(st.integers(0, 15))
    if kind == 0:
        return None  # a tombstone
    if kind == 1:
        items[i] = (name, draw(st.sampled_from(BAD_TOKENS)))
    elif kind == 2:
        items[i] = (name, draw(odd_timestamp()))
    elif kind == 3:
        del items[i]  # a missing key
    elif kind == 4:
        items.append((name, draw(st.sampled_from([*BAD_TOKENS[:12], items[i][1]]))))  # repeated
    elif kind == 5:
        items.append((draw(st.sampled_from([b"extra", b"Price", b"ts ", b""])), b"1"))
    elif kind == 6:
        escaped = name[:1] + b"\\u00" + f"{name[1]:02x}".encode() + name[2:]
        items[i] = (escaped, items[i][1])  # the same key, spelled with an escape
    elif kind == 7:
        items[i] = (name, items[i][1] + draw(st.sampled_from([b" ", b"\n", b"\r", b"\t"])))
    value = assemble(items, draw(st.sampled_from([b",", b",", b", ", b",\n", b" ,"])))
    if kind == 8:
        value = draw(st.sampled_from([b" ", b"\n", b"\t", b"\r", b"\xef\xbb\xbf", b"\x0c"])) + value
    elif kind == 9:
        suffix = [b" ", b"\n", b"\r", b"\r\n", b"x", b",", b"]", b"}", b" null", b"{}", b",{}"]
        value += draw(st.sampled_from([*suffix, value, b"," + value, b"\n" + value]))
    elif kind == 10:
        value = value[: draw(st.integers(0, len(value) - 1))]  # truncated
    elif kind == 11:
        value = draw(st.sampled_from([b"null", b"[]", b"1", b'""', b"", b" ", b"{}", b"[{}]"]))
    elif kind == 12:
        at = draw(st.integers(0, len(value) - 1))
        value = value[:at] + bytes([draw(st.integers(0, 255))]) + value[at + 1 :]
    elif kind == 13:
        value = b"[" + value + b"]"
    elif kind == 14:
        value = value.replace(b":", b": ", 1).replace(b",", b" ,", 1)  # valid, spaced out
    return value


@st.composite
def batches(draw: st.DrawFn, topic: str) -> list[bytes | None]:
    records = draw(st.lists(RECORDS[topic], max_size=12))
    how = draw(st.sampled_from(["encoded", "spelled", "mixed"]))
    values: list[bytes | None] = []
    for record in records:
        if how == "encoded":
            values.append(encode(MODELS[topic](**record))[1])
        elif how == "spelled" or draw(st.booleans()):
            values.append(draw(spelled(topic, record)))
        else:
            values.append(draw(mutated(record)))
    return values


# --- the reference and the comparison -----------------------------------------------------------


def reference(topic: str, values: list[bytes | None]):
    """decode_batch's answer, with integers beyond Int64 as failures (the documented difference)."""
    messages, failures = decode_batch(topic, values)
    failed = {index for index, _ in failures}
    accepted = [index for index in range(len(values)) if index not in failed]
    reasons = [(index, str(error)) for index, error in failures]
    int_fields = [n for n, f in MODELS[topic].model_fields.items() if f.annotation is int]
    kept_indices, kept = [], []
    for index, message in zip(accepted, messages, strict=True):
        wide = [n for n in int_fields if not INT64[0] <= getattr(message, n) <= INT64[1]]
        if wide:
            reasons.append((index, f"{topic}: field '{wide[0]}': {INT64_REASON}"))
        else:
            kept_indices.append(index)
            kept.append(message)
    return kept_indices, kept, sorted(reasons)


def same(column_value: Any, model_value: Any) -> bool:
    if isinstance(model_value, float):
        return struct.pack("<d", column_value) == struct.pack("<d", model_value)  # -0.0 too
    if isinstance(model_value, datetime):
        return (
            isinstance(column_value, datetime)
            and column_value.utcoffset() == timedelta(0)
            and column_value == model_value
        )
    return type(column_value) is type(model_value) and column_value == model_value


def check(topic: str, values: list[bytes | None]):
    indices, messages, reasons = reference(topic, values)
    batch = decode_columns(topic, values)
    # Shown by pytest --hypothesis-show-statistics: how often each path ran.
    event("fast path" if batch.fast else "fallback, with failures" if reasons else "fallback, none")
    assert [(index, str(error)) for index, error in batch.failures] == reasons
    assert batch.indices.tolist() == indices
    assert batch.table.schema == arrow_schema(topic)
    assert batch.table.num_rows == len(messages)
    for row, message in zip(batch.table.to_pylist(), messages, strict=True):
        for name, value in row.items():
            assert same(value, getattr(message, name)), (name, value, getattr(message, name))
    assert batch.messages() == messages
    # Identical either way: the fallback builds the very table the fast path built.
    if batch.fast:
        slow = decode_columns(topic, [*values, None])
        assert slow.table.equals(batch.table)
        tombstone = (len(values), f"{topic}: no value (a tombstone)")
        assert [(i, str(e)) for i, e in slow.failures] == [tombstone]
    return batch


@SETTINGS
@given(st.sampled_from(TOPICS).flatmap(lambda t: st.tuples(st.just(t), batches(t))))
def test_columns_accept_exactly_what_the_models_accept(case):
    topic, values = case
    check(topic, values)


@SETTINGS
@given(st.sampled_from(TOPICS).flatmap(lambda t: st.tuples(st.just(t), st.lists(RECORDS[t]))))
def test_what_producers_write_takes_the_fast_path(case):
    topic, records = case
    values = [encode(MODELS[topic](**record))[1] for record in records]
    batch = check(topic, values)
    assert batch.fast
    assert batch.failures == []
    assert batch.table.num_rows == len(records)


@SETTINGS
@given(st.lists(st.sampled_from(BAD_TOKENS) | odd_timestamp(), min_size=1, max_size=6))
def test_bad_tokens_in_every_field_of_a_price(tokens):
    # Every token in every field of a valid tick, a batch per field: the reasons match.
    tick = encode(MODELS["market.prices"](**_TICK))[1]
    for name in MODELS["market.prices"].model_fields:
        start = tick.index(b'"' + name.encode() + b'":') + len(name) + 3
        end = _value_end(tick, start)
        check("market.prices", [tick, *(tick[:start] + t + tick[end:] for t in tokens), tick])


_TICK = {
    "symbol": "ETH/USD",
    "base": "ETH",
    "quote": "USD",
    "price": 2000.5,
    "volume": 1.25,
    "source": "binance",
    "chain": "offchain",
    "venue": "binance",
    "reserve_base": 10.0,
    "reserve_quote": 20005.0,
    "liquidity_usd": 40010.0,
    "ts": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
}


def _value_end(value: bytes, start: int) -> int:
    """Where the JSON scalar starting at ``start`` of a compact object ends."""
    if value[start : start + 1] == b'"':
        return value.index(b'"', start + 1) + 1
    return min(i for i in (value.find(b",", start), value.find(b"}", start)) if i >= 0)


@st.composite
def near_canonical(draw: st.DrawFn) -> str:
    """A producer's timestamp with one character replaced by any ASCII one."""
    text = format_utc(draw(instants))
    at = draw(st.integers(0, len(text) - 1))
    return text[:at] + draw(st.characters(max_codepoint=127)) + text[at + 1 :]


@SETTINGS
@given(
    st.lists(
        st.text(alphabet="0123456789-T:.Zzt +/", min_size=24, max_size=24) | near_canonical(),
        min_size=1,
        max_size=8,
    )
)
def test_the_producer_form_check_is_the_canonical_pattern_on_24_characters(strings):
    from ys_platform.catalog import columnar

    column = pa.array(strings)
    pattern = pc.match_substring_regex(column, columnar._CANONICAL_UTC).to_pylist()
    assert columnar._producer_form(column) == all(pattern)
    assert columnar._producer_form(column.slice(1)) == all(pattern[1:])
