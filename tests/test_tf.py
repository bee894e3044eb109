"""TensorFlow: the seed's TF1-style models (through ``tf.compat.v1``), Keras 3 models,
``to_tf_dataset``, and TensorFlow staying optional.

Eager execution is never disabled: every TF1 graph is built inside an explicit
``graph.as_default()`` block, so Keras tests can share the process.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from fpipe import Batch, Dataset, ModelError, Pipeline, SkipBatch, action, model
from fpipe.tf import _stacks, fast_path_reason

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
v1 = tf.compat.v1

N_CLASSES = 3
SIDE = 4


def make_data(n=192, seed=0):
    """Images whose class is a fixed linear function of the pixels: learnable by softmax."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, SIDE, SIDE, 1)).astype("float32")
    teacher = np.random.default_rng(99).normal(size=(SIDE * SIDE, N_CLASSES))
    labels = (images.reshape(n, -1) @ teacher).argmax(axis=1)
    return images, labels


def softmax_graph(input_shape, lr=0.1):
    """A TF1 softmax regression in the current default graph (the seed's ``...``)."""
    input_data = v1.placeholder("float", [None, *input_shape], name="input_data")
    output_data = v1.placeholder("float", [None, N_CLASSES], name="output_data")
    flat = tf.reshape(input_data, [-1, int(np.prod(input_shape))])
    w = v1.get_variable("w", [flat.shape[1], N_CLASSES], initializer=v1.zeros_initializer())
    b = v1.get_variable("b", [N_CLASSES], initializer=v1.zeros_initializer())
    model_output = tf.matmul(flat, w) + b
    cost = tf.reduce_mean(
        tf.nn.softmax_cross_entropy_with_logits(labels=output_data, logits=model_output)
    )
    optimizer = v1.train.AdamOptimizer(lr).minimize(cost)
    correct = tf.equal(tf.argmax(model_output, 1), tf.argmax(output_data, 1))
    accuracy = tf.reduce_mean(tf.cast(correct, "float"))
    return input_data, output_data, optimizer, cost, accuracy


BUILT: dict[str, int] = {}


def make_tf_batch_class():
    """The seed's batch class, with its three example models.

    It is made by a fixture, not at import: its global model is built when the class is
    created, and its seed-named models must not linger for other modules' templates.
    """

    class TFBatch(Batch):
        components = ("images", "labels")

        @model(mode="global")
        def basic_model():
            BUILT["basic_model"] = BUILT.get("basic_model", 0) + 1
            with tf.Graph().as_default():
                input_data, output_data, optimizer, cost, _ = softmax_graph((SIDE, SIDE, 1))
                init = v1.global_variables_initializer()
            return [input_data, output_data, optimizer, cost, init]

        @model(mode="static")
        def static_model(pipeline, config=None):
            session = pipeline.get_variable("session")
            with session.graph.as_default(), v1.variable_scope("static"):
                input_data, output_data, optimizer, cost, accuracy = softmax_graph(
                    (SIDE, SIDE, 1), lr=config.get("lr", 0.1)
                )
                session.run(v1.variables_initializer(v1.global_variables(scope="static")))
            return [(input_data, output_data), (optimizer, cost, accuracy)]

        @model(mode="dynamic")
        def advanced_model(self, config=None):
            BUILT["advanced_model"] = BUILT.get("advanced_model", 0) + 1
            with tf.Graph().as_default():
                input_data, output_data, optimizer, cost, accuracy = softmax_graph(
                    self.images.shape[1:]
                )
                session = v1.Session()
                session.run(v1.global_variables_initializer())
            return dict(
                session=session,
                input_data=input_data,
                output_data=output_data,
                train_step=optimizer,
                cost=cost,
                accuracy=accuracy,
            )

        # -- the seed's model-based actions, fed real labels -----------------------------------
        def feed(self, input_data, output_data):
            return {input_data: self.images, output_data: np.eye(N_CLASSES)[self.labels]}

        @action(model="basic_model")
        def train_model(self, model_spec, session=None):
            input_data, output_data, optimizer, cost, _ = model_spec
            session = session or self.pipeline.get_variable("session")
            _, loss = session.run([optimizer, cost], feed_dict=self.feed(input_data, output_data))
            self.pipeline.update_variable("loss", float(loss), mode="a")
            return self

        @action(model="basic_model")
        def evaluate_model(self, model_spec):
            input_data, output_data, _, cost, _ = model_spec
            session = self.pipeline.get_variable("session")
            loss = session.run(cost, feed_dict=self.feed(input_data, output_data))
            self.pipeline.update_variable("eval_loss", float(loss), mode="a")
            return self

        @action(model="static_model", use_lock="static_model_lock")
        def train_it(self, model_spec):
            input_images, input_labels = model_spec[0]
            optimizer, cost, _accuracy = model_spec[1]
            session = self.pipeline.get_variable("session")
            _, loss = session.run(
                [optimizer, cost], feed_dict=self.feed(input_images, input_labels)
            )
            self.pipeline.update_variable("loss", float(loss), mode="a")
            return self

        @action(model="advanced_model")
        def train_advanced(self, spec):
            feed = self.feed(spec["input_data"], spec["output_data"])
            _, loss = spec["session"].run([spec["train_step"], spec["cost"]], feed_dict=feed)
            self.pipeline.update_variable("loss", float(loss), mode="a")
            return self

        @action
        def train_by_name(self, model_name):
            spec = self.get_model_by_name(model_name)
            feed = self.feed(spec["input_data"], spec["output_data"])
            _, loss = spec["session"].run([spec["train_step"], spec["cost"]], feed_dict=feed)
            self.pipeline.update_variable(f"loss_{model_name}", float(loss), mode="a")
            return self

        @action(model="advanced_model")
        def get_prediction(self, spec):
            feed = self.feed(spec["input_data"], spec["output_data"])
            acc = spec["session"].run(spec["accuracy"], feed_dict=feed)
            self.pipeline.update_variable("accuracy", (float(acc), len(self)), mode="a")
            return self

    return TFBatch


