"""Poison records at volume: varied invalid records of every catalog input topic, reproducibly.

``poison_records(topic, count, seed, valid)`` mutates valid messages of the topic (``valid``,
e.g. from the simulator) into ``count`` invalid records, cycling through the :data:`KINDS` that
apply to the topic, each drawn from a ``random.Random(seed, topic)`` so a run gives the same bytes
every time. Each record says its kind, so a test can count them per kind.

The kinds, and how each is made:

* ``malformed_json`` — a valid value cut short, a byte flipped to ``{`` or ``"``, trailing
  commas, a top-level array / ``null`` / number, two objects in one value, a byte order mark,
  invalid UTF-8 inside a string, an empty value;
* ``wrong_type`` — one field given a value of another JSON type (a string for a number, a
  number for a string, a list, an object, a boolean, null where no null is allowed);
* ``non_finite`` — a float field written as the ``NaN``, ``Infinity`` or ``-Infinity`` token,
  or as ``1e400`` (infinite as a double);
* ``not_positive`` — a price (or another field that must be positive or non-negative) set to
  zero or a negative number; for a bounded score, below its bound;
* ``huge_number`` — an integer beyond 64 bits, or a float at the edge of the double range
  (``1e300``…``1.7976931348623157e308``) where the catalog bounds the field;
* ``unknown_symbol`` — a symbol or ticker the catalog's pattern refuses (``ETH-USD``, ``ETH``,
  ``ETH/USD/X``, an empty or 40-character one, non-ASCII letters, spaces), or a pair whose
  symbol is not its ``base/quote``;
* ``far_event_time`` — the event-time field far in the past (years 1, 1000, 1970, 2000) or
  the future (a day, ten years, year 9999 ahead);
* ``oversized`` — a valid value padded (in a free-text field, or with whitespace) beyond the
  catalog's largest value, up to what the broker takes;
* ``wrong_schema_version`` — a valid value with a ``schema-version`` header the model does not
  have (``2``, ``0``, ``-1``, ``1.0``, empty, text, non-UTF-8);
* ``non_utf8_key`` — a valid value keyed by bytes that are not UTF-8 (a lone continuation byte,
  an overlong ``/``, an encoded surrogate, ``\\xff``, a truncated sequence);
* ``tombstone`` — no value, keyed or not, on a topic whose consumers allow none (not
  ``defi.protocols``, compacted, where a tombstone deletes its key).
"""

from __future__ import annotations

import random
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel

from ys_platform.catalog.codec import encode, timestamp_ms
from ys_platform.catalog.models import MODELS, Message
from ys_platform.catalog.topics import topic as topic_spec

KINDS = (
    "malformed_json",
    "wrong_type",
    "non_finite",
    "not_positive",
    "huge_number",
    "unknown_symbol",
    "far_event_time",
    "oversized",
    "wrong_schema_version",
    "non_utf8_key",
    "tombstone",
)

Headers = list[tuple[str, bytes]]

REASONS = {
    "malformed_json": r"Invalid JSON|Input should be an object|Unable to extract tag",
    "wrong_type": r"Input should be",
    "non_finite": r"Input should be a finite number",
    "not_positive": r"Input should be greater than (or equal to )?-?[0-9]",
    "huge_number": r"Input should be (less|greater) than (or equal to )?-?[0-9]",
    "unknown_symbol": r"String should match pattern|does not match base/quote",
    "far_event_time": r"event time is (before 2009-01-03|[0-9,]+ s ahead of this consumer's clock)",
    "oversized": r"value of [0-9,]+ bytes is over the catalog's limit of 262,144",
    "wrong_schema_version": r"header 'schema-version' is .*, not this topic's version 1",
    "non_utf8_key": r"record key is not UTF-8 text",
    "tombstone": r"no value \(a tombstone\)",
}
"""What the dead-letter reason of each kind says (a regular expression)."""


@dataclass(frozen=True)
class PoisonRecord:
    """One invalid record, as a producer sends it."""

    topic: str
    kind: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int


