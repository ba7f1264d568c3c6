"""Sliding one-minute windows per symbol, emitted every few seconds of event time.

One vectorised kernel (:func:`_analyse_windows`) computes TWAP, VWAP, volatility and the
consolidated price for every (window end, symbol) pair at once; both the streaming path
(:class:`SlidingWindowState`) and the backfill path (:func:`compute_windows`) call it, so a
backfilled window equals the streamed one bit for bit. The definitions are those of
``prices.py`` (window ``(end - window, end]``, event-time order = (timestamp, input order)).

Streaming semantics, chosen so that the output depends only on the ordered tick stream and never
on how it was cut into batches:

* The **watermark** is the largest event time of any accepted tick so far.
* Tick *i* is judged against the watermark of the ticks *before* it: it is **too late** when
  ``ts <= watermark - grace_ms`` (returned to the caller for dead-lettering) and accepted
  otherwise, even if older than the watermark (late but within grace).
* A window end ``E`` (a multiple of ``emit_interval_ms``) is **complete** once
  ``E <= watermark - grace_ms``. Every tick accepted after that has ``ts > E`` (that is what
  "too late" means), so it cannot change the window: emitting complete windows after a whole
  batch gives the same records as emitting after every tick.
* Each complete window end is emitted once, with one record per symbol that has at least one
  tick inside the window; records are ordered by (window end, symbol).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ys_platform.processing.prices import (
    DEFAULT_MAX_CARRY_MS,
    DEFAULT_MAX_DEVIATION,
    DEFAULT_MAX_STALENESS_MS,
    WINDOW_MS,
)

DEFAULT_EMIT_INTERVAL_MS = 5_000
"""A new window every 5 s of event time: 12 overlapping one-minute windows per tick."""

DEFAULT_GRACE_MS = 5_000
"""Bounded lateness: one emit interval, so a window waits at most one extra interval."""

DEFAULT_MAX_WINDOW_ENDS_PER_CHUNK = 256
"""Window ends analysed in one vectorised pass; bounds the gathered arrays (each tick appears in
window/emit = 12 windows) when a backfill or a watermark jump covers many window ends."""

_NO_WATERMARK = -(2**62)
"""Watermark before the first tick: far below any timestamp, yet `- grace` cannot overflow."""

_STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """Window geometry, lateness and consolidation parameters."""

    window_ms: int = WINDOW_MS
    emit_interval_ms: int = DEFAULT_EMIT_INTERVAL_MS
    grace_ms: int = DEFAULT_GRACE_MS
    max_staleness_ms: int = DEFAULT_MAX_STALENESS_MS
    max_deviation: float = DEFAULT_MAX_DEVIATION
    max_carry_ms: int = DEFAULT_MAX_CARRY_MS

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.emit_interval_ms <= 0:
            raise ValueError("window_ms and emit_interval_ms must be positive")
        if min(self.grace_ms, self.max_staleness_ms, self.max_deviation, self.max_carry_ms) < 0:
            raise ValueError("grace_ms, max_staleness_ms, max_deviation, max_carry_ms must be >= 0")

    @property
    def retention_ms(self) -> int:
        """How far before the next window end ticks are still needed (window or staleness)."""
        return max(self.window_ms, self.max_staleness_ms)


@dataclass(frozen=True, slots=True)
class WindowAnalytics:
    """The analytics of one symbol over one window (one ``market.analytics`` record)."""

    symbol: str
    window_start_ms: int
    window_end_ms: int
    twap: float
    vwap: float | None
    """None when no tick of the window carries a volume."""
    volatility: float
    """Sample stdev of tick-to-tick log returns in the window; 0.0 with fewer than 2 returns."""
    consolidated_price: float | None
    """None when no source is fresh at the window end or the fresh sources have no consensus."""
    sources: int
    """Sources that contributed to ``consolidated_price`` (fresh and not outliers)."""
    ticks: int
    """Ticks inside the window, all sources."""


@dataclass(frozen=True, slots=True)
class TickBatch:
    """Price ticks in columns: ``symbols[i]`` ticked ``prices[i]`` at ``ts_ms[i]``.

    ``volumes`` uses NaN for "no volume"; ``sources`` names the feed (exchange, oracle, chain).
    The order of the ticks is their input order (the tie-break between equal timestamps).
    """

    symbols: Sequence[str]
    ts_ms: np.ndarray
    prices: np.ndarray
    volumes: np.ndarray
    sources: Sequence[str]

    @classmethod
    def from_columns(
        cls,
        symbols: Sequence[str],
        ts_ms: ArrayLike,
        prices: ArrayLike,
        volumes: ArrayLike | None = None,
        sources: Sequence[str] | None = None,
    ) -> TickBatch:
        """Build a batch, converting the numeric columns (volumes default to none, sources to
        a single unnamed source)."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        n = ts.shape[0]
        px = np.asarray(prices, dtype=np.float64)
        vol = np.full(n, np.nan) if volumes is None else np.asarray(volumes, dtype=np.float64)
        src: Sequence[str] = [""] * n if sources is None else sources
        if not (len(symbols) == px.shape[0] == vol.shape[0] == len(src) == n):
            raise ValueError("all columns of a TickBatch must have the same length")
        return cls(symbols, ts, px, vol, src)

    @classmethod
    def from_ticks(cls, ticks: Iterable[tuple[str, int, float, float | None, str]]) -> TickBatch:
        """Build a batch from ``(symbol, ts_ms, price, volume or None, source)`` rows."""
        rows = list(ticks)
        return cls.from_columns(
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [np.nan if r[3] is None else r[3] for r in rows],
            [r[4] for r in rows],
        )

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def take(self, indices: ArrayLike) -> TickBatch:
        """The ticks at ``indices`` (in that order), e.g. a slice of a batch or its rejects."""
        idx = np.asarray(indices, dtype=np.int64)
        return TickBatch(
            _take_strings(self.symbols, idx),
            self.ts_ms[idx],
            self.prices[idx],
            self.volumes[idx],
            _take_strings(self.sources, idx),
        )


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to a batch: indices (into the batch) of the ticks not taken."""

    accepted: int
    too_late: np.ndarray
    """Ticks with ``ts <= watermark - grace``: their windows were already emitted."""
    invalid: np.ndarray
    """Ticks with a non-positive or non-finite price, or a negative or infinite volume."""
    watermark_ms: int | None


@dataclass(slots=True)
class _Ticks:
    """Accepted ticks in columns, kept sorted by (symbol code, ts, seq).

    ``log_price`` is ``np.log(price)``, computed once when a tick is accepted rather than over
    the whole buffer at every emit (an elementwise ufunc on a contiguous array: the same bits
    whichever slice of the input it is computed on).
    """

    symbol: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    price: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    volume: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    source: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    seq: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    log_price: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))

    @classmethod
    def of(
        cls,
        symbol: np.ndarray,
        ts: np.ndarray,
        price: np.ndarray,
        volume: np.ndarray,
        source: np.ndarray,
        seq: np.ndarray,
    ) -> _Ticks:
        """Ticks with valid prices (> 0, finite), in any order; derives ``log_price``."""
        price = np.ascontiguousarray(price, dtype=np.float64)
        return cls(symbol, ts, price, volume, source, seq, np.log(price))

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def select(self, idx: np.ndarray) -> _Ticks:
        return _Ticks(*(column[idx] for column in _columns(self)))

    def sorted(self) -> _Ticks:
        """These ticks sorted by (symbol, ts, seq), from any order."""
        return self.select(np.lexsort((self.seq, self.ts, self.symbol)))

    def merged(self, other: _Ticks) -> _Ticks:
        """Both sets, sorted; ``self`` is sorted, ``other`` holds later sequence numbers and is in
        sequence order.

        Only the new run is sorted; each new tick then goes after the old ticks of its symbol
        with a time at or before its own (they have earlier sequence numbers), found by a binary
        search in its symbol's run. The work is one copy of the buffer plus a sort of the new
        ticks, not a sort of the buffer (at ~100k buffered and ~8k new ticks the full argsort and
        gather took ~5 ms of the ~24 ms an emit cost).
        """
        if not len(other):
            return self
        new = other.select(np.argsort(_composite_key(other.symbol, other.ts), kind="stable"))
        if not len(self):
            return new
        new_first, codes = new.segments()
        new_end = [*new_first[1:].tolist(), len(new)]
        # Each symbol's run in the old ticks (empty, at its place, for a symbol not there yet).
        old_first = np.searchsorted(self.symbol, codes).tolist()
        old_end = np.searchsorted(self.symbol, codes, side="right").tolist()
        at = np.empty(len(new), np.int64)  # where each new tick goes, in old positions
        for lo, hi, a, b in zip(new_first.tolist(), new_end, old_first, old_end, strict=True):
            at[lo:hi] = a + self.ts[a:b].searchsorted(new.ts[lo:hi], side="right")
        # ``at`` never decreases; each run of equal values is a block of new ticks to splice in.
        run_starts = np.flatnonzero(np.concatenate(([True], at[1:] != at[:-1])))
        if run_starts.size <= _MAX_SPLICED_RUNS:
            points = at[run_starts].tolist()
            runs = [*run_starts.tolist(), len(new)]
            return _Ticks(
                *(
                    _splice(old, add, points, runs)
                    for old, add in zip(_columns(self), _columns(new), strict=True)
                )
            )
        at += np.arange(len(new))  # positions in the merged columns
        is_old = np.ones(len(self) + len(new), dtype=bool)
        is_old[at] = False
        columns = []
        for old, add in zip(_columns(self), _columns(new), strict=True):
            out = np.empty(is_old.size, dtype=old.dtype)
            out[is_old] = old
            out[at] = add
            columns.append(out)
        return _Ticks(*columns)

    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(first index, symbol code) of each symbol's run: the codes are sorted, so a binary
        search per code finds the runs without a pass over the buffer."""
        if not len(self):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        codes = np.arange(int(self.symbol[-1]) + 2)
        bounds = np.searchsorted(self.symbol, codes)
        present = np.flatnonzero(bounds[1:] > bounds[:-1])
        return bounds[present], codes[present]


