"""Columnar decoding: a partition's batch of record values in one call, Arrow columns out.

``decode_columns(topic, values)`` is ``codec.decode_batch`` for callers that work on columns (the
window kernel, the ClickHouse sink): a :class:`ColumnBatch` holding an Arrow table of the good
records in input order, their indices in ``values``, and the failures.

**The guarantee**: for a columnar topic (:func:`is_columnar`), ``decode_columns`` accepts exactly
the values ``decode_batch`` accepts, fails the others with the same :class:`DecodeError` (same
text, same index), and each table row holds the values of the model ``decode_batch`` gives
(timestamps as ``timestamp('ms', 'UTC')``, ``Literal`` and enum fields as their string values).
The pydantic models stay the contract; this module only finds a faster way to the same answer.
One exception, by construction: integer columns are Int64, so an ``int`` field without bounds
inside Int64 that receives a larger integer (which pydantic accepts) fails here with a reason
saying so; ClickHouse's integer columns could not store it either.

How:

- **Fast path**: the values joined as newline-delimited JSON and parsed by pyarrow's C++ reader
  straight into columns with an explicit schema (unknown fields are an error), then every field
  constraint and model validator checked by vectorised ``pyarrow.compute`` kernels. No Python
  runs per record.
- **Fallback**: at the first doubt (a tombstone, a newline inside a value, a value not starting
  with ``{``, invalid UTF-8, a parse error, a failed check, a timestamp not in the canonical form
  ``YYYY-MM-DDTHH:MM:SS[.f{1,3}]Z``, a negative zero, a null the columns cannot tell from a
  missing key, a value over ``codec.MAX_VALUE_BYTES``) the whole batch goes through
  ``decode_batch``, the per-record pydantic validator:
  its models become the same table (column-wise) and its failures are the failures. The fast
  path only decides "all good"; every reason comes from pydantic.

Where pydantic's strict JSON and Arrow's reader differ, and what the fast path does (each case
is in tests/unit/test_columnar*.py):

- an integer token for a float field: both accept it, correctly rounded (``2**70``, 30 digits);
  a float token (``1.0``, ``1e3``) for an int field: both reject it; an integer beyond Int64:
  pydantic accepts it, Arrow fails the batch (→ fallback, and the exception above);
- ``-0`` for a float field: pydantic reads 0.0, Arrow -0.0; ``-0.0``: both -0.0 → any negative
  zero falls back. ``1e400``: pydantic "finite number" error, Arrow a parse error (→ fallback);
  ``NaN``/``Infinity`` tokens parse in Arrow → a finiteness check; ``true`` for a number,
  numbers for strings, strings for numbers: both reject;
- a repeated key: pydantic keeps the last, Arrow fails (→ fallback); invalid UTF-8, a byte
  order mark, a top-level ``null`` (a row of nulls to Arrow, and a crash of pyarrow 26 when it
  comes first), two objects on one line (two rows): pydantic rejects, Arrow accepts → the
  buffer and row checks; a missing key of an ``X | None`` field without default: pydantic
  rejects, Arrow reads null → the key is counted;
- timestamps: Arrow's cast reads year 0 and other forms; only the canonical form is cast, and
  year 0 is checked.

Measured (2 cores shared with other work, 100k ``market.prices`` values of ~262 bytes from
``MarketSimulator(seed=1).encoded_price_ticks``, median of 9 interleaved runs, ``python
bench/columnar_decode.py --repeats 9``), µs per value, wall (CPU): the fast path 2.89 (2.76),
with ``threads=True`` 2.93 (2.86) — the second core was busy — against ``decode_batch`` 5.78
(5.41): 2.0× faster, and the table comes with it. A fallback batch costs 9.23 (8.84): pydantic
plus the column build. Of the fast path, the JSON reader takes ~1.9, the checks ~0.3, joining
and the buffer checks ~0.2. msgspec was measured too, in the same interleaved run: decoding the
joined array into Structs 1.24 CPU, but pulling the columns out of them in Python brings it to
3.05 with no check done, against 2.62 for this whole fast path (orjson.loads per value: 1.84,
before any column).

The Arrow schema of a topic is derived from its model's compiled pydantic core schema (what
``validate_json`` runs), so every constraint the validator checks is seen: ``str`` → string
(``pattern``, ``min_length``, ``max_length``), ``float`` → float64 (``gt``/``ge``/``lt``/``le``,
finite), ``int`` → int64, ``bool``, ``UtcDatetime`` → ``timestamp('ms', tz='UTC')``, ``X | None``
→ nullable, ``Literal``/``str`` enums → string with a membership check. A topic whose model is
not flat (a union, tuples, dicts, nested models) is simply not columnar: callers use
``decode_batch``. A flat model with anything the derivation does not understand — a model or
field validator without a vectorised equivalent in :data:`_VALIDATOR_CHECKS`, an unknown
constraint — raises :class:`ColumnarSchemaError` at first use, so nothing is skipped silently.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pydantic import AfterValidator, BaseModel

from ys_platform.catalog.codec import MAX_VALUE_BYTES, DecodeError, decode_batch
from ys_platform.catalog.models import (
    MODELS,
    VALUE_TYPES,
    ArbitrageOpportunity,
    MarketAnalytics,
    MarketPrice,
    Message,
    RiskAssessment,
    UtcDatetime,
)
from ys_platform.catalog.topics import topic as topic_spec

__all__ = [
    "ColumnBatch",
    "ColumnarSchemaError",
    "arrow_schema",
    "decode_columns",
    "is_columnar",
]

TIMESTAMP = pa.timestamp("ms", tz="UTC")

# pyarrow's JSON reader. By default on the calling thread: the consumer's other core runs
# librdkafka (and, locally, the broker). With threads it parses blocks in parallel, so smaller
# blocks. Block sizes from 1 to 32 MB measured within noise on 100k values (26 MB, 1.8-2.2 CPU
# µs/value on a shared machine). A value larger than a block is a parse error, so such a batch
# takes the fallback.
_READ_OPTIONS = {
    False: pj.ReadOptions(use_threads=False, block_size=8 << 20),
    True: pj.ReadOptions(use_threads=True, block_size=1 << 20),
}

# The wire form of every timestamp (models.format_utc writes three digits). Anything else —
# offsets, a space for the T, more digits (pydantic truncates them), a lower-case z — is left to
# pydantic; Arrow's cast then rejects what the pattern lets through but no calendar has
# (month 13, February 30, hour 24, second 60), and a check the year 0 that Arrow's has.
_CANONICAL_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,3})?Z$"

# 2026-01-02T03:04:05.678Z: digits and separators by position.
_PRODUCER_WIDTH = 24
_PRODUCER_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22])
_PRODUCER_SEPARATORS = np.array([4, 7, 10, 13, 16, 19, 23])
_PRODUCER_SEPARATOR_CHARS = np.frombuffer(b"--T::.Z", np.uint8)
_ZERO = np.uint8(ord("0"))

_NEWLINE, _BRACE = ord("\n"), ord("{")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT64_REASON = (
    f"Input should be between {_INT64_MIN} and {_INT64_MAX} (the range of an Int64 column)"
)

_YEAR_ONE = pa.scalar(datetime(1, 1, 1, tzinfo=UTC), TIMESTAMP)

# The models' UTC normalisation (an AfterValidator of UtcDatetime): on a canonical timestamp it
# returns the value unchanged, so the fast path needs nothing for it.
_UTC_MILLIS = next(m.func for m in UtcDatetime.__metadata__ if isinstance(m, AfterValidator))


class ColumnarSchemaError(TypeError):
    """A flat model holds something without a vectorised equivalent here (a validator, a
    constraint): decoding it in columns could accept what the model rejects."""


# --- the vectorised equivalents of the models' validators -------------------------------------

Mask = pa.Array | pa.ChunkedArray
ValidatorCheck = Callable[[pa.Table], Mask]
"""A model's validator as a vectorised check: the table of field-valid rows (timestamps already
``timestamp('ms', 'UTC')``) → a boolean mask, True where the validator accepts the row."""


def _market_price_consistent(table: pa.Table) -> Mask:
    pair = pc.binary_join_element_wise(table["base"], table["quote"], "/")
    same_pair = pc.equal(table["symbol"], pair)
    reserves = pc.equal(pc.is_null(table["reserve_base"]), pc.is_null(table["reserve_quote"]))
    return pc.and_(same_pair, reserves)


def _market_analytics_window(table: pa.Table) -> Mask:
    return pc.greater_equal(table["window_end"], table["window_start"])


def _risk_assessment_health_factor(table: pa.Table) -> Mask:
    return pc.equal(pc.is_null(table["health_factor"]), pc.equal(table["debt_usd"], 0))


def _arbitrage_expiry(table: pa.Table) -> Mask:
    return pc.greater_equal(table["expires_at"], table["detected_at"])


# (model, validator name) → its vectorised equivalent. A model or field validator of a flat model
# that is missing here makes the schema derivation raise: add its equivalent next to these.
_VALIDATOR_CHECKS: Mapping[tuple[type[BaseModel], str], ValidatorCheck] = {
    (MarketPrice, "_consistent"): _market_price_consistent,
    (MarketAnalytics, "_window"): _market_analytics_window,
    (RiskAssessment, "_health_factor"): _risk_assessment_health_factor,
    (ArbitrageOpportunity, "_expiry"): _arbitrage_expiry,
}


# --- the schema derivation ---------------------------------------------------------------------

Kind = Literal["str", "float", "int", "bool", "timestamp"]


@dataclass(frozen=True)
class _Field:
    """One column: a model field as the fast path checks it."""

    name: str
    kind: Kind
    nullable: bool
    """None is a valid value (``X | None``)."""
    required: bool
    """No default: the key must be on the wire."""
    null_default: bool = False
    """A missing key decodes to None."""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    choices: tuple[str, ...] | None = None
    enum: type[Enum] | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.kind]

    @property
    def key_token(self) -> bytes:
        """The key as compact JSON writes it; counted to tell a missing key from a null."""
        return b'"' + self.name.encode() + b'":'


_ARROW_TYPES: Mapping[Kind, pa.DataType] = {
    "str": pa.string(),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "timestamp": TIMESTAMP,
}


@dataclass(frozen=True)
class _Layout:
    """How one topic decodes into columns."""

    topic: str
    model: type[Message]
    fields: tuple[_Field, ...]
    schema: pa.Schema
    """The table's schema: non-optional fields are not nullable."""
    parse_options: pj.ParseOptions
    """The reader's schema: timestamps as strings, checked before they are cast."""
    validator_checks: tuple[ValidatorCheck, ...]


