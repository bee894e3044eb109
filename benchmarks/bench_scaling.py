"""How fpipe's costs scale: with actions, dataset size, pipeline length and runs.

Four measurements, each printed as a table (medians over ``--repeat`` rounds; the sides
of a table take turns in rotating order within each round, see ``_sides.py``):

1. **per batch**: batches of 64 shuffled rows of an N x 32 float32 array, through 1, 10
   and 100 ``add`` actions, for N = 10k, 100k and 1M rows, against a hand-written loop
   doing the same gathers and adds. Start-up is not counted (each side's timer starts
   after its first batch). fpipe's extra cost should grow linearly with the actions and
   not at all with N.
2. **building** a pipeline of n steps, three ways: chaining ``p.add(1.0)``, folding
   ``p = p + step``, and folding ``p = (p + step) << dataset`` (which checked every step
   again at each ``<<`` before). The cost per step should not grow with n.
3. **start-up**: a whole run over a 10-item dataset (one batch, one action), sequential
   and with ``prefetch=2`` (worker threads), and its parts: the plan and the compiled
   program; against the same work by hand.
4. **first batch**: a run's first batch goes step by step (fpipe notes the steps that
   draw from numpy's global generator); its extra cost per step, with the cost of
   compiling the pipeline per step, for pipelines of identity actions.

    python benchmarks/bench_scaling.py [--rows 10000,100000,1000000] [--actions 1,10,100]
        [--batches 200] [--steps 250,1000,4000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sides import take_turns
from bench_overhead import Rows

from fpipe import Dataset, Pipeline
from fpipe.interpreter import compile_program
from fpipe.plan import BatchPlan

N_FEATURES, BATCH, SEED = 32, 64, 0


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def rotate(sides: dict[str, Callable[[], float]], repeat: int) -> dict[str, list[float]]:
    """Like ``take_turns``, for sides that time themselves (they return seconds)."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for r in range(repeat):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            times[name].append(sides[name]())
    return times


def med_us(seconds: list[float], per: float = 1) -> float:
    return statistics.median(seconds) / per * 1e6


# -- 1. per batch ------------------------------------------------------------------------------
def per_batch(rows: list[int], actions: list[int], n_batches: int, repeat: int) -> None:
    sides: dict[str, Callable[[], float]] = {}
    for n in rows:
        x = np.random.default_rng(SEED).normal(size=(n, N_FEATURES)).astype(np.float32)
        ds = Dataset(n, Rows, preloaded=(x,))
        # the loop gathers the very rows fpipe's plan gives (worked out beforehand)
        plan = BatchPlan.make(
            n, BATCH, shuffle=True, n_epochs=None, n_iters=n_batches + 1, seed=SEED
        )
        order = [positions for *_, positions in plan.coordinates()][1:]
        for k in actions:
            pipeline = (Pipeline().add(1.0) * k) << ds
            sides[f"fpipe {n} {k}"] = lambda p=pipeline: fpipe_batches(p, n_batches)
            sides[f"loop {n} {k}"] = lambda x=x, o=order, k=k: loop_batches(x, o, k)
    for side in sides.values():
        side()  # warm up
    times = rotate(sides, repeat)
    print(
        f"## per batch: {BATCH} shuffled rows x {N_FEATURES} float32, us per batch "
        f"(fpipe / hand-written loop / difference), {n_batches} batches, {repeat} rounds"
    )
    print(f"{'actions':>8s}" + "".join(f"{f'{n:,} rows':>28s}" for n in rows))
    extra: dict[tuple[int, int], float] = {}
    for k in actions:
        cells = []
        for n in rows:
            f, b = (
                med_us(times[f"fpipe {n} {k}"], n_batches),
                med_us(times[f"loop {n} {k}"], n_batches),
            )
            extra[n, k] = statistics.median(
                (tf - tb) / n_batches * 1e6
                for tf, tb in zip(times[f"fpipe {n} {k}"], times[f"loop {n} {k}"], strict=True)
            )
            cells.append(f"{f:8.1f} /{b:8.1f} /{extra[n, k]:+7.1f}")
        print(f"{k:8d}" + "".join(f"{c:>28s}" for c in cells))
    if len(actions) > 1:
        lo, hi = actions[0], actions[-1]
        slopes = ", ".join(
            f"{n:,} rows {(extra[n, hi] - extra[n, lo]) / (hi - lo):.2f}" for n in rows
        )
        print(f"fpipe's extra cost per action ({lo} to {hi} actions), us: {slopes}")
    print()


def fpipe_batches(pipeline: Pipeline, n_batches: int) -> float:
    it = pipeline.iterate(BATCH, shuffle=True, seed=SEED, n_epochs=None, n_iters=n_batches + 1)
    next(it).x  # noqa: B018  start-up and the first batch are not counted
    start = time.perf_counter()
    for batch in it:
        batch.x  # noqa: B018  the consumer reads the rows (a batch may gather them lazily)
    return time.perf_counter() - start