@pytest.fixture(scope="module")
def TFBatch():
    before = BUILT.get("basic_model", 0)
    cls = make_tf_batch_class()
    assert BUILT["basic_model"] == before + 1  # built when the class was created
    yield cls
    del cls
    gc.collect()  # drop the class so later template lookups do not see its names


@pytest.fixture(scope="module")
def datasets(TFBatch):
    images, labels = make_data()
    ds = Dataset(len(labels), TFBatch, preloaded=(images, labels))
    return ds.split(0.75, shuffle=True, seed=3)


def falls(losses, k=5):
    return float(np.mean(losses[-k:])) < 0.6 * float(np.mean(losses[:k]))


def weighted_accuracy(pairs):
    accs, sizes = np.array(pairs).T
    return float((accs * sizes).sum() / sizes.sum())


# -- the seed's three models --------------------------------------------------------------


def test_global_model_was_built_with_the_class_and_trains_with_a_session_argument(
    TFBatch, datasets
):
    train, _ = datasets
    built = BUILT["basic_model"]
    spec = TFBatch.basic_model.descriptor
    with v1.Session(graph=spec[0].graph) as sess:
        sess.run(spec[-1])
        full_workflow = train.p.init_variable("loss", []).train_model(session=sess)
        r = full_workflow.run(16, shuffle=True, n_epochs=3, seed=1)
    assert len(r.get_variable("loss")) == 27
    assert falls(r.get_variable("loss"))
    assert BUILT["basic_model"] == built  # never rebuilt by a run


def test_several_actions_share_the_global_model(TFBatch, datasets):
    train, _ = datasets
    spec = TFBatch.basic_model.descriptor
    with v1.Session(graph=spec[0].graph) as tf_session:
        tf_session.run(spec[-1])
        full_workflow = (
            train.p.init_variable("session", tf_session)
            .init_variable("loss", [])
            .init_variable("eval_loss", [])
            .train_model()
            .evaluate_model()
        )
        r = full_workflow.run(16, shuffle=True, n_epochs=2, seed=2)
        untouched = TFBatch.basic_model.descriptor
    assert untouched is spec
    assert len(r.get_variable("eval_loss")) == len(r.get_variable("loss")) == 18
    assert falls(r.get_variable("eval_loss"))