class _NotFlat(Exception):
    """The model has a field Arrow cannot hold as a flat column."""


# Keys of core schemas that change neither what is accepted nor the value.
_INERT = frozenset({"type", "metadata", "serialization", "ref"})
_SCHEMA_KEYS: Mapping[str, frozenset[str]] = {
    "str": frozenset({"pattern", "min_length", "max_length", "strict"}),
    "float": frozenset({"gt", "ge", "lt", "le", "allow_inf_nan", "strict"}),
    "int": frozenset({"gt", "ge", "lt", "le", "strict"}),
    "bool": frozenset({"strict"}),
    "literal": frozenset({"expected"}),
    "enum": frozenset({"cls", "members", "sub_type", "missing", "strict"}),
    "datetime": frozenset({"tz_constraint", "microseconds_precision", "strict"}),
}
_NESTED = frozenset(
    {
        "list", "tuple", "set", "frozenset", "dict", "model", "dataclass", "typed-dict",
        "union", "tagged-union", "definitions", "definition-ref", "any", "json",
    }
)  # fmt: skip
_FUNCTIONS = frozenset({"function-after", "function-before", "function-wrap", "function-plain"})
_CONFIG_KEYS = frozenset({"title", "extra_fields_behavior", "allow_inf_nan", "regex_engine"})
_MODEL_KEYS = frozenset({"cls", "config", "custom_init", "root_model", "schema", "post_init"})
_FIELDS_KEYS = frozenset({"fields", "model_name", "computed_fields"})
_MODEL_FIELD_KEYS = frozenset({"schema", "serialization_exclude", "serialization_alias", "frozen"})
_DEFAULT_KEYS = frozenset({"schema", "default", "default_factory", "default_factory_takes_data"})
# (validate_default is not among them: a default the validator would change has no equivalent.)
# Pattern syntax on which Rust's regex (pydantic's engine) and RE2 (Arrow's) differ: Unicode-aware
# classes and word boundaries in Rust, ASCII in RE2; inline flags.
_UNPORTABLE_PATTERN = ("\\d", "\\D", "\\w", "\\W", "\\s", "\\S", "\\b", "\\B", "\\p", "\\P", "(?")


