"""Peak memory of a run: fpipe against hand-written loops, each side in a fresh process.

The workload: a dataset with two components, ``x`` (``--x-cols`` float32 columns, 32 by
default) and ``y`` (``--y-cols``, 256), cut into batches of ``--batch-size`` rows
(50,000); each batch goes through ``--actions`` (10) updates of ``x`` (``x + 1.0``, a new
array each time, as an immutable action makes); ``y`` is never read. The consumer adds
up each batch's ``x``, and every side must give the same checksum.

Sides:

- ``loop``: the floor. A hand-written generator that takes ``x`` as a slice of the
  array (a view), makes the updates and yields ``x``; it never touches ``y``.
- ``loop_xy``: a hand-written loader that copies both components' rows (``X[rows]``,
  ``Y[rows]``), as a loader that does not know which components will be read must; it
  yields ``(x, y)``. Before fpipe gathered components lazily, this was its floor.
- ``fpipe``: ``for batch in pipeline.gen_batch(...)`` (the dataset and the pipeline are
  made before the measurement, as the arrays are for the loops).

Every consumer holds the batch it was given until the next one arrives (as any ``for``
loop does), so each side holds one batch more than it is computing.

Each round runs every side once, each in a fresh child process, in rotating order. A
child builds the arrays (filled in place: no temporaries), runs its side once on a tiny
dataset (imports, first-call caches), prepares the run, then measures it:

- peak RSS growth: the resident set's high-water mark during the run minus the resident
  set before it (Linux: the mark is reset through ``/proc/self/clear_refs``; elsewhere
  ``ru_maxrss``, which only shows a run that exceeds the process's earlier peak);
- tracemalloc peak: the most memory Python and numpy held at once during a second run,
  over what they held before it; exact and repeatable, but blind to the allocator's
  own behaviour (freed memory that is not returned to the system).

Ratios against ``loop`` are medians of the per-round ratios.

    python benchmarks/bench_memory.py [--rounds 5] [--rows 200000] [--batch-size 50000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

SIDES = ("loop", "fpipe", "loop_xy")
MB = 1e6


def make_arrays(rows: int, x_cols: int, y_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y``, filled in place (no whole-array temporaries to raise the peak)."""
    x = np.empty((rows, x_cols), dtype=np.float32)
    y = np.empty((rows, y_cols), dtype=np.float32)
    x[:] = np.arange(x_cols, dtype=np.float32) / x_cols
    x += (np.arange(rows, dtype=np.float32) % 97)[:, None]
    y[:] = np.arange(y_cols, dtype=np.float32)
    return x, y


def loop(x_all: np.ndarray, y_all: np.ndarray, size: int, actions: int) -> Iterator[np.ndarray]:
    for start in range(0, len(x_all), size):
        x = x_all[start : start + size]
        for _ in range(actions):
            x = x + 1.0
        yield x


