"""A CPU-heavy pure pipeline run sequentially, on threads, on processes and on Dask.

Each item is made from its id (a 64 x 64 matrix; no data is shipped), then goes through
a few matrix products, a 2-D FFT and a random crop drawn from the batch's own stream, and
comes out as a 32 x 32 float32 map. Every step is pure, so with an executor the whole
pipeline runs on the workers and the driver only collects batches in order.

The same run is timed four ways, in one process, one after the other:

- ``sequential``: ``prefetch=0``, everything on the driver;
- ``threads``: ``prefetch=2`` (two worker threads of the driver);
- ``processes``: ``executor=ProcessExecutor(2)`` (two spawned processes);
- ``dask``: a ``distributed.Client`` on a 2-worker ``LocalCluster`` (loopback only).

Times are wall-clock for the whole run, start-up included (process spawn, sending the
pipeline); the Dask cluster itself is started before timing. ``first batch`` is the
time to the first output batch, mostly start-up; the figures "after the first batch"
leave it out (steady state). All outputs must be identical to the sequential run's.
BLAS is limited to one thread per process so that the executors, not BLAS, use the cores.

    python benchmarks/bench_executors.py [--batches 96] [--batch-size 16] [--rounds 3] [--no-dask]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402

import numpy as np  # noqa: E402

from fpipe import Batch, Dataset, Pipeline, ProcessExecutor, ThreadExecutor, action  # noqa: E402
from fpipe.testing import local_dask_client  # noqa: E402

SIZE, OUT, ROUNDS = 64, 32, 3


class BenchExecItems(Batch):
    components = ("x",)

    @action
    def load(self):
        """Make each item from its id, as a file loader would read it."""
        x = np.stack(
            [np.random.default_rng(int(i)).normal(size=(SIZE, SIZE)) for i in self.indices]
        )
        return self.replace(x=x)

    @action
    def transform(self, rounds):
        """A few matrix products and a 2-D FFT per item."""
        out = []
        for x in self.x:
            for _ in range(rounds):
                x = np.tanh(x @ x.T / SIZE + x)
                x = np.abs(np.fft.ifft2(np.fft.fft2(x) * np.exp(-np.abs(x)))).real
            out.append(x)
        return self.replace(x=np.stack(out))

    @action
    def crop(self):
        """A random crop per item, from the batch's reproducible random stream."""
        starts = self.random.integers(0, SIZE - OUT + 1, size=(len(self), 2))
        x = np.stack(
            [a[r : r + OUT, c : c + OUT] for a, (r, c) in zip(self.x, starts, strict=True)]
        )
        return self.replace(x=x.astype(np.float32))


def timed(pipeline: Pipeline, batch_size: int, **kwargs) -> tuple[float, float, list[np.ndarray]]:
    outputs = []
    t0 = time.perf_counter()
    first = 0.0
    for batch in pipeline.gen_batch(batch_size, seed=0, **kwargs):
        if not outputs:
            first = time.perf_counter() - t0
        outputs.append(np.asarray(batch.x))
    return time.perf_counter() - t0, first, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="work per item (default 3)")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask cluster")
    args = parser.parse_args()

    n = args.batches * args.batch_size
    pipeline = Pipeline().load().transform(args.rounds).crop() << Dataset(n, BenchExecItems)
    modes: list[tuple[str, dict]] = [
        ("sequential", {"prefetch": 0}),
        ("threads", {"executor": ThreadExecutor(2)}),
        ("processes", {"executor": ProcessExecutor(2)}),
    ]
    with ExitStack() as stack:
        if not args.no_dask:
            if importlib.util.find_spec("distributed") is None:
                print("dask.distributed is not installed: skipping the Dask run")
            else:
                t = time.perf_counter()
                client = stack.enter_context(local_dask_client(n_workers=2))
                took = time.perf_counter() - t
                print(f"(Dask LocalCluster with 2 workers started in {took:.2f} s)")
                modes.append(("dask", {"executor": client}))
        compare(pipeline, modes, args)


def compare(pipeline: Pipeline, modes: list[tuple[str, dict]], args: argparse.Namespace) -> None:
    """Time ``pipeline`` in each mode and print the figures (outputs must be identical)."""

    print(
        f"{args.batches} batches of {args.batch_size} items ({SIZE}x{SIZE} float64, "
        f"{args.rounds} rounds of matmul + FFT each), {os.cpu_count()} CPUs"
    )
    timed(pipeline, args.batch_size, n_iters=1)  # warm-up: imports, caches
    reference = None
    base = steady_base = 0.0
    for name, kwargs in modes:
        total, first, outputs = timed(pipeline, args.batch_size, **kwargs)
        steady = (len(outputs) - 1) / max(total - first, 1e-9)  # batches/s after the first
        if reference is None:
            reference, base, steady_base = outputs, total, steady
        identical = len(outputs) == len(reference) and all(
            a.tobytes() == b.tobytes() for a, b in zip(outputs, reference, strict=True)
        )
        if not identical:
            raise SystemExit(f"[{name}] outputs differ from the sequential run")
        print(
            f"[{name:10s}] {len(outputs) / total:7.1f} batches/s  "
            f"{total / len(outputs) * 1e3:6.1f} ms/batch  first batch {first * 1e3:6.0f} ms  "
            f"speed-up {base / total:4.2f}x  | after the first batch {steady:7.1f} batches/s, "
            f"speed-up {steady / steady_base:4.2f}x  | outputs identical"
        )


if __name__ == "__main__":
    main()
