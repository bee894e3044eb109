"""What a named-expression argument costs per batch: a step with N expression arguments
against the same step with N plain ones, in one process.

Batches of 64 rows of a 20,000 x 8 float32 array; one action ``take(self, *values)``
that returns its batch, called with N = 10 arguments. Sides, one pass over the data each,
taking turns in rotating order (``_sides.py``):

- ``plain``: ``take(1.0, 2.0, ...)``, constants (the baseline);
- ``C``: ``take(C("k0"), C("k1"), ...)``, config values;
- ``B``: ``take(B("x"), ...)``, the batch's component;
- ``I``: ``take(I("iteration"), ...)``, the batch's position;
- ``V``: ``take(V("v0"), ...)``, variables (the step is effectful);
- ``C * 2``: ``take(C("k0") * 2, ...)``, an operator node over a leaf.

Each figure comes from sides that ran back to back within a round, as the median over
the rounds (with its range): per expression argument per batch, (side - plain) / N per
batch, and the ratio side / plain. The headline line gives the costliest kind.

    python benchmarks/bench_expressions.py [--repeat 15] [--rows 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sides import consume, spread, take_turns

from fpipe import B, Batch, C, Dataset, I, Pipeline, V, action

BATCH, N_FEATURES, N_ARGS = 64, 8, 10


class Cols(Batch):
    components = ("x",)

    @action
    def take(self, *values):
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="rounds (each side once a round)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the dataset")
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(args.rows, N_FEATURES)).astype(np.float32)
    ds = Dataset(args.rows, Cols, preloaded=(x,))
    keys = [f"k{i}" for i in range(N_ARGS)]
    config = {k: float(i) for i, k in enumerate(keys)}
    variables = Pipeline()
    for i in range(N_ARGS):
        variables = variables.init_variable(f"v{i}", float(i))
    pipelines = {
        "plain": Pipeline().take(*config.values()),
        "C": Pipeline().take(*map(C, keys)),
        "B": Pipeline().take(*[B("x")] * N_ARGS),
        "I": Pipeline().take(*[I("iteration")] * N_ARGS),
        "V": variables.take(*(V(f"v{i}") for i in range(N_ARGS))),
        "C * 2": Pipeline().take(*(C(k) * 2 for k in keys)),
    }
    linked = {name: (p << config) << ds for name, p in pipelines.items()}
    n_batches = consume(linked["plain"], BATCH)
    assert all(consume(p, BATCH) == n_batches for p in linked.values())  # and warms up
    sides: dict[str, Callable[[], object]] = {
        name: (lambda p=p: consume(p, BATCH)) for name, p in linked.items()
    }
    times = take_turns(sides, args.repeat)
    per = {name: [t / n_batches * 1e6 for t in ts] for name, ts in times.items()}  # us/batch
    rounds = range(args.repeat)
    print(
        f"batches of {BATCH} x {N_FEATURES} float32 from {args.rows} rows ({n_batches} a pass), "
        f"one action with {N_ARGS} arguments; {args.repeat} rounds, sides in rotating order"
    )
    width = max(map(len, per))
    for name, values in per.items():
        print(f"{name:{width}s}: {spread(values, digits=2)} per batch")
    costs = {}
    for name in per:
        if name == "plain":
            continue
        extra = [(per[name][r] - per["plain"][r]) / N_ARGS for r in rounds]
        ratio = [per[name][r] / per["plain"][r] for r in rounds]
        costs[name] = statistics.median(extra)
        print(
            f"[{name}] per expression argument per batch: {spread(extra, digits=3)}; ratio "
            f"{name}/plain: {spread(ratio, unit='')} (median of rounds)"
        )
    worst = max(costs, key=costs.__getitem__)
    print(f"per expression argument per batch: {costs[worst]:.3f} us (the costliest kind, {worst})")


if __name__ == "__main__":
    main()
