"""The cost of a resume state's fingerprint on a large preloaded dataset.

A state's fingerprint digests the dataset's ids and preloaded arrays. It is computed
only when a state is taken (``get_state()``) or checked (``state=``), once per array
object: this script builds a dataset of ``--gb`` GB of float64 features, then times

- ``first``: the first ``get_state()`` of a run (the arrays are hashed);
- ``again``: ``get_state()`` on a new run of the same dataset (the digests are kept);
- ``no state``: iterating without asking for a state (nothing is hashed).

    python benchmarks/bench_fingerprint.py [--gb 1.0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fpipe import Batch, Dataset


class Rows(Batch):
    components = ("x",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the preloaded array")
    args = parser.parse_args()
    features = 128
    rows = max(1, int(args.gb * 2**30 / 8 / features))
    x = np.ones((rows, features))
    ds = Dataset(rows, Rows, preloaded={"x": x})
    size = (x.nbytes + ds.indices.nbytes) / 2**30

    def first_state() -> float:
        with ds.p.iterate(256) as it:
            next(it)
            start = time.perf_counter()
            it.get_state()
            return time.perf_counter() - start

    first = first_state()
    again = first_state()
    start = time.perf_counter()
    with ds.p.iterate(256) as it:
        next(it)
    none = time.perf_counter() - start
    print(f"dataset: {size:.2f} GB hashed (preloaded array and ids)")
    print(f"first  : {first:.3f} s ({first / size:.2f} s per GB)")
    print(f"again  : {again * 1e3:.3f} ms")
    print(f"no state: {none * 1e3:.3f} ms for a run's first batch")


if __name__ == "__main__":
    main()