def test_static_model_lives_in_the_session_graph_and_serves_two_datasets(datasets):
    train, test = datasets
    graph = tf.Graph()
    with v1.Session(graph=graph) as session:
        template = (
            Pipeline(config={"static_model": {"lr": 0.2}})
            .init_variable("session", session)
            .init_variable("loss", [])
            .init_model("TFBatch.static_model")
            .train_it()
        )
        spec = template.get_model_by_name("static_model")
        assert spec[0][0].graph is graph
        assert spec[0][0].name.startswith("static/")
        first = (template << train).run(16, shuffle=True, n_epochs=3, seed=4, prefetch=3)
        second = (template << test).run(16, n_epochs=1)
        assert first.get_model_by_name("static_model") is spec
        assert second.get_model_by_name("static_model") is spec
        assert falls(first.get_variable("loss"))
        # the second dataset trains the same (already trained) model: it starts low
        assert second.get_variable("loss")[0] < first.get_variable("loss")[0]
        assert "static_model_lock" in first._env.locks


def test_dynamic_model_has_its_own_graph_and_session_per_run(datasets):
    train, _ = datasets
    before = BUILT.get("advanced_model", 0)
    p = train.p.init_variable("loss", []).train_advanced()
    r1 = p.run(16, shuffle=True, n_epochs=3, seed=5, prefetch=2)
    r2 = p.run(16, n_epochs=1)
    assert BUILT["advanced_model"] == before + 2
    s1, s2 = r1.get_model_by_name("advanced_model"), r2.get_model_by_name("advanced_model")
    assert s1["session"] is not s2["session"]
    assert s1["input_data"].graph is not s2["input_data"].graph
    assert s1["input_data"].shape.as_list() == [None, SIDE, SIDE, 1]  # read from the batch
    assert falls(r1.get_variable("loss"))
    for spec in (s1, s2):
        spec["session"].close()


def test_get_model_by_name_trains_models_chosen_by_name(TFBatch, datasets):
    class TFTwoModels(TFBatch):
        @model(mode="dynamic")
        def tf_vgg19(self, config=None):
            return TFBatch.__dict__["advanced_model"].fn(self, config)

        @model(mode="dynamic")
        def tf_resnet50(self, config=None):
            return TFBatch.__dict__["advanced_model"].fn(self, config)

    images, labels = make_data()
    ds = Dataset(len(labels), TFTwoModels, preloaded=(images, labels))
    my_pipeline = (
        ds.p.init_variable("loss_tf_vgg19", [])
        .init_variable("loss_tf_resnet50", [])
        .train_by_name("tf_vgg19")
        .train_by_name("tf_resnet50")
    )
    r = my_pipeline.run(16, shuffle=True, n_epochs=3, seed=6)
    assert falls(r.get_variable("loss_tf_vgg19"))
    assert falls(r.get_variable("loss_tf_resnet50"))
    models = r.models
    assert models["tf_vgg19"]["session"] is not models["tf_resnet50"]["session"]
    with pytest.raises(ModelError, match=r"no model 'tf_vgg'.*Did you mean 'tf_vgg19'"):
        r.get_model_by_name("tf_vgg")


def test_import_model_into_an_inference_pipeline(datasets):
    train, test = datasets
    train_pipeline = (
        train.p.init_variable("loss", []).train_advanced().run(16, shuffle=True, n_epochs=6, seed=7)
    )
    before = BUILT["advanced_model"]
    inference_pipeline_template = (
        Pipeline()
        .init_variable("accuracy", [])
        .import_model("advanced_model", train_pipeline)
        .get_prediction()
    )
    r = (inference_pipeline_template << test).run(16, prefetch=2)
    assert BUILT["advanced_model"] == before  # imported, never rebuilt
    assert r.get_model_by_name("advanced_model") is train_pipeline.get_model_by_name(
        "advanced_model"
    )
    assert weighted_accuracy(r.get_variable("accuracy")) > 0.8
    train_pipeline.get_model_by_name("advanced_model")["session"].close()


# -- Keras 3 ---------------------------------------------------------------------------------


