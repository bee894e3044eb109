"""Prefetch (worker threads) against a plain sequential loop on GIL-releasing numpy work.

Each batch holds 16 items of a preloaded 2,048 x 96 x 96 float32 array and goes through
three pure actions whose numpy calls release the GIL (an affine map, a matrix product
per item, ``tanh``); the consumer only reads one number of each batch and, like the
loop, keeps nothing while the next batch is made. Sides, in one
process, all on the same batches (the ids of one fpipe batching plan):

- ``loop``: the plain sequential loop, ``x[ids]`` then the three numpy steps;
- ``pool(2)``: the same steps, hand-written on a 2-thread ``ThreadPoolExecutor``
  (``pool.map`` over the batches, in order);
- ``fpipe``: the pipeline with ``prefetch=0`` (everything on the driver);
- ``fpipe prefetch=2`` and ``fpipe prefetch=4``: the pure actions on worker threads.

Malloc: numpy's temporaries here (0.5-1 MB) are above glibc's mmap threshold, so each one
is mapped and unmapped, and every page of it faults on first touch. Page faults take the
kernel's mm lock, so the plain loop pays them on its one thread while the threaded sides
overlap them with work, which flatters threads. The script therefore runs itself with
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set to 256 MB (temporaries are
reused from the heap, nothing is returned to the kernel between batches) unless they are
already set; ``--default-malloc`` keeps glibc's defaults. BLAS is limited to one thread.

The sides take turns in rotating order (see ``_sides.py``); the ratio is against ``loop``
(above 1: faster than the loop), from the best rounds and as the median of per-round
ratios. Every side's checksum must match the loop's.

    python benchmarks/bench_prefetch.py [--batches 200] [--repeat 7] [--default-malloc]
"""

from __future__ import annotations

import os
import sys

MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}

if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    if "--default-malloc" not in sys.argv and not all(v in os.environ for v in MALLOC_TUNING):
        # glibc reads these once, at start-up: run this script again with them set
        env = {**MALLOC_TUNING, **os.environ}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

import argparse  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402
from _sides import report, take_turns  # noqa: E402

from fpipe import Batch, Dataset, Pipeline, action  # noqa: E402

N_ITEMS, SIDE, BATCH = 2048, 96, 16
WEIGHTS = np.random.default_rng(1).normal(size=(SIDE, SIDE)).astype("float32") / SIDE


def affine(x: np.ndarray) -> np.ndarray:
    return x * np.float32(0.5) + np.float32(1.0)


def mix(x: np.ndarray) -> np.ndarray:
    return x @ WEIGHTS


def squash(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


class Images(Batch):
    components = ("x",)

    @action
    def affine(self):
        return self.replace(x=affine(self.x))

    @action
    def mix(self):
        return self.replace(x=mix(self.x))

    @action
    def squash(self):
        return self.replace(x=squash(self.x))


def one_batch(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return squash(mix(affine(x[ids])))


def loop(x: np.ndarray, batches: list[np.ndarray]) -> float:
    total = 0.0
    for ids in batches:
        total += float(one_batch(x, ids)[0, 0, 0])
    return total


def pool(x: np.ndarray, batches: list[np.ndarray]) -> float:
    with ThreadPoolExecutor(2) as workers:
        return sum(float(b[0, 0, 0]) for b in workers.map(lambda ids: one_batch(x, ids), batches))


def through_fpipe(pipeline: Pipeline, batches: int, prefetch: int) -> float:
    total = 0.0
    for b in pipeline.gen_batch(BATCH, shuffle=3, n_iters=batches, prefetch=prefetch):
        total += float(b.x[0, 0, 0])
        del b  # as the loop, keep no batch while the next one is made
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's defaults")
    args = parser.parse_args()

    x = np.random.default_rng(0).normal(size=(N_ITEMS, SIDE, SIDE)).astype("float32")
    ds = Dataset(N_ITEMS, Images, preloaded=x)
    batches = [b.indices for b in ds.p.gen_batch(BATCH, shuffle=3, n_iters=args.batches)]
    pipeline = ds.p.affine().mix().squash()

    sides = {
        "loop": lambda: loop(x, batches),
        "pool(2)": lambda: pool(x, batches),
        "fpipe": lambda: through_fpipe(pipeline, args.batches, 0),
        "fpipe prefetch=2": lambda: through_fpipe(pipeline, args.batches, 2),
        "fpipe prefetch=4": lambda: through_fpipe(pipeline, args.batches, 4),
    }
    checksums = {name: side() for name, side in sides.items()}  # also the warm-up
    wrong = [name for name, c in checksums.items() if c != checksums["loop"]]
    if wrong:
        raise SystemExit(f"checksums differ from the loop's: {', '.join(wrong)}")
    malloc = ", ".join(f"{v}={os.environ.get(v, 'default')}" for v in MALLOC_TUNING)
    print(
        f"{len(sides) - 1} sides against the loop: {BATCH} items of {SIDE}x{SIDE} float32 "
        f"a batch, 3 numpy actions, {args.batches} batches, {args.repeat} rounds, "
        f"{os.cpu_count()} cores; malloc: {malloc}; checksums identical"
    )
    report(take_turns(sides, args.repeat), args.batches)


if __name__ == "__main__":
    main()