def _unexpected(where: str, schema: Mapping[str, Any], allowed: frozenset[str]) -> None:
    extra = set(schema) - allowed - _INERT
    if extra:
        raise ColumnarSchemaError(
            f"{where}: core schema keys {sorted(extra)} have no columnar equivalent "
            "(see ys_platform/catalog/columnar.py)"
        )


def _derive(topic: str, model: type[Message]) -> _Layout:
    """The layout of ``model``; _NotFlat if it has a non-scalar field."""
    schema: Mapping[str, Any] = model.__pydantic_core_schema__
    # Model validators wrap the model schema; field validators wrap a field's schema.
    wrappers: list[Any] = []
    while schema["type"] in _FUNCTIONS:
        wrappers.append(schema["function"]["function"])
        schema = schema["schema"]
    if schema["type"] != "model" or schema["cls"] is not model:
        raise _NotFlat(schema["type"])
    where = model.__name__
    _unexpected(where, schema, _MODEL_KEYS)
    if schema.get("post_init") or schema.get("root_model") or schema.get("custom_init"):
        raise ColumnarSchemaError(f"{where}: a root model or custom init has no equivalent")
    config = schema.get("config", {})
    _unexpected(f"{where} config", config, _CONFIG_KEYS)
    if config.get("extra_fields_behavior") != "forbid":
        raise ColumnarSchemaError(f"{where}: columns need extra='forbid' (unknown keys fail)")
    if config.get("regex_engine", "rust-regex") != "rust-regex":
        raise ColumnarSchemaError(f"{where}: patterns are checked as Rust regex, not Python re")
    fields_schema = schema["schema"]
    if fields_schema["type"] != "model-fields":
        raise _NotFlat(fields_schema["type"])
    _unexpected(where, fields_schema, _FIELDS_KEYS)
    field_wrappers: dict[str, list[Any]] = {}
    fields = tuple(
        _field(where, name, spec, field_wrappers.setdefault(name, []))
        for name, spec in fields_schema["fields"].items()
    )
    checks = _validator_checks(model, wrappers, field_wrappers)
    parse_schema = pa.schema(
        [pa.field(f.name, pa.string() if f.kind == "timestamp" else f.arrow_type) for f in fields]
    )
    return _Layout(
        topic=topic,
        model=model,
        fields=fields,
        schema=pa.schema([pa.field(f.name, f.arrow_type, nullable=f.nullable) for f in fields]),
        parse_options=pj.ParseOptions(
            explicit_schema=parse_schema,
            unexpected_field_behavior="error",
            newlines_in_values=False,
        ),
        validator_checks=checks,
    )