# --- what a model's fields are ------------------------------------------------------------------


def _constraints(model: type[BaseModel], name: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for item in model.model_fields[name].metadata:
        for bound in ("gt", "ge", "lt", "le"):
            value = getattr(item, bound, None)
            if value is not None:
                found[bound] = value
    return found


def _annotation_text(model: type[BaseModel], name: str) -> str:
    return repr(model.model_fields[name].annotation) + repr(model.model_fields[name].metadata)


def _has_pattern(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields[name]
    items = list(field.metadata)
    for arg in typing.get_args(field.annotation):
        items += list(getattr(arg, "__metadata__", ()))
    return any(getattr(item, "pattern", None) for item in items)


@dataclass(frozen=True)
class _Fields:
    """The fields of one message (a JSON object) by what can be done to them."""

    floats: tuple[str, ...]
    ints: tuple[str, ...]
    strings: tuple[str, ...]
    bounded: tuple[tuple[str, dict[str, float]], ...]
    """Numeric fields with a lower bound (gt/ge), and their bounds."""
    upper: tuple[tuple[str, dict[str, float]], ...]
    """Numeric fields with an upper bound (lt/le)."""
    tickers: tuple[str, ...]
    """Fields holding a symbol (BASE/QUOTE) or a ticker, checked by the catalog's pattern."""
    not_null: tuple[str, ...]
    free_text: tuple[str, ...]
    """Strings without a pattern, where padding keeps a value valid but large."""


def _fields_of(model: type[BaseModel], document: dict[str, Any]) -> _Fields:
    shape = (model, tuple((k, type(v)) for k, v in document.items()))
    found = _FIELDS.get(shape)
    if found is None:
        found = _FIELDS[shape] = _derive_fields(model, document)
    return found


_FIELDS: dict[Any, _Fields] = {}


def _derive_fields(model: type[BaseModel], document: dict[str, Any]) -> _Fields:
    floats, ints, strings, bounded, upper, tickers, not_null, free = ([] for _ in range(8))
    for name, field in model.model_fields.items():
        if name not in document or name == "type":
            continue
        text = _annotation_text(model, name)
        value = document[name]
        if "None" not in repr(field.annotation):
            not_null.append(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, float) or "float" in text:
            floats.append(name)
        elif isinstance(value, int):
            ints.append(name)
        elif isinstance(value, str) and "datetime" not in text.lower():
            strings.append(name)
            if _has_pattern(model, name):
                tickers.append(name)
            elif "min_length" not in text and "Literal" not in text:
                free.append(name)
        limits = _constraints(model, name)
        if "gt" in limits or "ge" in limits:
            bounded.append((name, limits))
        if "lt" in limits or "le" in limits:
            upper.append((name, limits))
    return _Fields(
        *(tuple(x) for x in (floats, ints, strings, bounded, upper, tickers, not_null, free))
    )  # type: ignore[arg-type]


# --- the builders, one per kind ------------------------------------------------------------------


def _dumps(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)


_MARKER = "\x00MARK\x00"
_MARKER_JSON = orjson.dumps(_MARKER)


def _raw(document: dict[str, Any], field: str, token: str) -> bytes:
    """The document with ``field``'s value written as the raw JSON text ``token``."""
    return orjson.dumps({**document, field: _MARKER}).replace(_MARKER_JSON, token.encode())


def _malformed(rng: random.Random, value: bytes) -> bytes:
    choice = rng.randrange(11)
    if choice == 0:
        return value[: rng.randrange(1, len(value) - 1)]
    if choice == 1:  # a structural character lost or doubled
        old, new = rng.choice([(b'":', b'"'), (b",", b",,"), (b'":', b'"::'), (b"}", b"")])
        return value.replace(old, new, 1) if old != b"}" else value[:-1]
    if choice == 2:
        return value[:-1] + b",}"
    if choice == 3:
        return b"[" + value + b"]"
    if choice == 4:
        return rng.choice([b"null", b"true", b"42", b'"text"', b"[]"])
    if choice == 5:
        return value + rng.choice([b",", b" ", b"\n"]) + value
    if choice == 6:
        return b"\xef\xbb\xbf" + value
    if choice == 7:
        i = value.index(b'":"') + 3  # inside the first string value
        return value[:i] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + value[i:]
    if choice == 8:
        return b""
    if choice == 9:
        return value.replace(b'"', b"'", rng.randrange(1, 4))
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))


