"""Keras ``fit`` on ``to_tf_dataset()`` against a hand-written ``train_on_batch`` loop.

All sides train the same Keras MLP as ``bench_keras.py`` (64 -> 128 -> 10, Adam) on the
same batches, in the same process: the batches of one fpipe batching plan (``--steps``
batches of 64 from a shuffled 20,000-row preloaded dataset, which spans epochs and so
has a smaller last batch in each).

- ``loop``: ``for ids in batches: net.train_on_batch(x[ids], y[ids])``;
- ``tf.data``: ``fit`` on a hand-written ``tf.data`` pipeline giving those batches
  (``from_tensor_slices`` over the batch bounds, ``tf.gather``, ``prefetch``), the
  best a TensorFlow user would write for these exact batches;
- ``fpipe fast``: ``fit(ds.p.to_tf_dataset(64, ...))``: a pipeline without steps over
  preloaded arrays takes the generator-free path;
- ``fpipe generator``: the same with ``fast=False``: batches made by fpipe's own run
  and handed to tf.data by ``from_generator`` (the path of any pipeline with actions).

Each tf.data.Dataset is made once, as for ``fit(ds, epochs=...)``, and its first pass
is checked to give the loop's batches, element by element; each round of a ``fit``
side is one more pass (one ``fit`` call, its start-up included), which fpipe shuffles
afresh: the same work, in another order. Each side is warmed up (Keras traces its
functions), then the sides take turns ``--repeat`` times in rotating order (see
``_sides.py``); the ratio is against ``loop`` (above 1: faster), from the best rounds
and as the median of per-round ratios.

    python benchmarks/bench_fit.py [--steps 500] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from _sides import report, take_turns
from bench_keras import BATCH, N_CLASSES, N_FEATURES, classification_data, loop, make_net


def hand_written(x: np.ndarray, y: np.ndarray, batches: list[np.ndarray]):
    """A tf.data pipeline giving exactly ``batches`` (of rows of x and y)."""
    import tensorflow as tf

    flat = tf.constant(np.concatenate(batches))
    bounds = np.cumsum([0] + [len(b) for b in batches])
    xt, yt = tf.constant(x), tf.constant(y)

    def gather(start, stop):
        rows = flat[start:stop]
        return tf.gather(xt, rows), tf.gather(yt, rows)

    cuts = tf.data.Dataset.from_tensor_slices((bounds[:-1], bounds[1:]))
    return cuts.map(gather).prefetch(tf.data.AUTOTUNE)


def same_batches(tf_dataset, x: np.ndarray, y: np.ndarray, batches: list[np.ndarray]) -> bool:
    got = list(tf_dataset.as_numpy_iterator())
    return len(got) == len(batches) and all(
        np.array_equal(gx, x[ids]) and np.array_equal(gy, y[ids])
        for (gx, gy), ids in zip(got, batches, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    x, y, ds = classification_data()
    run = {"shuffle": 3, "n_iters": args.steps}
    batches = [b.indices for b in ds.p.gen_batch(BATCH, **run)]

    made = {
        "tf.data": hand_written(x, y, batches),
        "fpipe fast": ds.p.to_tf_dataset(BATCH, **run),
        "fpipe generator": ds.p.to_tf_dataset(BATCH, fast=False, **run),
    }
    for name, tf_dataset in made.items():  # the first pass of each: the loop's batches
        if not same_batches(tf_dataset, x, y, batches):
            raise SystemExit(f"{name} does not give the loop's batches")

    net = make_net()
    sides = {"loop": lambda: loop(net, x, y, batches)}
    for name, tf_dataset in made.items():
        sides[name] = lambda d=tf_dataset: net.fit(d, verbose=0, shuffle=False)
    for side in sides.values():  # warm-up: trace the train functions
        side()
    times = take_turns(sides, args.repeat)
    print(
        f"Keras MLP {N_FEATURES}-128-{N_CLASSES} trained by fit, batches of {BATCH}, "
        f"{args.steps} steps, {args.repeat} rounds; every side sees the loop's batches"
    )
    report(times, args.steps)


if __name__ == "__main__":
    main()