def loop_batches(x: np.ndarray, order: list[np.ndarray], k: int) -> float:
    start = time.perf_counter()
    for positions in order:
        rows = x[positions]
        for _ in range(k):
            rows = rows + 1.0
    return time.perf_counter() - start


# -- 2. building -------------------------------------------------------------------------------
def building(steps: list[int], repeat: int) -> None:
    ds = Dataset(10, Rows, preloaded=(np.zeros((10, N_FEATURES), np.float32),))
    step = Pipeline().add(1.0)

    def chain(n: int) -> object:
        p = ds.p
        for _ in range(n):
            p = p.add(1.0)
        return p

    def fold(n: int) -> object:
        p = ds.p
        for _ in range(n):
            p = p + step
        return p

    def relink(n: int) -> object:
        p = ds.p
        for _ in range(n):
            p = (p + step) << ds
        return p

    ways = {"chain p.add(1.0)": chain, "fold p + step": fold, "fold (p + step) << ds": relink}
    sides = {f"{w} {n}": (lambda f=f, n=n: f(n)) for w, f in ways.items() for n in steps}
    times = take_turns(sides, repeat)
    print(f"## building a pipeline of n steps: us per step, {repeat} rounds")
    print(f"{'':24s}" + "".join(f"{f'n = {n:,}':>14s}" for n in steps))
    for w in ways:
        cells = [f"{med_us(times[f'{w} {n}'], n):14.2f}" for n in steps]
        print(f"{w:24s}" + "".join(cells))
    print()


# -- 3. start-up -------------------------------------------------------------------------------
def start_up(repeat: int) -> None:
    x = np.random.default_rng(SEED).normal(size=(10, N_FEATURES)).astype(np.float32)
    ds = Dataset(10, Rows, preloaded=(x,))
    pipeline = Pipeline().add(1.0) << ds
    steps = pipeline.steps
    n_calls = 200

    def many(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> None:
            for _ in range(n_calls):
                fn()

        return run

    def by_hand() -> object:
        return x[np.arange(10)] + 1.0

    sides = {
        "hand-written": many(by_hand),
        "plan": many(lambda: BatchPlan.make(10, 10, shuffle=True, seed=SEED)),
        "compile": many(lambda: compile_program(steps, Rows)),
        "run()": many(lambda: pipeline.run(10, shuffle=True, seed=SEED)),
        "run(prefetch=2)": many(lambda: pipeline.run(10, shuffle=True, seed=SEED, prefetch=2)),
    }
    for side in sides.values():
        side()  # warm up (the first prefetch starts the shared worker threads)
    times = take_turns(sides, repeat)
    print(
        f"## start-up: a run over a 10-item dataset, 1 batch, 1 action; us per call, {repeat} rounds"
    )
    for name, ts in times.items():
        print(
            f"{name:16s}: {med_us(ts, n_calls):8.1f} (range {min(ts) / n_calls * 1e6:.1f} "
            f"to {max(ts) / n_calls * 1e6:.1f})"
        )
    print()


# -- 4. first batch ----------------------------------------------------------------------------
def first_batch(steps: list[int], repeat: int) -> None:
    ds = Dataset(10, Rows, preloaded=(np.zeros((10, N_FEATURES), np.float32),))
    rounds: dict[int, list[tuple[float, float, float]]] = {n: [] for n in steps}
    pipelines = {n: (Pipeline().identity() * n) << ds for n in steps}
    for _ in range(repeat + 1):  # the first round warms up
        for n, pipeline in pipelines.items():
            t0 = time.perf_counter()
            it = pipeline.iterate(5, n_epochs=None, n_iters=3)
            t1 = time.perf_counter()
            next(it)
            t2 = time.perf_counter()
            next(it)
            t3 = time.perf_counter()
            rounds[n].append((t1 - t0, t2 - t1, t3 - t2))
    print(f"## first batch: pipelines of n identity actions, us per step, {repeat} rounds")
    print(f"{'n':>8s}{'compile':>12s}{'first batch':>14s}{'next batch':>14s}{'first extra':>14s}")
    for n in steps:
        r = rounds[n][1:]
        compile_, first, later = (statistics.median(t[i] for t in r) / n * 1e6 for i in range(3))
        extra = statistics.median((t[1] - t[2]) / n * 1e6 for t in r)
        print(f"{n:8d}{compile_:12.2f}{first:14.2f}{later:14.2f}{extra:14.2f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=ints, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--actions", type=ints, default=[1, 10, 100])
    parser.add_argument("--batches", type=int, default=200, help="batches timed per side")
    parser.add_argument("--steps", type=ints, default=[250, 1000, 4000])
    parser.add_argument("--repeat", type=int, default=7, help="rounds")
    args = parser.parse_args()
    per_batch(args.rows, args.actions, args.batches, args.repeat)
    building(args.steps, args.repeat)
    start_up(args.repeat)
    first_batch(args.steps, args.repeat)


if __name__ == "__main__":
    main()