_WRONG_FOR_NUMBER = ('"1.5"', '"abc"', "[1]", '{"v":1}', "true", '""')
_WRONG_FOR_STRING = ("42", "1.5", '["a"]', '{"a":"b"}', "false")


def _wrong_type(rng: random.Random, document: dict[str, Any], fields: _Fields) -> bytes | None:
    options: list[tuple[str, str]] = []
    for name in fields.floats + fields.ints:
        options += [(name, t) for t in _WRONG_FOR_NUMBER]
    for name in fields.strings:
        options += [(name, t) for t in _WRONG_FOR_STRING]
    options += [(name, "null") for name in fields.not_null]
    if not options:
        return None
    name, token = rng.choice(options)
    return _raw(document, name, token)


def _non_finite(rng: random.Random, document: dict[str, Any], fields: _Fields) -> bytes | None:
    if not fields.floats:
        return None
    token = rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
    return _raw(document, rng.choice(fields.floats), token)


def _not_positive(rng: random.Random, document: dict[str, Any], fields: _Fields) -> bytes | None:
    if not fields.bounded:
        return None
    name, limits = rng.choice(fields.bounded)
    low = limits.get("gt", limits.get("ge"))
    assert low is not None
    if "gt" in limits and rng.random() < 0.4:
        value: float = low  # exactly the excluded bound: zero for a price
    else:
        value = low - rng.choice([1e-9, 0.5, 1.0, 3000.0, 1e12])
    if name in fields.ints:
        value = int(low) - rng.randrange(1, 10**6) if value != low else int(low)
        return _raw(document, name, str(value))
    return _raw(document, name, repr(float(value)) if value else rng.choice(["0", "0.0", "-0.0"]))


def _huge(rng: random.Random, document: dict[str, Any], fields: _Fields) -> bytes | None:
    options: list[tuple[str, str]] = []
    for name in fields.ints:
        options += [(name, str(rng.choice([2**63, 2**64 + 7, 2**70, -(2**63) - 1, 10**30])))]
    for name, limits in fields.upper:
        if name in fields.floats:
            high = limits.get("lt", limits.get("le"))
            options.append((name, repr(float(high) * rng.choice([1.5, 1e3, 1e100]))))
    if not options:
        return None
    return _raw(document, *rng.choice(options))


_BAD_TICKERS = (
    "ETH-USD!", "ETH USD", "", "-ETH", "Ξ", "ETH\u00e9", "X" * 40, "ETH/", "/USD", "ETH/USD/X",
    "et h", "ETH\n", "💰",
)  # fmt: skip
_BAD_SYMBOLS = ("ETH-USD", "ETH", "ETH/USD/X", "", "ETH/", "/USD", "eth usd", "Ξ/USD", "A" * 40)


def _unknown_symbol(rng: random.Random, document: dict[str, Any], fields: _Fields) -> bytes | None:
    if not fields.tickers:
        return None
    name = rng.choice(fields.tickers)
    if name == "symbol" and "base" in document and rng.random() < 0.3:
        # A well-formed symbol that is not the pair's base/quote.
        return _dumps({**document, "symbol": f"{document['base']}X/{document['quote']}"})
    bad = _BAD_SYMBOLS if "/" in str(document[name]) else _BAD_TICKERS
    return _dumps({**document, name: rng.choice(bad)})


_FAR_EVENT_TIMES = (
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1000, 6, 1, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
)