def _field(model: str, name: str, spec: Mapping[str, Any], wrappers: list[Any]) -> _Field:
    where = f"{model}.{name}"
    _unexpected(where, spec, _MODEL_FIELD_KEYS)  # a validation alias among them
    schema = spec["schema"]
    required, null_default = True, False
    if schema["type"] == "default":
        _unexpected(where, schema, _DEFAULT_KEYS)
        required = False
        null_default = "default" in schema and schema["default"] is None
        schema = schema["schema"]
    nullable = schema["type"] == "nullable"
    if nullable:
        schema = schema["schema"]
    while schema["type"] in _FUNCTIONS:
        wrappers.append(schema["function"]["function"])
        if "schema" not in schema:
            raise _NotFlat(schema["type"])  # a plain validator: any input, any output
        schema = schema["schema"]
    kind = schema["type"]
    if kind in _NESTED:
        raise _NotFlat(kind)
    if kind not in _SCHEMA_KEYS:
        raise ColumnarSchemaError(f"{where}: no columnar equivalent for a {kind!r} schema")
    _unexpected(where, schema, _SCHEMA_KEYS[kind])
    if schema.get("strict") is False:
        raise ColumnarSchemaError(f"{where}: a field that is lax even in strict mode")
    common = dict(name=name, nullable=nullable, required=required, null_default=null_default)
    if kind == "str":
        pattern = schema.get("pattern")
        if pattern is not None and any(token in pattern for token in _UNPORTABLE_PATTERN):
            raise ColumnarSchemaError(f"{where}: pattern {pattern!r} may match differently in RE2")
        return _Field(
            kind="str",
            pattern=pattern,
            min_length=schema.get("min_length"),
            max_length=schema.get("max_length"),
            **common,
        )
    if kind in ("float", "int"):
        # allow_inf_nan needs nothing: a non-finite value always falls back to pydantic.
        bounds = {bound: schema.get(bound) for bound in ("gt", "ge", "lt", "le")}
        if kind == "int" and any(b is not None and not isinstance(b, int) for b in bounds.values()):
            raise ColumnarSchemaError(f"{where}: an integer field with a non-integer bound")
        return _Field(kind=kind, **bounds, **common)
    if kind == "bool":
        return _Field(kind="bool", **common)
    if kind == "literal":
        expected = schema["expected"]
        if not all(type(value) is str for value in expected):
            raise _NotFlat("literal of non-strings")
        return _Field(kind="str", choices=tuple(expected), **common)
    if kind == "enum":
        if schema.get("sub_type") != "str" or schema.get("missing") is not None:
            raise _NotFlat("enum of non-strings")
        enum: type[Enum] = schema["cls"]
        return _Field(
            kind="str", choices=tuple(m.value for m in schema["members"]), enum=enum, **common
        )
    # datetime: only UtcDatetime, whose normalisation is the identity on the canonical form.
    if schema.get("tz_constraint") != "aware" or wrappers[-1:] != [_UTC_MILLIS]:
        raise ColumnarSchemaError(f"{where}: only UtcDatetime timestamps are columnar")
    wrappers.pop()
    return _Field(kind="timestamp", **common)