_MAX_SPLICED_RUNS = 256
"""Up to this many blocks of new ticks (one per symbol when ticks arrive in time order, more
with late ticks) the merge concatenates slices, ~10x faster than the boolean-mask scatter it
uses beyond (a Python loop over the slices then costs more than the scatter)."""


def _splice(old: np.ndarray, add: np.ndarray, points: list[int], runs: list[int]) -> np.ndarray:
    """``old`` with ``add[runs[k]:runs[k + 1]]`` inserted before ``old[points[k]]``."""
    pieces = []
    prev = 0
    for k, point in enumerate(points):
        pieces.append(old[prev:point])
        pieces.append(add[runs[k] : runs[k + 1]])
        prev = point
    pieces.append(old[prev:])
    return np.concatenate(pieces)


def _columns(t: _Ticks) -> tuple[np.ndarray, ...]:
    return (t.symbol, t.ts, t.price, t.volume, t.source, t.seq, t.log_price)


def _composite_key(
    symbol: np.ndarray, ts: np.ndarray, base: int | None = None, span: int | None = None
) -> np.ndarray:
    """An int64 key ordering by (symbol, ts): symbol * span + (ts - base); ``base`` and ``span``
    default to the range of ``ts``."""
    if base is None or span is None:
        base = int(ts.min())
        span = int(ts.max()) - base + 1
    if (int(symbol.max()) + 1) * span >= 2**62:
        raise OverflowError("tick timestamps span too wide a range to key (check the clock)")
    return symbol * span + (ts - base)