def _far_event_time(
    rng: random.Random, document: dict[str, Any], model: type[Message], now: datetime
) -> bytes:
    field = model.EVENT_TIME_FIELD
    choice = rng.randrange(len(_FAR_EVENT_TIMES) + 2)
    if choice < len(_FAR_EVENT_TIMES):
        moment = _FAR_EVENT_TIMES[choice]
    else:
        moment = now + timedelta(days=rng.choice([1, 30, 3650]), seconds=rng.randrange(3600))
    changed = {**document, field: moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    # Fields that must follow the event time move with it, so only the event time is wrong.
    if "window_start" in changed and field == "window_end":
        changed["window_start"] = changed[field]
    if "expires_at" in changed:
        changed["expires_at"] = changed[field]
    return _dumps(changed)


def _oversized(rng: random.Random, document: dict[str, Any], fields: _Fields, size: int) -> bytes:
    if fields.free_text:
        name = rng.choice(fields.free_text)
        pad = size - len(_dumps(document))
        return _dumps({**document, name: str(document[name]) + "x" * max(pad, 1)})
    value = _dumps(document)
    return value[:-1] + b" " * (size - len(value)) + b"}"


_WRONG_VERSIONS = (b"2", b"0", b"-1", b"1.0", b"", b"v1", b"\xff", b"01", b"1 ", b"999")
_NON_UTF8_KEYS = (b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff\xfe", b"ETH\xe2\x82", b"\xf8\x88")


# --- the generator -----------------------------------------------------------------------------

LARGEST_VALUE_BYTES = 999_000
"""Where oversized values stop: what a producer with librdkafka's defaults sends
(``message.max.bytes`` 1,000,000), less room for the key, headers and record overhead."""


def applicable_kinds(topic_name: str) -> tuple[str, ...]:
    """The kinds that are poison on ``topic_name`` (a tombstone is a delete on a compacted
    topic, and a model without tickers has no symbol to get wrong)."""
    model = MODELS[topic_name]
    kinds = list(KINDS)
    if "compact" in topic_spec(topic_name).configs.get("cleanup.policy", ""):
        kinds.remove("tombstone")
    if topic_name == "crosschain.events":
        return tuple(kinds)  # a bridge quote has an asset ticker; gas prices have floats
    if not any(_has_pattern(model, n) for n in model.model_fields) and (
        topic_name != "users.portfolios"
    ):
        kinds.remove("unknown_symbol")
    return tuple(kinds)


def poison_records(
    topic_name: str,
    count: int,
    valid: Sequence[Message],
    *,
    seed: int,
    now: datetime,
    limit_bytes: int,
    oversized_every: int = 500,
) -> list[PoisonRecord]:
    """``count`` invalid records of ``topic_name``, made from the messages of ``valid``.

    The applicable kinds take turns, except ``oversized``, one record in ``oversized_every``
    (so 10,000 records stay tens of megabytes), sized from just above ``limit_bytes`` (the
    catalog's largest value) to :data:`LARGEST_VALUE_BYTES`. ``now`` anchors the future event times.
    """
    rng = random.Random(f"{seed}:{topic_name}")
    kinds = [k for k in applicable_kinds(topic_name) if k != "oversized"]
    bases = [_Base.of(m) for m in valid]
    out: list[PoisonRecord] = []
    turn = 0
    while len(out) < count:
        base = bases[rng.randrange(len(bases))]
        if len(out) % oversized_every == oversized_every - 1:
            kind = "oversized"
        else:
            kind = kinds[turn % len(kinds)]
            turn += 1
        record = _build(rng, kind, topic_name, base, now, limit_bytes)
        if record is not None:
            out.append(record)
    return out


@dataclass(frozen=True)
class _Base:
    """A valid message as the generator starts from it, worked out once."""

    message: Message
    key: bytes | None
    value: bytes
    headers: Headers
    event_ms: int
    document: dict[str, Any]

    @classmethod
    def of(cls, message: Message) -> _Base:
        key, value, headers = encode(message)
        return cls(message, key, value, headers, timestamp_ms(message), orjson.loads(value))


def _build(
    rng: random.Random,
    kind: str,
    topic_name: str,
    base: _Base,
    now: datetime,
    limit_bytes: int,
) -> PoisonRecord | None:
    message, key, value, headers = base.message, base.key, base.value, base.headers
    event_ms = base.event_ms
    model = type(message)
    document = base.document
    target: BaseModel = message
    path: list[Any] = []
    if topic_name == "users.portfolios" and document["positions"] and kind in _NESTED_KINDS:
        # The portfolio's own fields are ids and a timestamp: numbers and tickers are in its
        # positions, so those kinds reach into one of them.
        index = rng.randrange(len(document["positions"]))
        path = ["positions", index]
        target = message.positions[index]  # type: ignore[attr-defined]
        inner = document["positions"][index]
    else:
        inner = document
    fields = _fields_of(type(target), inner)
    new_value: bytes | None = value
    new_key, new_headers = key, headers
    if kind == "malformed_json":
        new_value = _malformed(rng, value)
    elif kind == "far_event_time":
        new_value = _far_event_time(rng, document, model, now)
    elif kind == "oversized":
        size = rng.choice(
            [limit_bytes + 1, limit_bytes + 4096, 2 * limit_bytes, LARGEST_VALUE_BYTES]
        )
        new_value = _oversized(rng, document, _fields_of(model, document), size)
    elif kind == "wrong_schema_version":
        version = rng.choice(_WRONG_VERSIONS)
        new_headers = [(n, version if n == "schema-version" else v) for n, v in headers]
    elif kind == "non_utf8_key":
        bad = rng.choice(_NON_UTF8_KEYS)
        new_key = (key or b"")[: rng.randrange(len(key or b"") + 1)] + bad
    elif kind == "tombstone":
        new_value = None
        new_key = key if rng.random() < 0.7 else None
    else:
        builder = _MUTATORS[kind]
        mutated = builder(rng, inner, fields)
        if mutated is None:
            return None
        new_value = _splice(document, path[1], mutated) if path else mutated
    return PoisonRecord(topic_name, kind, new_key, new_value, list(new_headers), event_ms)


_NESTED_KINDS = frozenset(
    {"wrong_type", "non_finite", "not_positive", "huge_number", "unknown_symbol"}
)
_MUTATORS = {
    "wrong_type": _wrong_type,
    "non_finite": _non_finite,
    "not_positive": _not_positive,
    "huge_number": _huge,
    "unknown_symbol": _unknown_symbol,
}


def _splice(document: dict[str, Any], index: int, position: bytes) -> bytes:
    """The portfolio with position ``index`` replaced by the raw JSON ``position``."""
    parts = [
        position if i == index else orjson.dumps(p) for i, p in enumerate(document["positions"])
    ]
    return _raw(document, "positions", (b"[" + b",".join(parts) + b"]").decode())


def interleave(valid: Sequence[Any], poison: Sequence[PoisonRecord], seed: int) -> Iterator[Any]:
    """Valid records and poison mixed in a seeded order (each keeps its own relative order)."""
    rng = random.Random(seed)
    i = j = 0
    while i < len(valid) or j < len(poison):
        left_valid, left_poison = len(valid) - i, len(poison) - j
        if rng.random() * (left_valid + left_poison) < left_valid:
            yield valid[i]
            i += 1
        else:
            yield poison[j]
            j += 1


# --- valid records ---------------------------------------------------------------------------


def valid_messages(
    topics: Sequence[str], start: datetime, *, seed: int, seconds: float
) -> dict[str, list[Message]]:
    """Valid messages of each of ``topics``: the simulator's (prices, cross-chain events,
    transactions, portfolios, protocols and tokens) over ``seconds`` of event time from ``start``,
    and, for the topics it does not write (analytics, sentiment, yields, risk assessments,
    arbitrage), messages built from its prices and users, a few a second."""
    from ys_platform.sources.simulator import MarketSimulator

    simulator = MarketSimulator(seed, symbols=8, start_ms=int(start.timestamp() * 1000), users=20)
    out: dict[str, list[Message]] = {name: [] for name in topics}
    for message in [*simulator.reference_messages(), *simulator.events(seconds, 400.0)]:
        name = _TOPIC_OF[type(message).__name__]
        if name in out:
            out[name].append(message)
    rng = random.Random(seed)
    prices = simulator.mid_prices()
    symbols = sorted(prices)
    users = list(simulator.users)
    for second in range(int(seconds)):
        ts = start + timedelta(seconds=second, milliseconds=rng.randrange(1000))
        asset = symbols[second % len(symbols)]
        price = prices[asset] * (1 + rng.uniform(-0.01, 0.01))
        for name, build in _BUILDERS.items():
            if name in out:
                out[name].append(build(rng, ts, asset, price, users[second % len(users)], second))
    return out


_TOPIC_OF = {model.__name__: name for name, model in MODELS.items()} | {
    "BridgeQuote": "crosschain.events",
    "GasPrice": "crosschain.events",
}


def _analytics(
    rng: random.Random, ts: datetime, asset: str, price: float, user: str, n: int
) -> Message:
    from ys_platform.catalog.models import MarketAnalytics

    return MarketAnalytics(
        symbol=f"{asset}/USD",
        window_start=ts - timedelta(minutes=1),
        window_end=ts,
        twap=price,
        vwap=price * 1.001,
        volatility=rng.uniform(0, 0.01),
        consolidated_price=price,
        sources=3,
        ticks=rng.randrange(1, 500),
    )


def _sentiment(
    rng: random.Random, ts: datetime, asset: str, price: float, user: str, n: int
) -> Message:
    from ys_platform.catalog.models import MarketSentiment

    mood = rng.choice(["bullish", "bearish", "quiet"])
    return MarketSentiment(
        source_id=f"post-{n}",
        source=rng.choice(["x", "reddit", "news"]),
        symbol=asset,
        text=f"{asset} looks {mood} at {price:.2f} USD",
        score=rng.uniform(-1, 1),
        ts=ts,
    )


def _yields(
    rng: random.Random, ts: datetime, asset: str, price: float, user: str, n: int
) -> Message:
    from ys_platform.catalog.models import YieldStrategy

    return YieldStrategy(
        strategy_id=f"{asset.lower()}-vault-{n % 5}",
        protocol=rng.choice(["aave", "compound", "yearn"]),
        chain="ethereum",
        asset=asset,
        apy=rng.uniform(0, 25),
        tvl_usd=rng.uniform(1e5, 1e9),
        ts=ts,
    )


def _assessment(
    rng: random.Random, ts: datetime, asset: str, price: float, user: str, n: int
) -> Message:
    from ys_platform.catalog.models import RiskAssessment

    collateral = rng.uniform(1e3, 1e6)
    debt = collateral * rng.uniform(0, 0.8)
    return RiskAssessment(
        user_id=user,
        health_factor=collateral * 0.8 / debt if debt else None,
        ltv=debt / collateral,
        collateral_usd=collateral,
        debt_usd=debt,
        risk_score=rng.random(),
        hhi=rng.random(),
        var_95_1d_usd=collateral * 0.05,
        assessed_at=ts,
    )


def _arbitrage(
    rng: random.Random, ts: datetime, asset: str, price: float, user: str, n: int
) -> Message:
    from ys_platform.catalog.models import ArbitrageOpportunity

    sell = price * (1 + rng.uniform(0.001, 0.02))
    return ArbitrageOpportunity(
        id=f"arb-{n}",
        symbol=f"{asset}/USD",
        buy_chain="ethereum",
        buy_venue="uniswap",
        buy_price=price,
        sell_chain="arbitrum",
        sell_venue="camelot",
        sell_price=sell,
        spread_bps=(sell / price - 1) * 1e4,
        trade_size=rng.uniform(0.1, 10),
        expected_profit_usd=rng.uniform(-5, 50),
        score=rng.random(),
        detected_at=ts,
        expires_at=ts + timedelta(seconds=30),
    )


_BUILDERS = {
    "market.analytics": _analytics,
    "market.sentiment": _sentiment,
    "defi.yields": _yields,
    "risk.assessments": _assessment,
    "crosschain.arbitrage": _arbitrage,
}