def _validator_checks(
    model: type[BaseModel], wrappers: list[Any], field_wrappers: Mapping[str, list[Any]]
) -> tuple[ValidatorCheck, ...]:
    """The registered checks of every validator of ``model``; ColumnarSchemaError if one has
    none, or if a validator function sits in the schema that the decorators do not name."""
    decorators = model.__pydantic_decorators__
    named: dict[Any, str] = {}
    for validators in (
        decorators.model_validators,
        decorators.field_validators,
        decorators.validators,
        decorators.root_validators,
    ):
        for name, decorator in validators.items():
            named[_unbound(decorator.func)] = name
    checks: list[ValidatorCheck] = []
    found = [("model", f) for f in wrappers] + [
        (field, f) for field, functions in field_wrappers.items() for f in functions
    ]
    for where, function in found:
        function = _unbound(function)
        name = named.get(function)
        check = _VALIDATOR_CHECKS.get((model, name)) if name else None
        if check is None:
            raise ColumnarSchemaError(
                f"{model.__name__}: validator {function.__qualname__} (on {where}) has no "
                "vectorised equivalent: register one in _VALIDATOR_CHECKS in "
                "ys_platform/catalog/columnar.py, or decode this topic with decode_batch"
            )
        checks.append(check)
    return tuple(checks)


def _unbound(function: Any) -> Any:
    return function.__func__ if isinstance(function, types.MethodType) else function


@functools.cache
def _layout(topic: str) -> _Layout | None:
    topic_spec(topic)  # KeyError naming an unknown topic
    model = MODELS.get(topic)
    if model is None:
        raise KeyError(f"{topic!r} has no message model (a dead-letter topic?)")
    if VALUE_TYPES[topic] is not model:
        return None  # a union of models
    try:
        return _derive(topic, model)
    except _NotFlat:
        return None


