"""One seeded run, four ways to execute it, and a training run that survives a kill.

    python examples/reproducible.py [--no-dask]

1. A pipeline that augments scikit-learn's 8x8 digits with random noise and random
   shifts (drawn from ``batch.random``) runs sequentially, with prefetching threads,
   on two worker processes and on a two-worker Dask cluster: the batches are the same,
   bit for bit, because every draw derives from (seed, epoch, batch, step) alone.
2. A softmax-regression model, kept as numpy weights in a pipeline variable, trains
   with a ``Checkpoint`` every 10 batches. The run crashes halfway (an action raises
   at batch 85), starts again from the checkpoint, and ends with exactly the weights
   of a run that was never interrupted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import ExitStack

import numpy as np
from sklearn.datasets import load_digits

from fpipe import ActionError, Batch, Checkpoint, Dataset, Pipeline, ProcessExecutor, action

CRASH_AT = "FPIPE_EXAMPLE_CRASH_AT"  # the environment variable that simulates a crash


class NoisyDigits(Batch):
    components = ("images", "labels")

    @action
    def scale(self):
        return self.replace(images=self.images / 16.0)

    @action
    def jitter(self, sigma):
        return self.replace(images=self.images + self.random.normal(0, sigma, self.images.shape))

    @action
    def shift(self):
        """Roll each 8x8 image by a random offset: one generator per batch and step."""
        offsets = self.random.integers(-1, 2, size=(len(self), 2))
        images = self.images.reshape(-1, 8, 8)
        pairs = zip(images, offsets, strict=True)
        moved = [np.roll(img, tuple(off), axis=(0, 1)) for img, off in pairs]
        return self.replace(images=np.stack(moved).reshape(len(self), 64))

    @action
    def crash_if_asked(self):
        """Raise at the batch $CRASH_AT names: a stand-in for a crash or a kill."""
        if str(self.pipeline.iteration) == os.environ.get(CRASH_AT):
            raise RuntimeError(f"simulated crash at batch {self.pipeline.iteration}")
        return self

    @action
    def sgd_step(self, lr):
        """One softmax-regression step; the weights live in the run's variables."""
        w = self.pipeline.get_variable("w")
        logits = self.images @ w
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(self)), self.labels] -= 1.0
        self.pipeline.set_variable("w", w - lr * self.images.T @ p / len(self))
        return self


def augment() -> Pipeline:
    return Pipeline().scale().jitter(0.1).shift() @ 0.8


def same_batches(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))


def executors(use_dask: bool) -> None:
    digits = load_digits()
    ds = Dataset(len(digits.target), NoisyDigits, preloaded=(digits.data, digits.target))
    p = augment() << ds
    run = {"shuffle": True, "n_epochs": 2, "seed": 2024}
    reference = list(p.gen_batch(64, **run))
    ways = {
        "prefetch=4 (threads)": {"prefetch": 4},
        "2 processes": {"executor": ProcessExecutor(2)},
    }
    with ExitStack() as stack:
        if use_dask:
            from fpipe.testing import local_dask_client

            ways["Dask, 2 workers"] = {"executor": stack.enter_context(local_dask_client(2))}
        for name, how in ways.items():
            same = same_batches(reference, list(p.gen_batch(64, **run, **how)))
            print(f"{name:22s}: {'identical' if same else 'DIFFERENT'} to the sequential run")
            if not same:
                raise SystemExit(f"{name} changed the batches")


def checkpointed_training() -> None:
    digits = load_digits()
    ds = Dataset(len(digits.target), NoisyDigits, preloaded=(digits.data, digits.target))
    steps = (
        Pipeline()
        .init_variable("w", init=lambda: np.zeros((64, 10)))
        .scale()
        .crash_if_asked()
        .sgd_step(0.5)
    )
    run = {"batch_size": 32, "shuffle": True, "n_epochs": 3, "seed": 7}
    whole = (steps << ds).run(**run).get_variable("w")

    ckpt = Checkpoint(os.path.join(tempfile.mkdtemp(), "train.ckpt"), every=10)
    os.environ[CRASH_AT] = "85"
    try:
        (steps << ds).run(**run, checkpoint=ckpt)
    except ActionError as error:
        print(f"training stopped: {error.__cause__}; the checkpoint holds 80 batches")
    finally:
        del os.environ[CRASH_AT]
    resumed = (steps << ds).run(**run, checkpoint=ckpt).get_variable("w")
    same = np.array_equal(whole, resumed)
    predicted = ((digits.data / 16.0) @ resumed).argmax(axis=1)
    print(f"resumed run ends with the uninterrupted run's weights: {same}")
    print(f"training accuracy: {np.mean(predicted == digits.target):.3f}")
    if not same:
        raise SystemExit("the resumed run differs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask cluster")
    args = parser.parse_args()
    executors(use_dask=not args.no_dask)
    checkpointed_training()


if __name__ == "__main__":  # worker processes import this file: run only as a script
    main()
