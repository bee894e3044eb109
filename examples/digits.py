"""Train and evaluate a digit classifier with fpipe (scikit-learn's bundled 8x8 digits).

    python examples/digits.py [--epochs 12] [--batch-size 32] [--prefetch 4]

What it shows:

1. a *dynamic* model, ``pixel_stats``, whose factory reads the data's shape from the
   first batch; one pass over the training set fills it with per-pixel means and
   standard deviations;
2. a *template* pipeline that imports those statistics, standardises the images and
   declares a *static* Keras model, ``classifier`` (built once, from the pipeline
   config). The same template serves the training set (augment, then a locked
   ``train_on_batch`` under prefetch) and the test set (evaluate): both share the one
   classifier;
3. an inference pipeline that imports both models from the training results and
   predicts the test set.

It prints the progress of each epoch, the final test accuracy (the script fails if it
is below 0.93) and the training throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from sklearn.datasets import load_digits

from fpipe import Batch, Dataset, Pipeline, action, model

SEED = 17
REQUIRED_ACCURACY = 0.93


class Digits(Batch):
    components = ("images", "labels", "predictions")

    # -- models ------------------------------------------------------------------------
    @model(mode="dynamic")
    def pixel_stats(batch, config):
        """Running per-pixel sums, shaped like one image of the data being run."""
        shape = batch.images.shape[1:]
        return {"n": 0, "sum": np.zeros(shape), "sum_sq": np.zeros(shape)}

    @model(mode="static")
    def classifier(pipeline, config):
        """A Keras MLP; a static model sees no data, so the config gives the sizes."""
        import keras

        keras.utils.set_random_seed(config["seed"])
        net = keras.Sequential(
            [
                keras.Input((config["n_features"],)),
                keras.layers.Dense(config["hidden"], activation="relu"),
                keras.layers.Dropout(config["dropout"]),
                keras.layers.Dense(config["n_classes"], activation="softmax"),
            ]
        )
        net.compile(
            optimizer=keras.optimizers.Adam(config["learning_rate"]),
            loss="sparse_categorical_crossentropy",
        )
        return net

    # -- actions -------------------------------------------------------------------------
    @action(model="pixel_stats")
    def accumulate_stats(self, stats):
        images = self.images.astype("float64")
        stats["n"] += len(self)
        stats["sum"] += images.sum(axis=0)
        stats["sum_sq"] += (images**2).sum(axis=0)
        return self

    @action(model="pixel_stats")
    def standardize(self, stats):
        mean = stats["sum"] / stats["n"]
        std = np.sqrt(np.maximum(stats["sum_sq"] / stats["n"] - mean**2, 0.0)) + 1.0
        return self.replace(images=((self.images - mean) / std).astype("float32"))

    @action
    def augment(self, sigma):
        """Pixel noise from the batch's own generator: reproducible with any prefetch."""
        noise = self.random.normal(scale=sigma, size=self.images.shape)
        return self.replace(images=(self.images + noise).astype("float32"))

    @action(model="classifier", use_lock="classifier")
    def train_step(self, net):
        loss = net.train_on_batch(self.images, self.labels)
        self.pipeline.update_variable("loss", float(loss), mode="a")
        return self

    @action(model="classifier")
    def predict(self, net):
        scores = net.predict_on_batch(self.images)
        return self.replace(predictions=np.asarray(scores).argmax(axis=1))

    @action
    def count_correct(self):
        self.pipeline.update_variable(
            "correct", int((self.predictions == self.labels).sum()), mode="a"
        )
        return self


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prefetch", type=int, default=4)
    args = parser.parse_args(argv)

    digits = load_digits()
    images = digits.images.reshape(len(digits.images), -1).astype("float32")
    data = Dataset(len(images), Digits, preloaded={"images": images, "labels": digits.target})
    train_ds, test_ds = data.split(0.8, shuffle=True, seed=SEED)
    print(
        f"digits: {len(train_ds)} training and {len(test_ds)} test images of {images.shape[1]} pixels"
    )

    # 1. a dynamic model, built from the first batch of its run
    stats_run = (Pipeline().accumulate_stats() << train_ds).run(256)

    # 2. a template with a static model, serving the training and the test set
    config = {
        "classifier": {
            "n_features": images.shape[1],
            "n_classes": 10,
            "hidden": 128,
            "dropout": 0.1,
            "learning_rate": 3e-3,
            "seed": SEED,
        }
    }
    template = (
        Pipeline(config=config)
        .import_model("pixel_stats", stats_run)
        .standardize()
        .init_model("classifier")  # the Keras model is built here, once
    )
    training = template + Pipeline().init_variable("loss", []).augment(sigma=0.3).train_step()
    testing = template + Pipeline().init_variable("correct", []).predict().count_correct()
    train_pipeline, test_pipeline = training << train_ds, testing << test_ds

    trained = train_pipeline
    train_time, train_batches = 0.0, 0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        trained = train_pipeline.run(
            args.batch_size, shuffle=True, seed=SEED + epoch, prefetch=args.prefetch
        )
        train_time += time.perf_counter() - start
        losses = trained.get_variable("loss")
        train_batches += len(losses)
        accuracy = sum(test_pipeline.run(256).get_variable("correct")) / len(test_ds)
        print(
            f"epoch {epoch + 1:2d}/{args.epochs}: train loss {np.mean(losses):.4f}, "
            f"test accuracy {accuracy:.4f}"
        )

    # 3. inference: import both models from what the training runs returned
    inference = (
        Pipeline()
        .import_model("pixel_stats", stats_run)
        .import_model("classifier", trained)
        .standardize()
        .predict()
    )
    predicted = np.concatenate(
        [b.predictions for b in (inference << test_ds).gen_batch(128, prefetch=2)]
    )
    truth = test_ds.create_batch(test_ds.indices).labels
    final = float((predicted == truth).mean())

    items = args.epochs * len(train_ds)  # every epoch covers each item once
    print(f"final test accuracy: {final:.4f}")
    print(
        f"training throughput: {train_batches / train_time:.1f} batches/s, "
        f"{items / train_time:.0f} items/s ({train_batches} batches in {train_time:.1f} s)"
    )
    if final < REQUIRED_ACCURACY:
        print(f"FAILED: accuracy {final:.4f} < {REQUIRED_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