def is_columnar(topic: str) -> bool:
    """Whether ``topic``'s messages decode into flat columns (else use ``decode_batch``).

    ColumnarSchemaError if its model is flat but holds a validator or constraint without a
    vectorised equivalent; KeyError for an unknown topic.
    """
    return _layout(topic) is not None


def arrow_schema(topic: str) -> pa.Schema:
    """The Arrow schema of ``topic``'s decoded columns: the model's fields in order."""
    layout = _layout(topic)
    if layout is None:
        raise ValueError(f"{topic!r} is not columnar (not a flat model): use decode_batch")
    return layout.schema


# --- decoding ------------------------------------------------------------------------------------


class ColumnBatch:
    """A decoded batch: the good records as columns, and the failures.

    ``table`` holds the good records in input order (one chunk per column, the schema of
    :func:`arrow_schema`); ``indices`` the index in ``values`` of each of its rows; ``failures``
    the ``(index, DecodeError)`` of the others, as ``decode_batch`` gives them. ``fast`` tells
    whether the batch took the fast path (no failures then).
    """

    __slots__ = ("_messages", "_values", "failures", "fast", "indices", "table", "topic")

    def __init__(
        self,
        topic: str,
        table: pa.Table,
        indices: npt.NDArray[np.int64],
        failures: list[tuple[int, DecodeError]],
        *,
        fast: bool,
        values: Sequence[bytes | None],
        messages: list[Message] | None = None,
    ) -> None:
        self.topic = topic
        self.table = table
        self.indices = indices
        self.failures = failures
        self.fast = fast
        self._values = values
        self._messages = messages

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def messages(self) -> list[Message]:
        """The good records as models (row ``i`` of the table is ``messages()[i]``).

        Built on first call: a fast-path batch validates its values with the models then, so
        the models are exactly ``decode_batch``'s (building them from the columns measured no
        faster: ~5 µs/value for the datetimes, the dicts and the instances); a fallback batch
        already has them. A caller that needs a model for every record, every batch, is better
        served by ``decode_batch`` alone.
        """
        if self._messages is None:
            messages, failures = decode_batch(self.topic, self._values)
            if failures or len(messages) != len(self):
                index, error = failures[0] if failures else (-1, "a different count")
                raise AssertionError(
                    f"{self.topic}: the columnar fast path accepted a batch the model rejects "
                    f"(value {index}: {error}); a bug in ys_platform/catalog/columnar.py"
                )
            self._messages = messages
        return self._messages

    def __repr__(self) -> str:
        path = "fast" if self.fast else "fallback"
        return (
            f"ColumnBatch({self.topic!r}, rows={len(self)}, failures={len(self.failures)}, {path})"
        )


def decode_columns(
    topic: str, values: Sequence[bytes | None], *, threads: bool = False
) -> ColumnBatch:
    """Decode a batch of ``topic``'s record values into columns (see the module docstring).

    ``threads`` lets the JSON reader parse blocks on pyarrow's thread pool: on 100k
    market.prices values the parse took 1.2 µs/value of wall time instead of 1.8 when the second
    core was free, for ~15 % more CPU; no gain when it was busy. ValueError if the topic is not
    columnar (:func:`is_columnar`), KeyError if unknown.
    """
    layout = _layout(topic)
    if layout is None:
        raise ValueError(f"{topic!r} is not columnar (not a flat model): use decode_batch")
    table = _fast(layout, values, threads=threads)
    if table is not None:
        return ColumnBatch(
            topic, table, np.arange(len(values), dtype=np.int64), [], fast=True, values=values
        )
    return _fallback(layout, values)