def loop_xy(
    x_all: np.ndarray, y_all: np.ndarray, size: int, actions: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    order = np.arange(len(x_all))
    for start in range(0, len(x_all), size):
        rows = order[start : start + size]
        x, y = x_all[rows], y_all[rows]
        for _ in range(actions):
            x = x + 1.0
        yield x, y


def fpipe_pipeline(x_all: np.ndarray, y_all: np.ndarray, actions: int) -> Any:
    from fpipe import Batch, Dataset, action

    class XY(Batch):
        components = ("x", "y")

        @action
        def inc(self):
            return self.replace(x=self.x + 1.0)

    pipeline = Dataset(len(x_all), XY, preloaded={"x": x_all, "y": y_all}).p
    for _ in range(actions):
        pipeline = pipeline.inc()
    return pipeline


def prepare(
    side: str, x_all: np.ndarray, y_all: np.ndarray, size: int, actions: int
) -> Callable[[], float]:
    """One run of ``side`` (the sum of every batch's ``x``), ready to call: the dataset
    and the pipeline are made beforehand, as the arrays are for the loops."""
    if side == "fpipe":
        pipeline = fpipe_pipeline(x_all, y_all, actions)

        def run() -> float:
            total = 0.0
            for batch in pipeline.gen_batch(size, n_epochs=1):
                total += float(batch.x.sum(dtype=np.float64))
            return total

    elif side == "loop":

        def run() -> float:
            total = 0.0
            for x in loop(x_all, y_all, size, actions):
                total += float(x.sum(dtype=np.float64))
            return total

    else:

        def run() -> float:
            total = 0.0
            for x, _y in loop_xy(x_all, y_all, size, actions):
                total += float(x.sum(dtype=np.float64))
            return total

    return run


def _status(field: str) -> int:
    """A ``/proc/self/status`` figure in bytes (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_meter() -> tuple[Callable[[], int], Callable[[], int]]:
    """``(start, peak)``: ``start()`` resets the high-water mark and returns the RSS now;
    ``peak()`` returns the high-water mark since."""
    try:
        before = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)

        def start() -> int:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _status("VmRSS")

        if _status("VmHWM") <= before + 4 * 1024 * 1024:  # the reset worked
            return start, lambda: _status("VmHWM")
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux

    def maxrss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    return maxrss, maxrss


def child(side: str, args: argparse.Namespace) -> dict[str, float]:
    x_all, y_all = make_arrays(args.rows, args.x_cols, args.y_cols)
    small = max(2, min(args.batch_size, args.rows) // 100)
    tiny = x_all[: 2 * small].copy(), y_all[: 2 * small].copy()
    prepare(side, *tiny, small, args.actions)()  # imports and first-call caches
    run = prepare(side, x_all, y_all, args.batch_size, args.actions)
    gc.collect()
    start, peak = peak_meter()
    before = start()
    checksum = run()
    rss = peak() - before
    gc.collect()
    tracemalloc.start()
    held, _ = tracemalloc.get_traced_memory()
    again = run()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert again == checksum, (again, checksum)
    return {"rss": rss, "traced": top - held, "checksum": checksum}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--x-cols", type=int, default=32)
    parser.add_argument("--y-cols", type=int, default=256)
    parser.add_argument("--actions", type=int, default=10)
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    batch_mb = args.batch_size * (args.x_cols + args.y_cols) * 4 / MB
    print(
        f"{args.rows} rows: x {args.x_cols} and y {args.y_cols} float32 columns (y never "
        f"read); batches of {args.batch_size} rows ({batch_mb:.1f} MB of x and y), "
        f"{args.actions} actions on x; one fresh process per side and round"
    )
    results: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    flags = [
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in ("rows", "batch_size", "x_cols", "y_cols", "actions")
    ]
    for r in range(args.rounds):
        order = SIDES[r % len(SIDES) :] + SIDES[: r % len(SIDES)]
        for side in order:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), *flags, "--child", side],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[side].append(json.loads(out.strip().splitlines()[-1]))
        line = ", ".join(f"{side} {results[side][-1]['rss'] / MB:.1f}" for side in SIDES)
        print(f"round {r + 1}: peak RSS growth (MB): {line}")
    width = max(map(len, SIDES))
    for side in SIDES:
        rss = [res["rss"] / MB for res in results[side]]
        traced = [res["traced"] / MB for res in results[side]]
        print(
            f"{side:{width}s}: peak RSS growth {statistics.median(rss):7.1f} MB "
            f"({min(rss):.1f}-{max(rss):.1f}), tracemalloc peak "
            f"{statistics.median(traced):7.1f} MB"
        )
    for base in ("loop", "loop_xy"):
        for metric in ("rss", "traced"):
            what = "peak RSS growth" if metric == "rss" else "tracemalloc peak"
            ratios = [
                res[metric] / ref[metric]
                for res, ref in zip(results["fpipe"], results[base], strict=True)
                if ref[metric] > 0  # a tiny run may not move the RSS at all
            ]
            figure = (
                f"{statistics.median(ratios):.3f} (median of rounds; "
                f"{min(ratios):.3f}-{max(ratios):.3f})"
                if ratios
                else "n/a (no growth to compare with)"
            )
            print(f"ratio fpipe/{base}, {what}: {figure}")
    sums = {res["checksum"] for side in SIDES for res in results[side]}
    print("checksums identical" if len(sums) == 1 else f"checksums differ: {sorted(sums)}")


if __name__ == "__main__":
    main()
