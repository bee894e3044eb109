"""Framework overhead per action per batch: fpipe against a hand-written numpy loop.

Both sides do the same work: batches of 64 rows of a 50,000 x 32 float32 array and
10 trivial actions per batch, in two variants:

- ``add``: each action adds a constant (a new array each time, as an immutable action
  must) and returns ``self.replace(x=...)``; the baseline adds the constant in a loop.
- ``identity``: each action returns ``self``; the baseline only slices the rows. This
  is the pure cost of dispatching a step.

The difference in time per batch, divided by 10, is fpipe's overhead per action per
batch. Times are the best of ``--repeat`` runs.

    python benchmarks/bench_overhead.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fpipe import Batch, Dataset, Pipeline, action

N_ITEMS, N_FEATURES, BATCH, N_ACTIONS = 50_000, 32, 64, 10


class Rows(Batch):
    components = ("x",)

    @action
    def add(self, k):
        return self.replace(x=self.x + k)

    @action
    def identity(self):
        return self


def baseline(x: np.ndarray, work: bool) -> int:
    n = 0
    for start in range(0, len(x), BATCH):
        rows = x[np.arange(start, min(start + BATCH, len(x)))]
        if work:
            for _ in range(N_ACTIONS):
                rows = rows + 1.0
        n += 1
    return n


def with_fpipe(pipeline: Pipeline) -> int:
    n = 0
    for _ in pipeline.gen_batch(BATCH):
        n += 1
    return n


def best_time(fn, *args, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(N_ITEMS, N_FEATURES)).astype(np.float32)
    ds = Dataset(N_ITEMS, Rows, preloaded=(x,))
    print(
        f"batches of {BATCH} x {N_FEATURES} float32 from {N_ITEMS} rows, {N_ACTIONS} actions each"
    )
    for name, step, work in (
        ("add", Pipeline().add(1.0), True),
        ("identity", Pipeline().identity(), False),
    ):
        pipeline = (step * N_ACTIONS) << ds
        n_batches = baseline(x, work)
        assert with_fpipe(pipeline) == n_batches
        b_best, b_med = best_time(baseline, x, work, repeat=args.repeat)
        f_best, f_med = best_time(with_fpipe, pipeline, repeat=args.repeat)
        per_b, per_f = b_best / n_batches * 1e6, f_best / n_batches * 1e6
        print(
            f"[{name}] hand-written loop: {per_b:7.1f} us/batch (median {b_med / n_batches * 1e6:.1f})"
        )
        print(
            f"[{name}] fpipe pipeline   : {per_f:7.1f} us/batch (median {f_med / n_batches * 1e6:.1f})"
        )
        print(f"[{name}] ratio fpipe/loop : {per_f / per_b:7.2f}")
        print(f"[{name}] overhead per action per batch: {(per_f - per_b) / N_ACTIONS:.2f} us")


if __name__ == "__main__":
    main()
