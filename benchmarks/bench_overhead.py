"""Framework overhead per action and per batch: fpipe against a hand-written numpy loop.

W1: batches of 64 rows of a 50,000 x 32 float32 array, 10 trivial actions per batch.
Five sides, one pass over the data each, taking turns in rotating order (``_sides.py``):

- ``loop``: the hand-written loop only gathers each batch's rows (every side hands the
  rows to its consumer: fpipe's consumer reads ``batch.x``);
- ``loop add``: it also adds a constant 10 times (a new array each time);
- ``fpipe``: a pipeline without actions (making batches: the fixed cost);
- ``fpipe identity``: 10 actions that return ``self`` (the pure cost of dispatching a step);
- ``fpipe add``: 10 actions returning ``self.replace(x=self.x + k)``;
- ``fpipe add C``: the same with ``k=C("k")``, a named expression read from the config.

Every figure is computed within a round, from sides that ran back to back, and given as
the median over the rounds with its range:

- fixed per batch: ``fpipe`` minus ``loop``;
- marginal per ``add`` action: (``fpipe add`` minus ``loop add``) minus the fixed cost,
  over 10: what one more action adds beyond its numpy op;
- marginal per ``identity`` action: (``fpipe identity`` minus ``fpipe``) over 10;
- per named-expression argument: (``fpipe add C`` minus ``fpipe add``) over 10.

    python benchmarks/bench_overhead.py [--repeat 15]
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

from fpipe import Batch, C, Dataset, Pipeline, action

N_ITEMS, N_FEATURES, BATCH, N_ACTIONS = 50_000, 32, 64, 10


class Rows(Batch):
    components = ("x",)

    @action
    def add(self, k):
        return self.replace(x=self.x + k)

    @action
    def identity(self):
        return self


def baseline(x: np.ndarray, n_actions: int) -> int:
    n = 0
    for start in range(0, len(x), BATCH):
        rows = x[np.arange(start, min(start + BATCH, len(x)))]
        for _ in range(n_actions):
            rows = rows + 1.0
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="rounds (each side once a round)")
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(N_ITEMS, N_FEATURES)).astype(np.float32)
    ds = Dataset(N_ITEMS, Rows, preloaded=(x,))
    pipelines = {
        "fpipe": Pipeline() << ds,
        "fpipe identity": (Pipeline().identity() * N_ACTIONS) << ds,
        "fpipe add": (Pipeline().add(1.0) * N_ACTIONS) << ds,
        "fpipe add C": (Pipeline({"k": 1.0}).add(C("k")) * N_ACTIONS) << ds,
    }
    n_batches = baseline(x, 0)
    assert all(consume(p, BATCH) == n_batches for p in pipelines.values())  # and warms up
    sides: dict[str, Callable[[], object]] = {
        "loop": lambda: baseline(x, 0),
        "loop add": lambda: baseline(x, N_ACTIONS),
    }
    sides.update({name: (lambda p=p: consume(p, BATCH)) for name, p in pipelines.items()})
    times = take_turns(sides, args.repeat)
    per = {name: [t / n_batches * 1e6 for t in ts] for name, ts in times.items()}  # us/batch
    rounds = range(args.repeat)
    fixed = [per["fpipe"][r] - per["loop"][r] for r in rounds]
    add = [(per["fpipe add"][r] - per["loop add"][r] - fixed[r]) / N_ACTIONS for r in rounds]
    ident = [(per["fpipe identity"][r] - per["fpipe"][r]) / N_ACTIONS for r in rounds]
    expr = [(per["fpipe add C"][r] - per["fpipe add"][r]) / N_ACTIONS for r in rounds]
    ratio = [per["fpipe add"][r] / per["loop add"][r] for r in rounds]

    print(
        f"batches of {BATCH} x {N_FEATURES} float32 from {N_ITEMS} rows ({n_batches} a pass), "
        f"{N_ACTIONS} actions each; {args.repeat} rounds, sides in rotating order"
    )
    width = max(map(len, per))
    for name, values in per.items():
        print(f"{name:{width}s}: {spread(values, width=6)} per batch")
    print(f"[fixed] overhead per batch: {spread(fixed, width=6)}")
    print(f"[add] overhead per action per batch: {spread(add, width=6)}")
    print(f"[identity] overhead per action per batch: {spread(ident, width=6)}")
    print(f"[expression] overhead per argument per batch: {spread(expr, width=6)}")
    print(
        f"ratio fpipe add/loop add: {statistics.median(ratio):.3f} (median of rounds, "
        f"range {min(ratio):.3f} to {max(ratio):.3f})"
    )


if __name__ == "__main__":
    main()
