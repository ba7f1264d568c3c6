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

from ys_platform.catalog.codec import decode_batch
from ys_platform.catalog.columnar import decode_columns
from ys_platform.sources.simulator import MarketSimulator

TOPIC = "market.prices"


def measure(run: Callable[[], object], n: int, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) µs per value over ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls) / n * 1e6, statistics.median(cpus) / n * 1e6


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
    fast = measure(lambda: decode_columns(TOPIC, values), n, r)
    threads = measure(lambda: decode_columns(TOPIC, values, threads=True), n, r)
    models = measure(lambda: decode_batch(TOPIC, values), n, r)
    fallback = measure(lambda: decode_columns(TOPIC, with_tombstone), n, r)
    print(
        f"columnar_decode: {n:,} {TOPIC} values, µs/value wall (cpu), median of {r}: "
        f"decode_columns fast path {fast[0]:.2f} ({fast[1]:.2f}), "
        f"with threads {threads[0]:.2f} ({threads[1]:.2f}) | "
        f"decode_batch {models[0]:.2f} ({models[1]:.2f}) | "
        f"decode_columns fallback {fallback[0]:.2f} ({fallback[1]:.2f}) | "
        f"fast path {models[0] / fast[0]:.1f}x decode_batch"
    )


if __name__ == "__main__":
    main()
