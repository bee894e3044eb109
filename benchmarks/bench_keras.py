"""Keras training through fpipe against a hand-written ``train_on_batch`` loop.

Both sides train the same Keras MLP (64 -> 128 -> 10, Adam) on the same batches (the
batch ids come from one fpipe batching plan) in the same process:

- ``loop``: ``for ids in batches: net.train_on_batch(x[ids], y[ids])``, where ``net``
  is the pipeline's own static model (both sides train the same Keras object);
- ``fpipe``: a pipeline whose one action, ``@action(model=..., use_lock=...)``, calls
  ``train_on_batch`` on each batch of a static model; run with ``prefetch=0`` and with
  ``prefetch=2`` (the first step needs the driver, so both make the batches on the
  driver, several in a row, before their steps: see docs/scaling.md).

Each side is warmed up first (Keras traces its train function), then the sides take
turns ``--repeat`` times in rotating order (see ``_sides.py``). Each side's best round
gives its steps/s; the ratio fpipe/loop (1.0 means no overhead) is printed from the
best rounds and as the median of the per-round ratios.

A Keras step takes about a millisecond and varies by more than fpipe's cost on a shared
machine, so the script then measures that cost alone: the same loop and pipelines with a
model whose ``train_on_batch`` does nothing (``--null-steps`` batches a round), as
microseconds per batch over the loop (median of per-round differences).

    python benchmarks/bench_keras.py [--steps 500] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from _sides import report, take_turns

from fpipe import Batch, Dataset, Pipeline, action, model

N_ITEMS, N_FEATURES, N_CLASSES, BATCH = 20_000, 64, 10, 64


def make_net(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    net = keras.Sequential(
        [
            keras.Input((N_FEATURES,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(N_CLASSES, activation="softmax"),
        ]
    )
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return net


class Rows(Batch):
    components = ("x", "y")

    @model(mode="static")
    def bench_mlp(pipeline, config):
        return make_net(config.get("seed", 0))

    @action(model="bench_mlp", use_lock="bench_mlp")
    def train_step(self, net):
        net.train_on_batch(self.x, self.y)
        return self


class NullNet:
    """A model that does nothing: what is left is the cost of handing it batches."""

    def train_on_batch(self, x: np.ndarray, y: np.ndarray) -> None:
        pass


class NullRows(Rows):
    @model(mode="static")
    def bench_null(pipeline, config):
        return NullNet()

    @action(model="bench_null", use_lock="bench_null")
    def null_step(self, net):
        net.train_on_batch(self.x, self.y)
        return self


def classification_data() -> tuple[np.ndarray, np.ndarray, Dataset]:
    """Features, labels (a linear rule of the features) and the dataset holding them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_ITEMS, N_FEATURES)).astype("float32")
    y = (x @ rng.normal(size=(N_FEATURES, N_CLASSES))).argmax(axis=1)
    return x, y, Dataset(N_ITEMS, Rows, preloaded=(x, y))


def loop(net, x: np.ndarray, y: np.ndarray, batches: list[np.ndarray]) -> int:
    for ids in batches:
        net.train_on_batch(x[ids], y[ids])
    return len(batches)


def through_fpipe(pipeline: Pipeline, steps: int, prefetch: int) -> int:
    n = 0
    for _ in pipeline.gen_batch(BATCH, shuffle=3, n_iters=steps, prefetch=prefetch):
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--null-steps", type=int, default=5000)
    args = parser.parse_args()

    x, y, ds = classification_data()
    # the same batches for both sides: the ids of fpipe's plan
    batches = [b.indices for b in ds.p.gen_batch(BATCH, shuffle=3, n_iters=args.steps)]

    pipeline = Pipeline().init_model("bench_mlp").train_step() << ds
    # both sides train the very same Keras model: two models of one architecture may
    # differ in speed by a percent or two (memory placement, traced functions)
    net = pipeline.get_model_by_name("bench_mlp")

    # warm-up: trace the train functions, touch every code path once
    loop(net, x, y, batches[:20])
    through_fpipe(pipeline, 20, 0)
    through_fpipe(pipeline, 20, 2)

    times = take_turns(
        {
            "loop": lambda: loop(net, x, y, batches),
            "fpipe": lambda: through_fpipe(pipeline, args.steps, 0),
            "fpipe prefetch=2": lambda: through_fpipe(pipeline, args.steps, 2),
        },
        args.repeat,
    )
    print(
        f"Keras MLP {N_FEATURES}-128-{N_CLASSES}, batches of {BATCH}, {args.steps} steps, "
        f"{args.repeat} rounds"
    )
    report(times, args.steps)
    null_cost(x, y, args.null_steps, args.repeat)


def null_cost(x: np.ndarray, y: np.ndarray, steps: int, repeat: int) -> None:
    """fpipe's own cost per batch around a model step (a model that does nothing)."""
    ds = Dataset(N_ITEMS, NullRows, preloaded=(x, y))
    batches = [b.indices for b in ds.p.gen_batch(BATCH, shuffle=3, n_iters=steps)]
    pipeline = Pipeline().init_model("bench_null").null_step() << ds
    net = NullNet()
    times = take_turns(
        {
            "loop": lambda: loop(net, x, y, batches),
            "fpipe": lambda: through_fpipe(pipeline, steps, 0),
            "fpipe prefetch=2": lambda: through_fpipe(pipeline, steps, 2),
        },
        repeat,
    )
    print(f"a model that does nothing, {steps} steps: fpipe's cost per batch over the loop")
    loop_us = statistics.median(times["loop"]) / steps * 1e6
    print(f"loop            : {loop_us:6.2f} us per batch (gathering x and y)")
    for name in ("fpipe", "fpipe prefetch=2"):
        extra = statistics.median(
            (t - b) / steps * 1e6 for t, b in zip(times[name], times["loop"], strict=True)
        )
        print(f"{name:16s}: +{extra:5.2f} us per batch")


if __name__ == "__main__":
    main()
