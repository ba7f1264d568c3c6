"""The fast path of ``market.prices``: ticks written straight to the codec's JSON bytes.

A ``%``-template per (symbol, feed) holds everything a tick of that feed says about itself; a
chunk of ticks then costs one string format per tick, several times faster than building and
encoding models. The bytes are exactly what ``codec.encode`` writes for the same tick (pinned by
``tests/unit/test_simulator.py`` and the golden digests).
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence

import numpy as np

from ys_platform.sources.simulator.prices import Ticks
from ys_platform.sources.simulator.reference import CEX, DEX


class TickEncoder:
    """Encodes :class:`Ticks` of one price engine as ``(key, value, timestamp_ms)`` records."""

    def __init__(
        self,
        symbols: Sequence[str],
        tick_fields: Sequence[Sequence[Mapping[str, str]]],
        feed_kinds: Sequence[int],
    ) -> None:
        self._templates = [
            [json_template(fields, feed_kinds[f]) for f, fields in enumerate(row)]
            for row in tick_fields
        ]
        self._keys = [symbol.encode() for symbol in symbols]
        self._kinds = list(feed_kinds)

    def encode(self, ticks: Ticks) -> list[tuple[bytes, bytes, int]]:
        templates = self._templates
        keys = self._keys
        kinds = self._kinds
        stamps = np.datetime_as_string(ticks.ts.astype("datetime64[ms]"), unit="ms").tolist()
        prices = json_floats(ticks.price)
        volumes = json_floats(ticks.volume)
        bases = json_floats(ticks.reserve_base)
        quotes = json_floats(ticks.reserve_quote)
        liquidity = json_floats(ticks.liquidity)
        out: list[tuple[bytes, bytes, int]] = []
        append = out.append
        gc_was_enabled = gc.isenabled()
        gc.disable()  # as in PriceEngine.models: the tuples are acyclic, rescanning them is waste
        try:
            for i, (at, s, f) in enumerate(
                zip(ticks.ts.tolist(), ticks.symbol.tolist(), ticks.feed.tolist(), strict=True)
            ):
                kind = kinds[f]
                if kind == DEX:
                    args = (prices[i], bases[i], quotes[i], liquidity[i], stamps[i])
                elif kind == CEX:
                    args = (prices[i], volumes[i], stamps[i])
                else:
                    args = (prices[i], stamps[i])
                append((keys[s], (templates[s][f] % args).encode(), at))
        finally:
            if gc_was_enabled:
                gc.enable()
        return out


def json_template(fields: Mapping[str, str], kind: int) -> str:
    """A ``%``-template of the JSON ``codec.encode`` writes for a tick of this (symbol, feed)."""
    symbol, base, quote = fields["symbol"], fields["base"], fields["quote"]
    source, chain, venue = fields["source"], fields["chain"], fields["venue"]
    volume, reserves = "null", '"reserve_base":null,"reserve_quote":null,"liquidity_usd":null'
    if kind == CEX:
        volume = "%s"
    elif kind == DEX:
        reserves = '"reserve_base":%s,"reserve_quote":%s,"liquidity_usd":%s'
    return (
        f'{{"symbol":"{symbol}","base":"{base}","quote":"{quote}","price":%s,"volume":{volume},'
        f'"source":"{source}","chain":"{chain}","venue":"{venue}",{reserves},"ts":"%sZ"}}'
    )


def json_float(value: float) -> str:
    """A float as pydantic-core writes it: Python's repr, except that values in [1e-5, 1e-4) are
    written in decimal (``0.00001``) and smaller exponents carry no leading zero (``1e-7``)."""
    text = repr(value)
    if "e-" not in text:
        return text
    mantissa, exponent = text.split("e-")
    power = int(exponent)
    if power <= 5:
        return "0." + "0" * (power - 1) + mantissa.replace(".", "")
    return f"{mantissa}e-{power}"


def json_floats(values: np.ndarray) -> list[str]:
    floats = values.tolist()
    # repr is already exact for every finite value in [1e-4, 1e16): the common case.
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 1e-4 or finite.max() >= 1e16):
        return [json_float(v) for v in floats]
    return list(map(repr, floats))