class KerasBatch(Batch):
    components = ("images", "labels")

    @model(mode="dynamic")
    def tf_keras_mlp(self, config=None):
        keras.utils.set_random_seed(config.get("seed", 0))
        net = keras.Sequential(
            [
                keras.Input(self.images.shape[1:]),
                keras.layers.Flatten(),
                keras.layers.Dense(config.get("units", 16), activation="relu"),
                keras.layers.Dense(N_CLASSES, activation="softmax"),
            ]
        )
        net.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return net

    @action(model="tf_keras_mlp", use_lock="keras")
    def train_step(self, net):
        loss = net.train_on_batch(self.images, self.labels, return_dict=True)["loss"]
        self.pipeline.update_variable("loss", float(loss), mode="a")
        return self

    @action(model="tf_keras_mlp")
    def evaluate(self, net):
        result = net.evaluate(self.images, self.labels, verbose=0, return_dict=True)
        self.pipeline.update_variable("accuracy", (result["accuracy"], len(self)), mode="a")
        return self

    @action(model="tf_keras_mlp")
    def predict(self, net):
        return self.replace(labels=net.predict(self.images, verbose=0).argmax(axis=1))


@pytest.fixture(scope="module")
def keras_datasets():
    images, labels = make_data(256, seed=1)
    ds = Dataset(len(labels), KerasBatch, preloaded=(images, labels))
    return ds.split(0.75, shuffle=True, seed=3)


@pytest.fixture(scope="module")
def keras_trained(keras_datasets):
    train, _ = keras_datasets
    p = (
        Pipeline(config={"tf_keras_mlp": {"units": 32}})
        .init_variable("loss", [])
        .init_model("tf_keras_mlp", config={"seed": 1})
        .train_step()
    )
    return (p << train).run(32, shuffle=True, n_epochs=6, seed=8, prefetch=2)


def test_keras_model_learns_through_a_pipeline(keras_trained):
    losses = keras_trained.get_variable("loss")
    assert len(losses) == 36
    assert falls(losses)
    net = keras_trained.get_model_by_name("tf_keras_mlp")
    assert net.layers[1].units == 32  # config section, with init_model's seed over it
    assert "keras" in keras_trained._env.locks


def test_keras_training_repeats_bit_for_bit_with_a_fixed_seed(keras_datasets):
    train, _ = keras_datasets
    p = Pipeline().init_variable("loss", []).init_model("tf_keras_mlp").train_step() << train
    a = p.run(32, shuffle=True, n_epochs=1, seed=9).get_variable("loss")
    b = p.run(32, shuffle=True, n_epochs=1, seed=9, prefetch=3).get_variable("loss")
    assert a == b


def test_keras_predict_and_evaluate_through_an_inference_pipeline(keras_trained, keras_datasets):
    _, test = keras_datasets
    inference = (
        Pipeline().init_variable("accuracy", []).import_model("tf_keras_mlp", keras_trained)
        + Pipeline().evaluate().predict()
    )
    r = (inference << test).run(16)
    accuracy = weighted_accuracy(r.get_variable("accuracy"))
    assert accuracy > 0.8
    predicted = np.concatenate([b.labels for b in (inference << test).gen_batch(16)])
    truth = np.concatenate([b.labels for b in test.p.gen_batch(16)])
    assert float((predicted == truth).mean()) == pytest.approx(accuracy, abs=1e-6)


# -- to_tf_dataset ---------------------------------------------------------------------------


class Normalize(Batch):
    components = ("images", "labels")

    @action
    def normalize(self):
        return self.replace(images=self.images / 4.0)

    @action
    def skip_odd(self):
        if int(self.indices[0]) // 10 % 2:  # with batches of 10 in order: every other one
            raise SkipBatch
        return self


@pytest.fixture(scope="module")
def stream_ds():
    images, labels = make_data(100, seed=2)
    return Dataset(len(labels), Normalize, preloaded=(images, labels))


def test_to_tf_dataset_infers_the_signature_and_streams_every_batch(stream_ds):
    p = stream_ds.p.normalize()
    ds = p.to_tf_dataset(32, shuffle=True, seed=3)
    x_spec, y_spec = ds.element_spec
    assert x_spec.shape.as_list() == [None, SIDE, SIDE, 1] and x_spec.dtype == tf.float32
    assert y_spec.shape.as_list() == [None] and y_spec.dtype == tf.int64
    got = [(x.numpy(), y.numpy()) for x, y in ds]
    expected = [(b.images, b.labels) for b in p.gen_batch(32, shuffle=True, seed=3)]
    assert [len(y) for _, y in got] == [32, 32, 32, 4]
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


