"""Per-record cost of decoding a batch of market.prices values: columns vs models. No services.

    python bench/columnar_decode.py [--values N] [--repeats R]

Prints one line: µs per value (wall, and CPU of this process) of ``decode_columns`` on its fast
path (a clean batch; on the calling thread, then with pyarrow's threads), ``decode_batch``
(pydantic, one model per value) and ``decode_columns`` on its fallback (the same batch with one
tombstone at the end: pydantic plus the column build), medians of R runs on N values of
``MarketSimulator(seed=1).encoded_price_ticks``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ys_platform.catalog.codec import decode_batch
from ys_platform.catalog.columnar import decode_columns
from ys_platform.sources.simulator import MarketSimulator

TOPIC = "market.prices"


def measure(runs: dict[str, Callable[[], object]], n: int, repeats: int) -> dict[str, Cost]:
    """Median (wall, CPU) µs per value of each run; the runs take turns, so that a machine
    shared with other work slows each of them alike."""
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {
        name: Cost(
            statistics.median(walls[name]) / n * 1e6, statistics.median(cpus[name]) / n * 1e6
        )
        for name in runs
    }


class Cost(NamedTuple):
    wall_us: float
    cpu_us: float

    def __str__(self) -> str:
        return f"{self.wall_us:.2f} ({self.cpu_us:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    values: Sequence[bytes | None] = [
        value for _, value, _ in MarketSimulator(seed=1).encoded_price_ticks(args.values)
    ]
    with_tombstone = [*values, None]
    assert decode_columns(TOPIC, values).fast
    assert not decode_columns(TOPIC, with_tombstone).fast
    n, r = args.values, args.repeats
    costs = measure(
        {
            "fast": lambda: decode_columns(TOPIC, values),
            "threads": lambda: decode_columns(TOPIC, values, threads=True),
            "models": lambda: decode_batch(TOPIC, values),
            "fallback": lambda: decode_columns(TOPIC, with_tombstone),
        },
        n,
        r,
    )
    print(
        f"columnar_decode: {n:,} {TOPIC} values, µs/value wall (cpu), median of {r}: "
        f"decode_columns fast path {costs['fast']}, with threads {costs['threads']} | "
        f"decode_batch {costs['models']} | decode_columns fallback {costs['fallback']} | "
        f"fast path {costs['models'].wall_us / costs['fast'].wall_us:.1f}x decode_batch"
    )


if __name__ == "__main__":
    main()
