"""Train and evaluate a digit classifier with fpipe (scikit-learn's bundled 8x8 digits).

    python examples/digits.py [--epochs 12] [--batch-size 32] [--prefetch 4]
                              [--curves PATH] [--no-bar]

What it shows:

1. a *dynamic* model, ``pixel_stats``, whose factory reads the data's shape from the
   first batch; one pass over the training set fills it with per-pixel means and
   standard deviations;
2. a *template* pipeline that imports those statistics, standardises the images and
   declares a *static* Keras model, ``classifier`` (built once, from the pipeline
   config). The same template serves the training set (augment, then a locked
   ``train_on_batch`` under prefetch) and the test set (evaluate): both share the one
   classifier. Named expressions fill in what a step sees only when it runs: the noise
   level from the config (``C``), the variable a step's result goes to (``V``), and the
   test metric computed from the batch's components (``B``, ``F``); ``check()`` reads
   both pipelines against the batch class before any batch runs;
3. one seeded training run observed epoch by epoch (``epochs()``): a progress bar per
   epoch with the latest loss, the test accuracy between epochs, and the run's profile
   (where its time went, step by step) at the end;
4. an inference pipeline that imports both models from the training results and
   predicts the test set.

It prints each epoch's bar and results, the profile, the final test accuracy (the
script fails if it is below 0.93) and the training throughput, and saves the loss and
accuracy curves to a PNG (by default in the temporary folder; it says where).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

# TensorFlow's start-up log: C++ info and warnings, and the oneDNN notice (printed
# before the C++ log level applies; turning oneDNN off is what silences it)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np
from sklearn.datasets import load_digits

from fpipe import B, Batch, C, Dataset, F, Pipeline, V, action, model

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
        import absl.logging
        import keras

        absl.logging.set_verbosity(absl.logging.ERROR)  # no Python-side warnings either
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
        """One step of training; returns the batch's loss (the pipeline stores it)."""
        return float(net.train_on_batch(self.images, self.labels))

    @action(model="classifier")
    def predict(self, net):
        scores = net.predict_on_batch(self.images)
        return self.replace(predictions=np.asarray(scores).argmax(axis=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument(
        "--curves",
        default=os.path.join(tempfile.gettempdir(), "fpipe-digits-curves.png"),
        help="where to save the loss and accuracy curves (a PNG)",
    )
    parser.add_argument("--no-bar", action="store_true", help="no progress bars")
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
        "augment": {"sigma": 0.3},
        "classifier": {
            "n_features": images.shape[1],
            "n_classes": 10,
            "hidden": 128,
            "dropout": 0.1,
            "learning_rate": 3e-3,
            "seed": SEED,
        },
    }
    template = (
        Pipeline(config=config)
        .import_model("pixel_stats", stats_run)
        .standardize()
        .init_model("classifier")  # the Keras model is built here, once
    )
    # named expressions stand for what a step sees when it runs: the config's noise
    # level, a variable the step's result goes to, the batch's components
    training = template + Pipeline().init_variable("loss", []).augment(
        sigma=C("augment/sigma")
    ).train_step(save_to=V("loss", mode="a"))
    right = F(np.equal)(B("predictions"), B("labels")).sum()  # per test batch
    testing = template + Pipeline().init_variable("correct", []).predict().update_variable(
        "correct", right, mode="a"
    )
    train_pipeline, test_pipeline = training << train_ds, testing << test_ds
    for checked in (train_pipeline, test_pipeline):
        checked.check()  # arguments, models, variables, components, config: before any batch

    # 3. one seeded training run, epoch by epoch: evaluate between epochs
    epochs = train_pipeline.epochs(
        args.batch_size,
        shuffle=True,
        n_epochs=args.epochs,
        seed=SEED,
        prefetch=args.prefetch,
        bar=False if args.no_bar else ["loss"],  # a bar per epoch, with the latest loss
        profile=True,
    )
    train_time, accuracies, done = 0.0, [], 0
    start = time.perf_counter()
    for epoch, trained in epochs:
        train_time += time.perf_counter() - start  # the training only, not the evaluation
        losses = trained.get_variable("loss")
        epoch_loss, done = np.mean(losses[done:]), len(losses)
        accuracies.append(sum(test_pipeline.run(256).get_variable("correct")) / len(test_ds))
        print(
            f"epoch {epoch + 1}/{args.epochs}: train loss {epoch_loss:.4f}, "
            f"test accuracy {accuracies[-1]:.4f}",
            flush=True,  # after the epoch's bar, which goes to stderr
        )
        start = time.perf_counter()
    print(trained.profile)  # where the training run's time went

    # 4. inference: import both models from what the training run returned
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
        f"training throughput: {done / train_time:.1f} batches/s, "
        f"{items / train_time:.0f} items/s ({done} batches in {train_time:.1f} s)"
    )
    print(f"loss and accuracy curves: {save_curves(trained, accuracies, args.curves)}")
    if final < REQUIRED_ACCURACY:
        print(f"FAILED: accuracy {final:.4f} < {REQUIRED_ACCURACY}", file=sys.stderr)
        return 1
    return 0


def save_curves(trained: Pipeline, accuracies: list[float], path: str) -> str:
    """Save the training loss (per batch, smoothed) and the test accuracy per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    loss_axes, accuracy_axes = fig.subplots(1, 2)
    trained.plot("loss", ax=loss_axes)  # fpipe draws a run's variable, with its moving average
    epochs = np.arange(1, len(accuracies) + 1)
    accuracy_axes.plot(epochs, accuracies, marker="o")
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy per epoch")
    accuracy_axes.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    return os.path.abspath(path)


if __name__ == "__main__":
    sys.exit(main())