def test_to_tf_dataset_each_pass_is_a_fresh_reproducible_shuffle(stream_ds):
    def passes(ds, n=2):
        return [np.concatenate([y.numpy() for _, y in ds]) for _ in range(n)]

    a1, a2 = passes(stream_ds.p.to_tf_dataset(25, shuffle=5))
    b1, b2 = passes(stream_ds.p.to_tf_dataset(25, shuffle=True, seed=5, prefetch=2))
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)
    assert sorted(a1.tolist()) == sorted(a2.tolist()) == sorted(stream_ds.preloaded["labels"])


def test_to_tf_dataset_components_and_explicit_signature(stream_ds):
    only_x = stream_ds.p.to_tf_dataset(50, components="images")
    assert only_x.element_spec.shape.as_list() == [None, SIDE, SIDE, 1]
    assert [x.shape[0] for x in only_x] == [50, 50]
    signature = (tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None, SIDE, SIDE, 1), tf.float32))
    swapped = stream_ds.p.to_tf_dataset(
        50, components=["labels", "images"], output_signature=signature
    )
    y, x = next(iter(swapped))
    assert y.shape == (50,) and x.shape == (50, SIDE, SIDE, 1)
    with pytest.raises(TypeError, match="unknown run argument 'shufle'"):
        stream_ds.p.to_tf_dataset(10, shufle=True)
    with pytest.raises(TypeError, match="components must be a component name"):
        stream_ds.p.to_tf_dataset(10, components=[1])


def small_classifier():
    """A seeded one-layer Keras classifier of the stream's images."""
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((SIDE, SIDE, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(N_CLASSES, activation="softmax"),
        ]
    )
    net.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    return net


def test_keras_fit_trains_from_a_pipeline(stream_ds):
    net = small_classifier()
    ds = stream_ds.p.normalize().to_tf_dataset(20, shuffle=True, seed=1)
    assert int(ds.cardinality()) == 5  # from the batching plan: Keras knows an epoch's end
    history = net.fit(ds, epochs=8, verbose=0, shuffle=False)  # fpipe shuffles
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]


def test_to_tf_dataset_cardinality(stream_ds):
    endless = stream_ds.p.to_tf_dataset(30, n_epochs=None, seed=1)
    assert int(endless.cardinality()) == int(tf.data.INFINITE_CARDINALITY)
    assert len(list(endless.take(7))) == 7
    assert int(stream_ds.p.rebatch(7).to_tf_dataset(30).cardinality()) == int(
        tf.data.UNKNOWN_CARDINALITY
    )
    skipping = stream_ds.p.skip_odd()
    unknown = skipping.to_tf_dataset(10, cardinality=None)
    assert int(unknown.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    assert len(list(unknown)) == 5
    with pytest.raises(Exception, match=r"yielded 5 batches, not the 10 of its batching plan"):
        list(skipping.to_tf_dataset(10))
    with pytest.raises(TypeError, match="cardinality must be 'auto', None or an int"):
        stream_ds.p.to_tf_dataset(10, cardinality="many")


# -- to_tf_dataset: the fast path and the chunked generator ----------------------------------


def tf_passes(tf_dataset, n):
    """``n`` passes over a tf.data.Dataset, each a list of batches of numpy arrays."""
    return [[tuple(np.asarray(t) for t in element) for element in tf_dataset] for _ in range(n)]


def same_passes(a, b):
    assert [len(p) for p in a] == [len(p) for p in b]
    for pa, pb in zip(a, b, strict=True):
        for ea, eb in zip(pa, pb, strict=True):
            assert len(ea) == len(eb)
            for x, y in zip(ea, eb, strict=True):
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "run",
    [
        {"shuffle": 5},
        {"shuffle": True, "seed": 2, "n_epochs": 2},
        {"shuffle": True, "seed": 3, "n_iters": 9},
        {"shuffle": True, "seed": 4, "n_epochs": 2, "drop_last": True},
        {"n_epochs": 2},
    ],
    ids=["int-shuffle", "two-epochs", "n_iters", "drop_last", "in-order"],
)
def test_the_fast_path_gives_the_batches_of_gen_batch_and_of_the_generator_every_pass(
    stream_ds, run
):
    """Same batches, same order, same seeds; subsets (arrays aligned with the parent's
    index) and a single component too."""
    subset = stream_ds.create_subset(np.arange(7, 100, 3))
    for ds in (stream_ds, subset):
        assert fast_path_reason(ds.p, ("images", "labels")) is None
        fast, slow = ds.p.to_tf_dataset(16, **run), ds.p.to_tf_dataset(16, fast=False, **run)
        assert fast.element_spec == slow.element_spec
        assert int(fast.cardinality()) == int(slow.cardinality())
        fast_passes = tf_passes(fast, 3)
        same_passes(fast_passes, tf_passes(slow, 3))
        own = [[(b.images, b.labels) for b in ds.p.gen_batch(16, **run)]]
        same_passes(fast_passes[:1], own)
        if "shuffle" in run:  # each pass is a fresh shuffle
            assert not np.array_equal(fast_passes[0][0][1], fast_passes[1][0][1])
    only = stream_ds.p.to_tf_dataset(30, components="labels", shuffle=1)
    expected = [b.labels for b in stream_ds.p.gen_batch(30, shuffle=1)]
    assert only.element_spec.shape.as_list() == [None]
    same_passes([[(np.asarray(y),) for y in only]], [[(y,) for y in expected]])