def _fast(
    layout: _Layout, values: Sequence[bytes | None], *, threads: bool = False
) -> pa.Table | None:
    """The table of ``values`` if every one is certainly valid, else None."""
    n = len(values)
    if n == 0:
        return layout.schema.empty_table()
    try:
        buffer = b"\n".join(values)  # type: ignore[arg-type]
    except TypeError:  # a tombstone (None)
        return None
    if not _one_object_per_line(buffer, n):
        return None
    try:
        buffer.decode()  # the reader does not check UTF-8; pydantic rejects invalid text
    except UnicodeDecodeError:
        return None
    try:
        parsed = pj.read_json(pa.py_buffer(buffer), _READ_OPTIONS[threads], layout.parse_options)
    except pa.ArrowException:
        return None
    if parsed.num_rows != n:  # e.g. two objects on one line
        return None
    columns: list[pa.Array] = []
    for field in layout.fields:
        column = _checked(field, parsed.column(field.name).combine_chunks(), buffer, n)
        if column is None:
            return None
        columns.append(column)
    table = pa.Table.from_arrays(columns, schema=layout.schema)
    for check in layout.validator_checks:
        if not _all(pc.fill_null(check(table), False)):
            return None
    return table


def _one_object_per_line(buffer: bytes, n: int) -> bool:
    """Whether ``buffer`` has n lines, each starting with ``{`` and none over the catalog's
    largest value (``codec.MAX_VALUE_BYTES``).

    A newline inside a value, an empty value, leading whitespace, a top-level ``null`` (which
    the reader would take for a row of nulls) or an oversized value fails this, and the batch
    falls back.
    """
    data = np.frombuffer(buffer, dtype=np.uint8)
    if data.size == 0 or data[0] != _BRACE or data[-1] == _NEWLINE:
        return False
    newlines = np.flatnonzero(data == _NEWLINE)  # 0.15 µs/value, 40 % of two bytes.count
    if newlines.size != n - 1 or not np.all(data[newlines + 1] == _BRACE):
        return False
    if data.size <= MAX_VALUE_BYTES:  # no line can be longer: the common batch
        return True
    ends = np.concatenate((newlines, [data.size]))
    starts = np.concatenate(([-1], newlines))
    return bool(np.max(ends - starts - 1) <= MAX_VALUE_BYTES)


def _all(mask: Mask) -> bool:
    # Nulls are skipped: a null is judged before any check (a null the field allows passes).
    return bool(pc.all(mask, skip_nulls=True, min_count=0).as_py())


def _checked(field: _Field, column: pa.Array, buffer: bytes, n: int) -> pa.Array | None:
    """``column`` (cast to the field's type) if each value certainly passes, else None."""
    if column.null_count and not _nulls_allowed(field, buffer, n):
        return None
    if field.kind == "timestamp":
        return _canonical_timestamps(column)
    if field.kind == "float" and not _finite_without_negative_zero(column):
        return None
    if field.kind in ("float", "int") and not _within_bounds(field, column):
        return None
    if field.kind == "str" and not _valid_strings(field, column):
        return None
    return column


def _canonical_timestamps(column: pa.Array) -> pa.Array | None:
    if not (_producer_form(column) or _all(pc.match_substring_regex(column, _CANONICAL_UTC))):
        return None
    try:
        timestamps = column.cast(TIMESTAMP)
    except pa.ArrowInvalid:  # a canonical-looking date no calendar has
        return None
    # Arrow's calendar has a year 0; Python's (and so pydantic's) starts at year 1.
    return timestamps if _all(pc.greater_equal(timestamps, _YEAR_ONE)) else None


def _producer_form(column: pa.Array) -> bool:
    """Whether every value is ``YYYY-MM-DDTHH:MM:SS.fffZ`` (what ``format_utc`` writes): the
    canonical pattern for strings of 24 characters, checked on the bytes as an (n, 24) matrix in
    0.02 µs/value instead of RE2's 0.16."""
    n = len(column)
    offsets = np.frombuffer(column.buffers()[1], np.int32, n + 1, column.offset * 4)
    if not np.all(np.diff(offsets) == _PRODUCER_WIDTH):  # a null has width 0: use the pattern
        return False
    data = np.frombuffer(column.buffers()[2], np.uint8, n * _PRODUCER_WIDTH, int(offsets[0]))
    chars = data.reshape(n, _PRODUCER_WIDTH)
    return bool(
        np.all(chars[:, _PRODUCER_DIGITS] - _ZERO < 10)  # uint8: below "0" wraps past 10
        and np.all(chars[:, _PRODUCER_SEPARATORS] == _PRODUCER_SEPARATOR_CHARS)
    )


