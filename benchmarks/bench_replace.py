"""The cost of ``Batch.replace``: what an action pays to hand back a new component array.

Every side makes the same new 64 x 32 float32 array per call (``x + 1.0``); the
baseline stops there, the others also pass it to ``batch.replace``:

- ``temporary``: ``b.replace(x=x + 1.0)``, a fresh array nobody else holds (the common case);
- ``held``: ``y = x + 1.0; b.replace(x=y)``, the caller keeps a name for the array;
- ``temp view``: ``b.replace(x=(x + 1.0).reshape(...))``, a view of a fresh temporary;
- ``held view``: ``y = x + 1.0; b.replace(x=y[:])``, a view of an array the caller holds
  (the one case that must copy).

The two view sides also pay for making the view (about 0.1 us), which the baseline does not.

The sides take turns in rotating order (``_sides.take_turns``); each prints its time per
call (median of rounds) and the extra cost of ``replace`` over the baseline (median of the
per-round differences), with the median per-round ratio.

    python benchmarks/bench_replace.py [--calls 20000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import numpy as np
from _sides import take_turns

from fpipe import Batch

ROWS, FEATURES = 64, 32


class Rows(Batch):
    components = ("x",)


def make_sides(b: Batch, calls: int) -> dict[str, Callable[[], object]]:
    x = b.x  # type: ignore[attr-defined]
    shape = x.shape
    loop = range(calls)

    def baseline() -> None:
        for _ in loop:
            x + 1.0

    def temporary() -> None:
        for _ in loop:
            b.replace(x=x + 1.0)

    def held() -> None:
        for _ in loop:
            y = x + 1.0
            b.replace(x=y)

    def temp_view() -> None:
        for _ in loop:
            b.replace(x=(x + 1.0).reshape(shape))

    def held_view() -> None:
        for _ in loop:
            y = x + 1.0
            b.replace(x=y[:])

    return {
        "numpy op alone": baseline,
        "temporary": temporary,
        "held": held,
        "temp view": temp_view,
        "held view": held_view,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per side per round")
    parser.add_argument("--repeat", type=int, default=15, help="rounds")
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(ROWS, FEATURES)).astype(np.float32)
    b = Rows(np.arange(ROWS), preloaded=(x,))
    sides = make_sides(b, args.calls)
    for side in sides.values():  # warm up (and check that every side runs)
        side()
    times = take_turns(sides, args.repeat)
    base_name = "numpy op alone"
    base = times[base_name]
    per_call = 1e6 / args.calls
    print(f"replace(x=...) on {ROWS} x {FEATURES} float32 batches, {args.calls} calls per round")
    width = max(map(len, times))
    for name, ts in times.items():
        line = f"{name:{width}s}: {statistics.median(ts) * per_call:6.3f} us/call"
        if name != base_name:
            extra = statistics.median((t - t0) * per_call for t, t0 in zip(ts, base, strict=True))
            ratio = statistics.median(t / t0 for t, t0 in zip(ts, base, strict=True))
            line += f"  extra cost of replace: {extra:6.3f} us  (ratio {ratio:.2f})"
        print(line)


if __name__ == "__main__":
    main()