def test_passes_of_the_fast_path_open_at_once_keep_to_their_own_seeds(stream_ds):
    run = {"shuffle": True, "seed": 6, "n_epochs": 30}  # longer than tf.data reads ahead
    expected = tf_passes(stream_ds.p.to_tf_dataset(25, fast=False, **run), 2)
    fast = stream_ds.p.to_tf_dataset(25, **run)
    first = iter(fast)
    got: list[list] = [[next(first)], []]  # the first pass has begun: it is pass 0
    second = iter(fast)
    for _ in expected[0][1:]:  # epochs of both passes interleave
        got[1].append(next(second))
        got[0].append(next(first))
    got[1].append(next(second))
    same_passes([[tuple(np.asarray(t) for t in e) for e in p] for p in got], expected)


def test_the_fast_path_endless_runs_as_gen_batch(stream_ds):
    endless = stream_ds.p.to_tf_dataset(30, n_epochs=None, seed=1, shuffle=True)
    assert int(endless.cardinality()) == int(tf.data.INFINITE_CARDINALITY)
    got = [np.asarray(y) for _, y in endless.take(11)]
    it = stream_ds.p.gen_batch(30, n_epochs=None, seed=1, shuffle=True)
    for y, b in zip(got, it, strict=False):
        np.testing.assert_array_equal(y, b.labels)


def test_the_fast_path_runs_no_python_per_batch_and_the_generator_path_does(stream_ds, monkeypatch):
    calls = []
    batch_at = Dataset._batch_at
    monkeypatch.setattr(
        Dataset, "_batch_at", lambda self, *a, **k: calls.append(1) or batch_at(self, *a, **k)
    )
    assert len(list(stream_ds.p.to_tf_dataset(10, n_epochs=3))) == 30
    assert calls == []  # batches gathered by tf ops only
    assert len(list(stream_ds.p.to_tf_dataset(10, n_epochs=3, fast=False))) == 30
    assert len(calls) == 30


def test_to_tf_dataset_says_why_a_pipeline_takes_the_generator_path(stream_ds):
    names = ("images", "labels")
    assert "steps that act on batches" in fast_path_reason(stream_ds.p.normalize(), names)
    assert "steps that act on batches" in fast_path_reason(stream_ds.p.rebatch(7), names)
    bare = Dataset(10, Normalize, preloaded={"images": np.ones((10, 2))})
    assert fast_path_reason(bare.p, names) == "component 'labels' is not preloaded"
    words = Dataset(3, Normalize, preloaded=(np.ones((3, 2)), np.array(["a", "b", "c"])))
    assert fast_path_reason(words.p, names) == "component 'labels' holds <U1 values, not numbers"
    got = [y.numpy().tolist() for _, y in words.p.to_tf_dataset(2)]
    assert got == [[b"a", b"b"], [b"c"]]  # the generator path handles strings