class DictionaryStrings(Sequence[str]):
    """A column of strings as ``values[indices[i]]``: the shape of an Arrow dictionary array.

    A columnar decoder hands symbols and sources over this way, without one Python ``str`` per
    row; interning it (:class:`_Codes`) costs one lookup per distinct value, not per row.
    """

    def __init__(self, indices: np.ndarray, values: Sequence[str]) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.values = list(values)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self.values[i] for i in self.indices[index].tolist()]
        return self.values[int(self.indices[index])]


def _take_strings(values: Sequence[str], idx: np.ndarray) -> Sequence[str]:
    if isinstance(values, DictionaryStrings):
        return DictionaryStrings(values.indices[idx], values.values)
    return [values[i] for i in idx.tolist()]


class _Codes:
    """Interns strings (symbols, sources) as dense int codes, in first-seen order."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names: list[str] = []
        self.code_of: dict[str, int] = {}
        for name in names:
            self.encode_one(name)

    def encode_one(self, name: str) -> int:
        code = self.code_of.get(name)
        if code is None:
            code = self.code_of[name] = len(self.names)
            self.names.append(name)
        return code

    def encode(self, names: Sequence[str]) -> np.ndarray:
        if isinstance(names, DictionaryStrings):
            if not len(names):
                return np.zeros(0, dtype=np.int64)
            # First-seen order as for a list: intern the distinct values by their first row.
            first = np.unique(names.indices, return_index=True)[1]
            for i in np.sort(first).tolist():
                self.encode_one(names[i])
            lookup = np.fromiter(
                (self.code_of.get(v, -1) for v in names.values), np.int64, len(names.values)
            )
            return lookup[names.indices]
        try:
            return np.fromiter(map(self.code_of.__getitem__, names), np.int64, len(names))
        except KeyError:  # a name never seen: intern the new ones, then the fast path again
            for name in names:
                self.encode_one(name)
            return np.fromiter(map(self.code_of.__getitem__, names), np.int64, len(names))


def _valid_mask(batch: TickBatch) -> np.ndarray:
    price_ok = np.isfinite(batch.prices) & (batch.prices > 0)  # log returns need price > 0
    volume_ok = np.isnan(batch.volumes) | (np.isfinite(batch.volumes) & (batch.volumes >= 0))
    return price_ok & volume_ok


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class SlidingWindowState:
    """Per-symbol sliding-window state of one partition of ``market.prices``.

    Feed batches with :meth:`ingest` (or :meth:`process`, which also emits), collect complete
    windows with :meth:`emit`. The state keeps only what future windows can still need: ticks
    within ``max(window, staleness)`` of the next window end (later ticks are within grace of the
    watermark anyway), plus each symbol's last tick before that (the next windows' prior tick);
    the older ones are dropped when new ticks are next merged into the buffer.
    :meth:`to_state` / :meth:`from_state` snapshot and restore it as plain JSON-able data.
    """

    def __init__(self, config: WindowConfig | None = None) -> None:
        self.config = config or WindowConfig()
        self._symbols = _Codes()
        self._sources = _Codes()
        self._ticks = _Ticks()
        # Accepted ticks not yet merged into the sorted ``_ticks``: merging waits until a window
        # completes, so a stream of small batches pays for one sort per emit interval, not one
        # per batch.
        self._pending: list[_Ticks] = []
        self._watermark = _NO_WATERMARK
        self._emitted_through: int | None = None  # every window end <= this has been emitted
        self._next_seq = 0  # position of the next tick in the whole input stream
        # (window end, its records) computed ahead (see :meth:`emit`); the records become None
        # when a tick at or before that end arrives since, and are not computed ahead again.
        self._prepared: tuple[int, list[WindowAnalytics] | None] | None = None
        # How far behind the watermark accepted ticks came, in this emit interval and the one
        # before: window ends are computed ahead no earlier than this past them.
        self._lateness_ms = self._prior_lateness_ms = 0
        # Old ticks are dropped at the next merge after an emit, not in the emit itself.
        self._prune_due = False

    @property
    def watermark_ms(self) -> int | None:
        """The largest event time accepted so far (None before the first tick)."""
        return None if self._watermark == _NO_WATERMARK else self._watermark

    @property
    def emitted_through_ms(self) -> int | None:
        """The last window end already emitted (or skipped for lack of ticks)."""
        return self._emitted_through

    @property
    def buffered_ticks(self) -> int:
        """Ticks held in the state."""
        return len(self._ticks) + sum(len(p) for p in self._pending)

    def ingest(self, batch: TickBatch) -> IngestResult:
        """Add a batch of ticks in input order; returns the indices of rejected ticks."""
        n = len(batch)
        valid = _valid_mask(batch)
        ts = batch.ts_ms
        # Watermark seen by each tick = max of the earlier valid ticks' times (and the state's):
        # a running maximum, so a tick is judged exactly as if the ticks came one by one.
        running = np.maximum.accumulate(
            np.concatenate(([self._watermark], np.where(valid, ts, _NO_WATERMARK)))
        )
        too_late = valid & (ts <= running[:-1] - self.config.grace_ms)
        accepted = valid & ~too_late
        seq = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        self._next_seq += n
        self._watermark = int(running[-1])
        n_accepted = int(np.count_nonzero(accepted))
        if n_accepted:
            behind = running[:-1][accepted] - ts[accepted]
            self._lateness_ms = max(self._lateness_ms, int(behind.max()))
        prepared_end = None if self._prepared is None else self._prepared[0]
        if prepared_end is not None and n_accepted and int(ts[accepted].min()) <= prepared_end:
            self._prepared = (prepared_end, None)  # a tick of that window (or before) came late
        if n_accepted:
            if n_accepted == n:
                symbols, sources, pick = batch.symbols, batch.sources, slice(None)
            else:
                pick = np.flatnonzero(accepted)
                positions = pick.tolist()
                symbols = [batch.symbols[i] for i in positions]
                sources = [batch.sources[i] for i in positions]
            self._pending.append(
                _Ticks.of(
                    self._symbols.encode(symbols),
                    ts[pick],
                    batch.prices[pick],
                    batch.volumes[pick],
                    self._sources.encode(sources),
                    seq[pick],
                )
            )
        return IngestResult(
            accepted=n_accepted,
            too_late=np.flatnonzero(too_late),
            invalid=np.flatnonzero(~valid),
            watermark_ms=self.watermark_ms,
        )

    def advance_watermark(self, ts_ms: int) -> None:
        """Move the watermark forward without a tick (end of input, an idle-partition timer).

        Windows up to ``ts_ms - grace`` become complete; ticks at or before that become too late.
        Never moves the watermark back.
        """
        self._watermark = max(self._watermark, int(ts_ms))

    def emit(self) -> list[WindowAnalytics]:
        """Analytics of every window end completed since the last call.

        The window end next due is computed ahead, once the watermark is half the grace period
        past it: a window's records depend only on the ticks at or before its end, so they are
        final unless such a tick still arrives (late but within grace), which discards them.
        The emit that completes the window then hands them over without touching the buffer;
        the work (~10 ms per 100k buffered ticks) lands in a batch between two emits, off the
        path of the records' latency, where 12 partitions' kernels otherwise added up in the
        one transaction that closes a window (bench/latency.py).
        """
        if self._watermark == _NO_WATERMARK:
            return []
        cfg = self.config
        step = cfg.emit_interval_ms
        last_due = (self._watermark - cfg.grace_ms) // step  # window ends <= this are complete
        if self._emitted_through is not None:
            first_due = self._emitted_through // step + 1
            if last_due < first_due:
                self._prepare(first_due * step)
                return []
            prepared = self._prepared
            self._prepared = None
            self._prior_lateness_ms, self._lateness_ms = self._lateness_ms, 0
            if prepared is not None and prepared[0] == first_due * step == last_due * step:
                records = prepared[1]
                if records is not None:
                    self._emitted_through = last_due * step
                    self._prune_due = True
                    return records
        self._merge_pending()
        if self._emitted_through is None:
            if not len(self._ticks):
                return []
            first_due = _ceil_div(int(self._ticks.ts.min()), step)  # no window before a tick
            if last_due < first_due:
                return []
        window_ends = _window_ends_with_ticks(self._ticks.ts, first_due, last_due, cfg)
        records = _analyse_windows(self._ticks, window_ends, cfg, self._symbols.names)
        self._emitted_through = last_due * step
        self._prune_due = True
        return records

    def _prepare(self, window_end_ms: int) -> None:
        """Compute the records of the next due window end ahead, once the watermark is half the
        grace period past it (see :meth:`emit`), or later if ticks came later than that behind
        the watermark recently (not at all if as late as the grace period): on a stream whose
        ticks come that late the records would likely be discarded, and computing them ahead
        then doubles the kernel's work. Once per window end."""
        lateness = max(self._lateness_ms, self._prior_lateness_ms)
        ready_ms = window_end_ms + max(self.config.grace_ms // 2, lateness + 1)
        if self._prepared is not None or ready_ms >= window_end_ms + self.config.grace_ms:
            return
        if self._watermark < ready_ms:
            return
        self._merge_pending()
        ends = np.array([window_end_ms], dtype=np.int64)
        records = _analyse_windows(self._ticks, ends, self.config, self._symbols.names)
        self._prepared = (window_end_ms, records)

    def process(self, batch: TickBatch) -> tuple[list[WindowAnalytics], IngestResult]:
        """:meth:`ingest` then :meth:`emit`: the per-batch call of a streaming processor."""
        result = self.ingest(batch)
        return self.emit(), result

    def _merge_pending(self) -> None:
        if self._prune_due:
            self._prune()
            self._prune_due = False
        if self._pending:
            new = _Ticks(
                *(np.concatenate(cols) for cols in zip(*map(_columns, self._pending), strict=True))
            )
            self._pending = []
            self._ticks = self._ticks.merged(new)

    def _prune(self) -> None:
        """Drop ticks no future window can use (see the class docstring)."""
        if self._emitted_through is None or not len(self._ticks):
            return
        cutoff = self._emitted_through + self.config.emit_interval_ms - self.config.retention_ms
        t = self._ticks
        # Within a symbol the ticks are sorted by time, so the ticks before the cutoff are a
        # prefix of each symbol's run; keep the last tick of each prefix: the prior tick of the
        # next windows.
        firsts = t.segments()[0]
        n_before = np.add.reduceat(t.ts < cutoff, firsts, dtype=np.int64)
        kept_from = firsts + np.maximum(n_before - 1, 0)
        if np.array_equal(kept_from, firsts):
            return
        ranges = list(zip(kept_from.tolist(), [*firsts[1:].tolist(), len(t)], strict=True))
        self._ticks = _Ticks(*(np.concatenate([c[a:b] for a, b in ranges]) for c in _columns(t)))

    def to_state(self) -> dict[str, Any]:
        """A JSON-able snapshot (plain dicts, lists, ints, floats, None)."""
        self._merge_pending()
        t = self._ticks
        return {
            "version": _STATE_VERSION,
            "config": asdict(self.config),
            "watermark_ms": self.watermark_ms,
            "emitted_through_ms": self._emitted_through,
            "next_seq": self._next_seq,
            "ticks": {
                "symbol": [self._symbols.names[c] for c in t.symbol.tolist()],
                "ts_ms": t.ts.tolist(),
                "price": t.price.tolist(),
                "volume": [None if v != v else v for v in t.volume.tolist()],  # NaN -> None
                "source": [self._sources.names[c] for c in t.source.tolist()],
                "seq": t.seq.tolist(),
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SlidingWindowState:
        """Rebuild a state from :meth:`to_state` output; it then behaves exactly as the original."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported window state version {state.get('version')!r}")
        self = cls(WindowConfig(**state["config"]))
        wm = state["watermark_ms"]
        self._watermark = _NO_WATERMARK if wm is None else int(wm)
        self._emitted_through = state["emitted_through_ms"]
        self._next_seq = int(state["next_seq"])
        cols = state["ticks"]
        if cols["ts_ms"]:
            ticks = _Ticks.of(
                self._symbols.encode(cols["symbol"]),
                np.asarray(cols["ts_ms"], dtype=np.int64),
                np.asarray(cols["price"], dtype=np.float64),
                np.asarray([np.nan if v is None else v for v in cols["volume"]], np.float64),
                self._sources.encode(cols["source"]),
                np.asarray(cols["seq"], dtype=np.int64),
            )
            self._ticks = ticks.sorted()
        return self


def compute_windows(
    ticks: TickBatch,
    window_ends_ms: ArrayLike,
    config: WindowConfig | None = None,
) -> list[WindowAnalytics]:
    """Analytics for the given window ends from a complete set of ticks (the backfill path).

    ``ticks`` in input order (equal timestamps: the later one wins, as in streaming); invalid
    ticks are ignored; lateness does not apply (every tick given is used). Window ends need not
    be aligned or sorted. Streaming equals backfill: the records a :class:`SlidingWindowState`
    emits are ``compute_windows`` of its accepted ticks at the emitted window ends.
    """
    cfg = config or WindowConfig()
    valid = np.flatnonzero(_valid_mask(ticks))
    batch = ticks.take(valid)
    symbols = _Codes()
    sources = _Codes()
    buffer = _Ticks().merged(
        _Ticks.of(
            symbols.encode(batch.symbols),
            batch.ts_ms,
            batch.prices,
            batch.volumes,
            sources.encode(batch.sources),
            valid.astype(np.int64),
        )
    )
    ends = np.unique(np.asarray(window_ends_ms, dtype=np.int64))
    return _analyse_windows(buffer, ends, cfg, symbols.names)


def _window_ends_with_ticks(
    ts: np.ndarray, first_k: int, last_k: int, cfg: WindowConfig
) -> np.ndarray:
    """Window ends ``k * emit`` for k in [first_k, last_k] whose window could hold a tick.

    A short range is returned whole (the kernel skips empty windows cheaply); a long one (a
    watermark jump, a gap in the data) is narrowed to the ends some tick falls into, so the work
    stays bounded by the number of ticks, not by the length of the gap.
    """
    step = cfg.emit_interval_ms
    if last_k - first_k < 4096 or not ts.size:  # 4096 ends ≈ 5.7 h at 5 s: cheap to scan
        return np.arange(first_k, last_k + 1, dtype=np.int64) * step
    # A tick at t is in (E - window, E] for E in [t, t + window): k from ceil(t/step) to
    # floor((t + window - 1)/step).
    k_first = np.unique(-((-ts) // step))
    per_tick = (cfg.window_ms - 1) // step + 1
    ks = np.unique((k_first[:, None] + np.arange(per_tick)[None, :]).ravel())
    ks = ks[(ks >= first_k) & (ks <= last_k)]
    return ks * step


def _analyse_windows(
    t: _Ticks,
    window_ends: np.ndarray,
    cfg: WindowConfig,
    symbol_names: Sequence[str],
    max_ends_per_chunk: int = DEFAULT_MAX_WINDOW_ENDS_PER_CHUNK,
) -> list[WindowAnalytics]:
    """The kernel: records for every (window end, symbol with ticks in the window).

    It reads only the ticks of the windows asked for (and each window's prior tick), never the
    whole buffer: a streaming emit with ~100k buffered ticks measured ~13 ms when it made
    per-buffer arrays (next tick times, log prices, a composite search key) first.
    """
    if not len(t) or not window_ends.size:
        return []
    seg_first, _ = t.segments()
    seg_end = np.append(seg_first[1:], len(t))
    records: list[WindowAnalytics] = []
    for lo_chunk in range(0, window_ends.size, max_ends_per_chunk):
        ends = window_ends[lo_chunk : lo_chunk + max_ends_per_chunk]
        records.extend(_analyse_chunk(t, ends, cfg, symbol_names, seg_first, seg_end))
    records.sort(key=lambda r: (r.window_end_ms, r.symbol))
    return records


def _search_segments(
    t: _Ticks, seg_first: np.ndarray, seg_end: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """(n times, n segments): for each time, the position of the first tick later than it in
    each symbol's run (whose times are sorted): one binary search per run for all the times."""
    out = np.empty((times.size, seg_first.size), np.int64)
    ts = t.ts
    for s, (a, b) in enumerate(zip(seg_first.tolist(), seg_end.tolist(), strict=True)):
        out[:, s] = ts[a:b].searchsorted(times, side="right")
    out += seg_first
    return out


def _analyse_chunk(
    t: _Ticks,
    ends: np.ndarray,
    cfg: WindowConfig,
    symbol_names: Sequence[str],
    seg_first: np.ndarray,
    seg_end: np.ndarray,
) -> list[WindowAnalytics]:
    # One "window" per (end, symbol) pair, end-major: its ticks (start, end] by binary search;
    # fresh ticks (end - staleness <= ts <= end) for the consolidated price likewise.
    # Fresh from ``end - staleness`` on: the first tick later than one ms before (int times).
    n_ends = ends.size
    queries = np.concatenate((ends - cfg.window_ms, ends, ends - cfg.max_staleness_ms - 1))
    found = _search_segments(t, seg_first, seg_end, queries)
    lo, hi, fresh = (found[i * n_ends : (i + 1) * n_ends].ravel() for i in range(3))
    pair_end = np.repeat(ends, seg_first.size)
    pair_seg = np.tile(np.arange(seg_first.size), ends.size)
    count = hi - lo
    live = np.flatnonzero(count > 0)  # windows emitted: a symbol with a tick inside
    if not live.size:
        return []
    lo, hi, count, end, fresh_lo = lo[live], hi[live], count[live], pair_end[live], fresh[live]
    first = seg_first[pair_seg[live]]
    n_win = live.size
    start = end - cfg.window_ms

    win_of, idx = _gather(lo, count)
    ts = t.ts[idx]
    price = t.price[idx]
    # Position (in the gathered ticks) of each window's last tick.
    last = np.cumsum(count) - 1

    # TWAP: each tick holds until the next tick of its symbol, cut at the window end; the prior
    # tick (index lo - 1, same symbol) holds from the window start to the first tick inside.
    # The next tick of a window's tick is the next gathered one, but for its last tick, whose
    # next (if any) is past the window end.
    held_ms = np.empty_like(ts)
    np.subtract(ts[1:], ts[:-1], out=held_ms[:-1])
    held_ms[last] = end - ts[last]
    weighted = np.bincount(win_of, weights=price * held_ms, minlength=n_win)
    # lo - 1 wraps to -1 when lo is 0; has_prior is False there anyway.
    has_prior = (lo > first) & (t.ts[lo - 1] > start - cfg.max_carry_ms)
    first_ts = t.ts[lo]
    prior = np.flatnonzero(has_prior)
    weighted[prior] += t.price[lo[prior] - 1] * (first_ts[prior] - start[prior])
    covered_ms = np.where(has_prior, cfg.window_ms, end - first_ts)
    with np.errstate(invalid="ignore", divide="ignore"):
        twap = np.where(covered_ms > 0, weighted / covered_ms, t.price[hi - 1])

    # VWAP over ticks with a positive volume (NaN = none). fmax turns "none" into a zero term,
    # which leaves a sum unchanged, without the data-dependent branch of np.where (~1.5 ms per
    # 100k ticks with volume on half of them at random, against ~0.05 ms).
    volume = np.fmax(t.volume[idx], 0.0)
    pv = np.bincount(win_of, weights=price * volume, minlength=n_win)
    vv = np.bincount(win_of, weights=volume, minlength=n_win)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(vv > 0, pv / vv, np.nan)

    # Volatility: sample stdev of log returns between consecutive ticks of the same window. The
    # differences across two windows go to a spare bin (n_win), so each window's sums add the
    # same terms in the same order as over its own returns alone.
    returns = np.diff(t.log_price[idx])
    r_win = win_of[1:].copy()
    r_win[last[:-1]] = n_win
    n_ret = count - 1
    mean = np.bincount(r_win, weights=returns, minlength=n_win + 1)[:n_win] / np.maximum(n_ret, 1)
    sq = (returns - np.append(mean, 0.0)[r_win]) ** 2
    sq_dev = np.bincount(r_win, weights=sq, minlength=n_win + 1)[:n_win]
    with np.errstate(invalid="ignore", divide="ignore"):
        volatility = np.where(n_ret >= 2, np.sqrt(sq_dev / (n_ret - 1)), 0.0)

    consolidated, n_sources = _consolidate(t, fresh_lo, hi, cfg)

    names = [symbol_names[c] for c in t.symbol[lo].tolist()]
    vwap_out = [None if v != v else v for v in vwap.tolist()]  # NaN -> None
    cons_out = [None if v != v else v for v in consolidated.tolist()]
    return [
        WindowAnalytics(s, w0, w1, tw, vw, vol, cp, ns, nt)
        for s, w0, w1, tw, vw, vol, cp, ns, nt in zip(
            names,
            start.tolist(),
            end.tolist(),
            twap.tolist(),
            vwap_out,
            volatility.tolist(),
            cons_out,
            n_sources.tolist(),
            count.tolist(),
            strict=True,
        )
    ]


def _gather(lo: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For windows holding ticks ``lo[w] .. lo[w] + count[w] - 1``: (window of each, index)."""
    total = int(count.sum())
    offsets = np.cumsum(count) - count
    win_of = np.repeat(np.arange(count.size), count)
    idx = np.arange(total, dtype=np.int64) + np.repeat(lo - offsets, count)
    return win_of, idx


def _consolidate(
    t: _Ticks, fresh_lo: np.ndarray, hi: np.ndarray, cfg: WindowConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Median of each window's fresh sources (ticks ``fresh_lo .. hi - 1``) without outliers:
    (price or NaN, sources used)."""
    n_win = fresh_lo.size
    win_of, idx = _gather(fresh_lo, np.maximum(hi - fresh_lo, 0))
    if not idx.size:
        return np.full(n_win, np.nan), np.zeros(n_win, np.int64)
    # Latest tick of each (window, source): ticks are in event-time order within a window, so
    # it is the one at the largest position. Pairs in ascending order are window-major.
    n_src = int(t.source.max()) + 1
    pair = win_of * n_src + t.source[idx]
    latest_of_pair = np.full(n_win * n_src, -1, np.int64)
    np.maximum.at(latest_of_pair, pair, np.arange(idx.size, dtype=np.int64))
    present = np.flatnonzero(latest_of_pair >= 0)
    latest = latest_of_pair[present]
    win = present // n_src  # ascending
    price = t.price[idx[latest]]
    by_price = np.lexsort((price, win))
    win, price = win[by_price], price[by_price]
    median = _grouped_median(win, price, n_win)
    keep = np.abs(price - median[win]) <= cfg.max_deviation * median[win]
    win, price = win[keep], price[keep]
    return _grouped_median(win, price, n_win), np.bincount(win, minlength=n_win)


def _grouped_median(group: np.ndarray, value: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``value`` per group (values sorted within groups, groups ascending); NaN if
    a group is empty."""
    count = np.bincount(group, minlength=n_groups)
    start = np.cumsum(count) - count
    out = np.full(n_groups, np.nan)
    has = count > 0
    s, c = start[has], count[has]
    out[has] = (value[s + (c - 1) // 2] + value[s + c // 2]) / 2
    return out
