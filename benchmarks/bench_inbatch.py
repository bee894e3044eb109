"""In-batch parallelism: per-item Python augmentation through ``@inbatch_parallel``.

Every side augments the same 28 x 28 float32 images (5,000 by default), one item at a
time, with the same function (flip, two rolls, contrast, a blur, a cut-out and a clip:
about 20-25 us of numpy calls on small arrays per item, which hold the GIL for most of
their time), in batches of 100, and stacks the results:

- ``loop``: the baseline, a hand-written loop over the batches and their items;
- ``action loop``: a plain ``@action`` with that loop inside;
- ``inbatch for``: ``@inbatch_parallel(init="items", target="for")``;
- ``inbatch threads``: the same method with ``target="threads"`` (the run's thread pool);
- ``inbatch auto``: the same method with ``target="auto"``.

The sides take turns in rotating order (``_sides.take_turns``); each prints its time per
item (median of rounds), its time as a multiple of the baseline's (median of per-round
ratios: above 1 is slower) and its overhead per item over the baseline (median of
per-round differences). Every side's output is checked against the baseline's.

    python benchmarks/bench_inbatch.py [--items 5000] [--batch-size 100] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
from _sides import take_turns

from fpipe import Batch, Dataset, Pipeline, action, inbatch_parallel

SIDE = 28


def augment(image: np.ndarray, label: Any) -> np.ndarray:
    """The per-item work: a few small numpy calls whose parameters depend on the label."""
    k = int(label)
    img = image[:, ::-1] if k & 1 else image
    img = np.roll(img, k % 5 - 2, axis=1)
    img = np.roll(img, k % 3 - 1, axis=0)
    img = (img - img.mean()) * np.float32(1.2) + np.float32(0.5)
    img[1:-1] = (img[:-2] + img[1:-1] + img[2:]) * np.float32(1 / 3)
    r, c = 3 * (k % 7), 2 * (k % 11)
    img[r : r + 6, c : c + 6] = 0.0
    return np.clip(img, 0.0, 1.0, out=img)


class Digits(Batch):
    components = ("images", "labels")

    @action
    def augment_loop(self) -> Digits:
        out = [augment(img, lab) for img, lab in zip(self.images, self.labels, strict=True)]
        return self.replace(images=np.stack(out))  # type: ignore[return-value]

    @action
    @inbatch_parallel(init="items", post="_stack", target="for")
    def augment_for(self, item: Any) -> np.ndarray:
        return augment(item.images, item.labels)

    @action
    @inbatch_parallel(init="items", post="_stack", target="threads")
    def augment_threads(self, item: Any) -> np.ndarray:
        return augment(item.images, item.labels)

    @action
    @inbatch_parallel(init="items", post="_stack", target="auto")
    def augment_auto(self, item: Any) -> np.ndarray:
        return augment(item.images, item.labels)

    def _stack(self, results: list[np.ndarray]) -> Digits:
        return self.replace(images=np.stack(results))  # type: ignore[return-value]


def make_sides(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> dict[str, Callable[[], float]]:
    ds = Dataset(len(images), Digits, preloaded=(images, labels))
    n = len(images)

    def loop() -> float:
        total = 0.0
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(start + batch_size, n))  # a gather, as a dataset does
            imgs, labs = images[rows], labels[rows]
            out = np.stack([augment(img, lab) for img, lab in zip(imgs, labs, strict=True)])
            total += float(out[:, 0, 0].sum())
        return total

    def through(pipeline: Pipeline) -> Callable[[], float]:
        linked = pipeline << ds

        def side() -> float:
            return sum(float(b.images[:, 0, 0].sum()) for b in linked.gen_batch(batch_size))

        return side

    return {
        "loop": loop,
        "action loop": through(Pipeline().augment_loop()),
        "inbatch for": through(Pipeline().augment_for()),
        "inbatch threads": through(Pipeline().augment_threads()),
        "inbatch auto": through(Pipeline().augment_auto()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15, help="rounds")
    args = parser.parse_args()
    gen = np.random.default_rng(0)
    images = gen.random((args.items, SIDE, SIDE), dtype=np.float32)
    labels = gen.integers(0, 10, args.items)
    sides = make_sides(images, labels, args.batch_size)
    expected = sides["loop"]()
    for name, side in sides.items():  # warm up, and check that every side does the same
        got = side()
        if not np.isclose(got, expected, rtol=1e-6):
            raise SystemExit(f"{name} gives checksum {got}, the loop {expected}")
    times = take_turns(dict(sides), args.repeat)
    base = times["loop"]
    per_item = 1e6 / args.items
    print(
        f"{args.items} items of {SIDE} x {SIDE} float32 in batches of {args.batch_size}, "
        f"{args.repeat} rounds; checksums agree"
    )
    width = max(map(len, times))
    for name, ts in times.items():
        line = f"{name:{width}s}: {statistics.median(ts) * per_item:7.2f} us/item"
        if name != "loop":
            ratio = statistics.median(t / t0 for t, t0 in zip(ts, base, strict=True))
            extra = statistics.median((t - t0) * per_item for t, t0 in zip(ts, base, strict=True))
            line += f"  time x loop: {ratio:5.2f}  overhead: {extra:6.2f} us/item"
        print(line)


if __name__ == "__main__":
    main()