def test_the_generator_path_stacks_small_batches_of_one_shape_and_sends_big_ones_alone():
    small = [(np.full((4, 3), i, "float32"), np.arange(4)) for i in range(70)]
    small.append((np.zeros((2, 3), "float32"), np.arange(2)))  # the last batch of an epoch
    chunks = list(_stacks(iter(small), single=False))
    assert [c[0].shape[0] for c in chunks] == [32, 32, 6, 1]
    assert np.array_equal(
        np.concatenate([c[0] for c in chunks[:3]]), np.stack([b[0] for b in small[:70]])
    )
    big = [np.zeros((64, 4096), "float32") for _ in range(3)]  # 1 MB each
    alone = list(_stacks(iter(big), single=True))
    assert [c.shape for c in alone] == [(1, 64, 4096)] * 3
    assert all(np.shares_memory(c, b) for c, b in zip(alone, big, strict=True))  # views


def test_keras_fit_trains_on_the_fast_path(stream_ds):
    net = small_classifier()
    ds = stream_ds.p.to_tf_dataset(20, shuffle=True, seed=1)
    history = net.fit(ds, epochs=8, verbose=0, shuffle=False)  # fpipe shuffles
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]


# -- TensorFlow stays optional ---------------------------------------------------------------


def test_require_tf_names_the_extra_when_tensorflow_is_missing(monkeypatch, stream_ds):
    from fpipe.tf import require_tf

    assert require_tf() is tf
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match=r'pip install "fpipe-ml\[tf\]"'):
        require_tf()
    with pytest.raises(ImportError, match=r'pip install "fpipe-ml\[tf\]"'):
        stream_ds.p.to_tf_dataset(10)


def test_core_works_without_tensorflow():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None   # any `import tensorflow` now fails
        sys.modules["keras"] = None
        import numpy as np
        import fpipe
        from fpipe import Batch, Dataset, Pipeline, action, model

        class B(Batch):
            @model(mode="dynamic")
            def net(batch, config):
                return {"w": np.zeros(batch.data.shape[1:])}

            @action(model="net")
            def fit(self, net):
                self.pipeline.update_variable("n", len(self), mode="a")
                return self

        ds = Dataset(10, B, preloaded=np.ones((10, 3)))
        r = (Pipeline().init_variable("n", []).fit() << ds).run(4, prefetch=2)
        print("sum", sum(r.get_variable("n")), r.get_model_by_name("net")["w"].shape)
        try:
            fpipe.tf.require_tf()
        except ImportError as exc:
            print("hint:", exc)
        try:
            (Pipeline() << ds).to_tf_dataset(4)
        except ImportError as exc:
            print("hint:", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code.replace("fpipe.tf.", "__import__('fpipe.tf').tf.")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "sum 10 (3,)"
    assert len(lines) == 3
    assert all(line.startswith("hint: TensorFlow is not installed") for line in lines[1:])
    assert all('pip install "fpipe-ml[tf]"' in line for line in lines[1:])


@pytest.mark.parametrize("most", [1, 3, 64])
def test_the_fast_path_gives_the_same_batches_whatever_number_it_gathers_at_once(
    stream_ds, monkeypatch, most
):
    """Batches are gathered in groups of equal length (one tf op a group); a short last
    batch of an epoch is a group of its own."""
    import fpipe.tf as ftf

    monkeypatch.setattr(ftf, "MAX_GATHER", most)
    run = {"shuffle": True, "seed": 5, "n_epochs": 2}  # 100 items: 6 batches of 16, then 4
    fast = stream_ds.p.to_tf_dataset(16, **run)
    own = [[(b.images, b.labels) for b in stream_ds.p.gen_batch(16, **run)]]
    assert [len(b[1]) for b in own[0]] == [16] * 6 + [4] + [16] * 6 + [4]
    same_passes(tf_passes(fast, 1), own)