def _nulls_allowed(field: _Field, buffer: bytes, n: int) -> bool:
    if not field.nullable:
        return False  # a required field or a missing key with a non-null default
    if field.required:
        # `X | None` without a default: null is fine, a missing key is not; every row has the
        # key iff it occurs n times (the reader refuses duplicate and unknown keys; a key with
        # an escape or spaces before the colon undercounts, and falls back).
        return buffer.count(field.key_token) == n
    return field.null_default


def _finite_without_negative_zero(column: pa.Array) -> bool:
    if not _all(pc.is_finite(column)):  # NaN and Infinity tokens parse; pydantic rejects them
        return False
    # pydantic reads the integer token -0 as 0.0 (and -0.0 as -0.0); Arrow reads both as -0.0.
    if not pc.any(pc.equal(column, 0.0)).as_py():
        return True
    values = column.fill_null(1.0).to_numpy()
    return not np.any((values == 0.0) & np.signbit(values))


def _within_bounds(field: _Field, column: pa.Array) -> bool:
    bounds = (
        (field.gt, pc.greater),
        (field.ge, pc.greater_equal),
        (field.lt, pc.less),
        (field.le, pc.less_equal),
    )
    return all(
        _all(compare(column, pa.scalar(bound, column.type)))
        for bound, compare in bounds
        if bound is not None
    )


def _valid_strings(field: _Field, column: pa.Array) -> bool:
    if field.pattern is not None and not _all(pc.match_substring_regex(column, field.pattern)):
        return False
    if field.min_length is not None or field.max_length is not None:
        lengths = pc.utf8_length(column)  # code points, as pydantic counts
        if field.min_length is not None and not _all(pc.greater_equal(lengths, field.min_length)):
            return False
        if field.max_length is not None and not _all(pc.less_equal(lengths, field.max_length)):
            return False
    if field.choices is not None:
        chosen = pc.is_in(column, value_set=pa.array(field.choices, pa.string()))
        if not _all(pc.or_(chosen, pc.is_null(column))):  # a null was judged before
            return False
    return True


# --- the fallback --------------------------------------------------------------------------------


def _fallback(layout: _Layout, values: Sequence[bytes | None]) -> ColumnBatch:
    messages, failures = decode_batch(layout.topic, values)
    failed = {index for index, _ in failures}
    indices = [index for index in range(len(values)) if index not in failed]
    outside = _outside_int64(layout, messages)
    if outside:
        keep = [i for i in range(len(messages)) if i not in outside]
        failures = sorted(
            [*failures, *((indices[i], outside[i]) for i in outside)], key=lambda f: f[0]
        )
        messages = [messages[i] for i in keep]
        indices = [indices[i] for i in keep]
    return ColumnBatch(
        layout.topic,
        _table_of(layout, messages),
        np.asarray(indices, dtype=np.int64),
        failures,
        fast=False,
        values=values,
        messages=messages,
    )


def _table_of(layout: _Layout, messages: Sequence[Message]) -> pa.Table:
    """The models as the fast path's table, built column-wise."""
    arrays = []
    for field in layout.fields:
        column = [getattr(m, field.name) for m in messages]
        if field.enum is not None:
            column = [None if v is None else v.value for v in column]
        arrays.append(pa.array(column, field.arrow_type))
    return pa.Table.from_arrays(arrays, schema=layout.schema)


def _outside_int64(layout: _Layout, messages: Sequence[Message]) -> dict[int, DecodeError]:
    """Position in ``messages`` → the error of each message with an integer beyond Int64."""
    outside: dict[int, DecodeError] = {}
    for field in layout.fields:
        if field.kind != "int":
            continue
        for i, message in enumerate(messages):
            value = getattr(message, field.name)
            if value is not None and not _INT64_MIN <= value <= _INT64_MAX and i not in outside:
                outside[i] = DecodeError(layout.topic, _INT64_REASON, field.name)
    return outside
