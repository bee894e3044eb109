"""Error classes (hierarchy, did_you_mean, ActionError) and the messages of bad input.

Every error fpipe raises on purpose names the culprit (the step or action, the batch or
argument, the value received) and says what to do. The catalogue at the end holds one
entry per bad input across the public API: what triggers it, the exception type, and a
regex the message must match (written so that it fails if the check were removed).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import fpipe
from fpipe import (
    ActionError,
    Batch,
    Checkpoint,
    Dataset,
    DatasetIndex,
    FpipeError,
    ImmutableBatchError,
    ModelError,
    Pipeline,
    PipelineCheckError,
    PipelineDefinitionError,
    ResumeError,
    UnknownActionError,
    UnknownVariableError,
    action,
    inbatch_parallel,
    model,
)
from fpipe.errors import did_you_mean
from fpipe.expressions import B, C, V


class ErrNums(Batch):
    @action
    def explode(self):
        raise ZeroDivisionError("division went wrong")

    @action
    def keep(self):
        return self


# -- hierarchy -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (PipelineDefinitionError, ValueError),
        (ImmutableBatchError, AttributeError),
        (ModelError, LookupError),
        (ResumeError, ValueError),
        (ActionError, Exception),
    ],
)
def test_every_error_is_an_fpipe_error_and_the_matching_builtin(cls, builtin):
    assert issubclass(cls, FpipeError)
    assert issubclass(cls, builtin)
    assert issubclass(FpipeError, Exception)


def test_error_classes_are_exported_from_the_package():
    for name in fpipe.errors.__all__:
        if name != "did_you_mean":
            assert getattr(fpipe, name) is getattr(fpipe.errors, name)


def test_existing_except_clauses_still_catch_fpipe_errors():
    b = ErrNums(np.arange(2), preloaded=np.zeros(2))
    with pytest.raises(AttributeError, match="Batches are immutable"):
        b.data = np.ones(2)
    with pytest.raises(ValueError, match="has no action 'kep'"):
        Pipeline().kep() << Dataset(2, ErrNums)


@pytest.mark.parametrize("cls", [FpipeError, PipelineDefinitionError, ModelError, ResumeError])
def test_simple_errors_pickle_with_their_message(cls):
    err = pickle.loads(pickle.dumps(cls("what went wrong")))
    assert type(err) is cls
    assert str(err) == "what went wrong"


# -- did_you_mean ------------------------------------------------------------------------------
def test_did_you_mean_suggests_the_closest_name():
    assert did_you_mean("imgaes", ["images", "labels"]) == " Did you mean 'images'?"


def test_did_you_mean_lists_up_to_three_candidates():
    hint = did_you_mean("scale", ["scale1", "scale2", "scale3", "scale4", "other"])
    assert hint.startswith(" Did you mean ")
    assert hint.count(" or ") == 2
    assert "'other'" not in hint


def test_did_you_mean_is_empty_without_a_close_name():
    assert did_you_mean("zzz", ["images", "labels"]) == ""
    assert did_you_mean("images", []) == ""


def test_did_you_mean_accepts_any_iterable():
    assert did_you_mean("lables", (n for n in ["labels"])) == " Did you mean 'labels'?"


def test_unknown_action_error_uses_did_you_mean():
    with pytest.raises(PipelineDefinitionError, match=r"no action 'kep'\. Did you mean 'keep'\?"):
        Pipeline().kep() << Dataset(2, ErrNums)


# -- ActionError -----------------------------------------------------------------------------------
def test_action_error_defaults():
    err = ActionError("boom")
    assert str(err) == "boom"
    assert (err.step, err.position, err.batch_position, err.batch_indices) == ("", -1, -1, None)


def test_action_error_pickles_with_its_fields():
    err = ActionError(
        "step failed", step="scale(2)", position=3, batch_position=7, batch_indices=[4, 5]
    )
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ActionError
    assert str(back) == "step failed"
    assert (back.step, back.position, back.batch_position, back.batch_indices) == (
        "scale(2)",
        3,
        7,
        [4, 5],
    )


def test_action_error_from_a_run_says_what_where_and_why():
    ds = Dataset(7, ErrNums, preloaded=np.zeros(7))
    with pytest.raises(ActionError) as info:
        (Pipeline().keep().explode() << ds).run(6, shuffle=False)
    err = info.value
    msg = str(err)
    assert msg.startswith(
        "step 1 `explode()` failed on batch #0 (epoch 0, 6 items: 0, 1, 2, 3, 4, ...)"
    )
    assert msg.endswith("ZeroDivisionError: division went wrong")
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert err.batch_indices.tolist() == [0, 1, 2, 3, 4, 5]
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == msg
    assert back.step == "explode()" and back.position == 1 and back.batch_position == 0
    np.testing.assert_array_equal(back.batch_indices, err.batch_indices)


# -- the culprit and the fix: one test per reliability point -------------------------------
class ErrPair(Batch):
    components = ("images", "labels")

    @action
    def shift(self, by=1.0):
        return self.replace(images=self.images + by)

    @action
    def take(self, other):
        return self.replace(labels=other.labels)

    @action
    def keep_first(self, n):
        return self

    @action
    def scribble(self):
        self.images[0, 0] = 1.0
        return self

    @action
    def forgets(self):
        self.replace(images=self.images * 2)

    @action
    def gives_int(self):
        return 3

    @action(effects=True)
    def note(self):
        self.pipeline.set_variable("nots", 1)
        return self

    @action
    def sneaky(self):
        _reach(self)
        return self

    @action(model="errcat_missing")
    def uses_missing(self, m):
        return self

    @action(model="errcat_static")
    def uses_static(self, m):
        return self

    @action
    @inbatch_parallel(init="indices", post="_gather", target="for")
    def fragile(self, item):
        if item == 1:
            raise ValueError("item one is bad")
        return item

    @action
    @inbatch_parallel(init="indices", post="_nope", target="for")
    def no_post(self, item):
        return item

    @action
    @inbatch_parallel(init="_none", target="for")
    def no_items(self, item):
        return item

    def _gather(self, results):
        return self

    def _none(self):
        return None

    def helper(self):
        return self

    @model(mode="static")
    def errcat_static(pipeline, config):
        return {"k": config.get("k", 1)}

    @model(mode="dynamic")
    def errcat_dynamic(batch, config):
        return {"n": len(batch)}

    @model
    def errcat_global():
        return {"g": 1}

    @model(mode="static")
    def errcat_fails(pipeline, config):
        raise RuntimeError("no weights file")


class ErrSingle(Batch):
    components = ("images",)


def _reach(batch):  # a helper fpipe does not look into
    batch.pipeline.update_variable("seen", 1, mode="a")


N = 10
IMAGES = np.arange(2.0 * N).reshape(N, 2)
LABELS = np.arange(N) % 3


def pairs(n: int = N) -> Dataset:
    return Dataset(n, ErrPair, preloaded=(IMAGES[:n].copy(), LABELS[:n].copy()))


def a_batch() -> Batch:
    return pairs().create_batch([0, 1])


def test_a_lazy_run_checks_its_arguments_when_they_are_given():
    p = pairs().p
    with pytest.raises(ValueError, match=r"run\(\): batch_size must be positive, got 0"):
        p.run(0, lazy=True)
    with pytest.raises(TypeError, match=r"run\(\): shuffle must be .* not str \('yes'\)"):
        p.run(2, shuffle="yes", lazy=True)
    with pytest.raises(ValueError, match=r"run\(\): prefetch must be an int >= 0.*got -1"):
        p.run(2, prefetch=-1, lazy=True)
    with pytest.raises(ValueError, match=r"run\(\): unknown executor 'gpu'"):
        p.run(2, executor="gpu", lazy=True)
    with pytest.raises(ValueError, match=r"batch_size=20 is larger than the dataset \(10 items\)"):
        p.run(20, lazy=True)
    stored = p.run(2, lazy=True)  # stored values are checked again under new ones
    with pytest.raises(ValueError, match=r"run\(\): n_iters must be positive, got 0"):
        stored.run(n_iters=0, lazy=True)
    assert stored.run().dataset is p.dataset


def test_run_refuses_an_endless_run_and_says_what_to_give():
    p = pairs().p.shift()
    fix = r"give n_epochs .* or n_iters .* iterate\(\.\.\., n_epochs=None\) or gen_batch"
    with pytest.raises(ValueError, match=r"run\(n_epochs=None\) without n_iters would never end"):
        p.run(2, n_epochs=None)
    with pytest.raises(ValueError, match=fix):
        p.run(2, n_epochs=None, lazy=True).run()  # stored, then run: refused then
    assert len(p.run(2, n_epochs=None, n_iters=3).steps) == 1
    assert len(list(p.gen_batch(2, n_epochs=None, n_iters=7))) == 7  # endless streams: fine


def test_a_join_source_lacking_ids_names_the_join_and_the_ids():
    part = Dataset(np.arange(6), ErrPair, preloaded=(IMAGES[:6].copy(), LABELS[:6].copy()))
    for source, what in ((part, r"Dataset\(6 items"), (part.p, "a pipeline linked to")):
        with pytest.raises(ActionError) as info:
            (pairs().p.shift().join(source).take()).run(4)
        msg = str(info.value)
        assert msg.startswith("step 1 `join(1 source)` failed on batch #1"), msg
        assert re.search(f"join source #0 \\({what}.*lacks 2 of the batch's 4 ids: \\[6, 7\\]", msg)
        assert "create_subset" in msg
        assert info.value.step == "join(1 source)" and info.value.position == 1
        assert isinstance(info.value.__cause__, PipelineDefinitionError)
        assert isinstance(info.value.__cause__.__cause__, KeyError)
    many = Dataset(np.arange(20, 40), ErrPair)
    with pytest.raises(
        ActionError, match=r"lacks 8 of the batch's 8 ids: \[0, 1, 2, 3, 4, \.\.\.\]"
    ):
        (Dataset(20, ErrPair).p.join(many).take()).run(8)


def test_a_model_config_of_the_wrong_type_names_the_model():
    with pytest.raises(
        TypeError,
        match=r"init_model\('errcat_static', config=\.\.\.\): config must be a dict, got list",
    ):
        Pipeline().init_model("errcat_static", [1, 2])
    with pytest.raises(
        TypeError, match=r"section 'errcat_static'.*config must be a dict, got int 5"
    ):
        Pipeline({"errcat_static": 5}).init_model("errcat_static")
    with pytest.raises(
        TypeError, match=r"section 'errcat_dynamic'.*config must be a dict, got str"
    ):
        Pipeline({"errcat_dynamic": "big"}).init_model("errcat_dynamic")
    p = Pipeline({"errcat_static": {"k": 2}}).init_model("errcat_static")
    assert p.get_model_by_name("errcat_static") == {"k": 2}


def test_preloaded_tuple_without_components_says_to_declare_them():
    x, y = np.zeros((N, 3)), np.arange(N)
    declare = 'components = ("x", "y")'
    with pytest.raises(ValueError, match=r"tuple of 2 arrays, but Batch declares no components"):
        Dataset(N, preloaded=(x, y))
    with pytest.raises(ValueError, match=re.escape(f"class MyBatch(Batch): {declare}")):
        Dataset(N, preloaded=(x, y))

    class ErrPlain(Batch):
        pass

    with pytest.raises(ValueError, match=re.escape(f"declare them in ErrPlain: `{declare}`")):
        Dataset(N, ErrPlain, preloaded=(x, y))
    ragged = Dataset(3, preloaded=(np.zeros(2), np.zeros(3), np.zeros(1)))  # one per item
    assert ragged.create_batch([1]).data[0].shape == (3,)


def test_preloaded_array_of_a_one_component_class_is_taken_over_read_only():
    images = np.arange(2.0 * N).reshape(N, 2)
    ds = Dataset(N, ErrSingle, preloaded=images)
    assert ds.preloaded["images"] is images and not images.flags.writeable
    assert ds.create_batch([3]).images.tolist() == [[6.0, 7.0]]
    assert (
        Dataset(N, ErrSingle, preloaded=(images,))
        == ds
        == Dataset(N, ErrSingle, preloaded={"images": images})
    )
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0] = 1.0
    b = ErrSingle([0, 1], preloaded=np.zeros((2, 2)))
    assert b.images.shape == (2, 2)


def test_a_model_action_without_a_parameter_for_the_model_is_refused_at_class_definition():
    with pytest.raises(TypeError) as info:

        class ErrNoModelParam(Batch):
            @action(model="errcat_static")
            def train(self, *, lr=0.1):
                return self

    msg = str(info.value)
    assert "@action(model='errcat_static')" in msg and "train(self, *, lr=0.1)" in msg
    assert "has no parameter for it: write `def train(self, model, *, lr=0.1):`" in msg

    class ErrModelParam(Batch):  # *args takes the model too
        @action(model="errcat_static")
        def train(self, *args):
            return self

    assert ErrModelParam.train.model == "errcat_static"


@pytest.mark.parametrize(
    ("mode", "source", "expected"),
    [
        ("static", "def net(config): pass", "net(pipeline, config)"),
        ("static", "def net(self, pipeline, config): pass", "net(pipeline, config)"),
        ("dynamic", "def net(batch): pass", "net(batch, config)"),
        ("global", "def net(config): pass", "net()"),
    ],
)
def test_a_model_factory_with_the_wrong_signature_shows_the_expected_one(mode, source, expected):
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(TypeError, match=re.escape(f"fpipe calls a {mode} model as {expected}")):
        model(mode=mode)(namespace["net"])


def test_a_failing_factory_says_how_it_was_called():
    with pytest.raises(
        ModelError,
        match=re.escape(
            "failed to build (called as errcat_fails(pipeline, config)): RuntimeError: no weights file"
        ),
    ):
        Pipeline().init_model("errcat_fails")


def test_datasets_and_pipelines_show_both_linking_spellings():
    both = "`pipeline << dataset` or `dataset >> pipeline`"
    for link in (
        lambda: Pipeline() + pairs(),
        lambda: pairs() + Pipeline(),
        lambda: pairs() << Pipeline(),
        lambda: Pipeline() >> pairs(),
        lambda: pairs() >> pairs(),
    ):
        with pytest.raises(TypeError) as info:
            link()
        assert both in str(info.value)


def test_an_unknown_component_suggests_the_closest_one():
    b = a_batch()
    with pytest.raises(
        AttributeError,
        match=r"ErrPair has no component or attribute 'imgs'\. Did you mean 'images'\?",
    ):
        b.imgs
    with pytest.raises(AttributeError, match=r"Its components: \['images', 'labels'\]"):
        b.zzz
    with pytest.raises(
        AttributeError, match=r"item has no component 'lables'\. Did you mean 'labels'\?"
    ):
        b[0].lables
    assert not hasattr(b, "imgs") and hasattr(b, "images")
    with pytest.raises(AttributeError, match=r"^_private$"):
        b._private


def test_a_misspelt_run_argument_gets_a_suggestion():
    p = pairs().p
    with pytest.raises(
        TypeError,
        match=r"run\(\) got an unexpected keyword argument 'n_epoch'\. Did you mean 'n_epochs'\?",
    ):
        p.run(2, n_epoch=1)
    with pytest.raises(
        TypeError,
        match=r"gen_batch\(\) got an unexpected keyword argument 'shufle'\. Did you mean 'shuffle'\?",
    ):
        p.gen_batch(2, shufle=True)
    with pytest.raises(
        TypeError, match=r"unknown run argument 'prefech'\. Did you mean 'prefetch'\?"
    ):
        pairs().next_batch(2, prefech=2)


# -- the catalogue -------------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    """One bad input: ``trigger()`` must raise ``error`` with a message matching ``message``."""

    id: str
    trigger: Callable[[], object]
    error: type[BaseException]
    message: str


def _define(**body: Any) -> Callable[[], object]:
    """A trigger that defines a Batch subclass with ``body``."""
    return lambda: type("ErrCatalogued", (Batch,), dict(body))


def _decorate(decorator: Callable[..., Any], fn: Callable[..., Any]) -> Callable[[], object]:
    return lambda: decorator(fn)


def _static_factory(config):  # one parameter: a static factory needs two
    return None


def _dynamic_factory(self, batch, config):
    return None


def _global_factory(config):
    return None


def _no_model_param(self):
    return self


async def _async_method(self, item):
    return item


def _plain_method(self, item):
    return item


def _set_component():
    a_batch().images = np.zeros((2, 2))


def _del_component():
    del a_batch().images


def _mutate_dataset():
    pairs().x = 1


def _mutate_pipeline():
    Pipeline().steps = ()


def _undeclared_update():
    (
        Pipeline().init_variable("batches", []).update_variable("bathces", 1, mode="a") << pairs()
    ).run(4)


def _undeclared_set():
    (Pipeline().init_variable("notes", 0).note() << pairs()).run(4)


def _rebatch_inside_maybe():
    (pairs().p + Pipeline().rebatch(2) @ 0.5).run(2, seed=1)


def _lacking_join():
    (pairs().p.join(Dataset(np.arange(6), ErrPair)).take()).run(4)


CATALOGUE = [
    # -- DatasetIndex
    Bad(
        "index-duplicate-ids",
        lambda: DatasetIndex([1, 2, 2, 3]),
        ValueError,
        r"ids must be unique, but 1 id\(s\) occur more than once: \[2\]",
    ),
    Bad(
        "index-size-zero",
        lambda: DatasetIndex(0),
        ValueError,
        r"index 0 is empty; an index needs at least one item",
    ),
    Bad(
        "index-size-negative",
        lambda: DatasetIndex(-3),
        ValueError,
        r"index size must be non-negative, got -3",
    ),
    Bad(
        "index-bool",
        lambda: DatasetIndex(True),
        TypeError,
        r"index must be an int, a range or a sequence of ids, not a bool",
    ),
    Bad(
        "index-mixed-ids",
        lambda: DatasetIndex([1, "a"]),
        TypeError,
        r"must be all ints or all strings, not a mix: \[1, 'a'\]",
    ),
    Bad(
        "index-2d",
        lambda: DatasetIndex(np.zeros((2, 2), dtype=int)),
        ValueError,
        r"index must be 1-D, got an array of shape \(2, 2\)",
    ),
    Bad("index-empty-list", lambda: DatasetIndex([]), ValueError, r"index is empty"),
    Bad(
        "index-float-ids",
        lambda: DatasetIndex([1.5, 2.5]),
        TypeError,
        r"ids must be all ints or all strings, got an array of dtype float64",
    ),
    Bad(
        "index-bool-mask",
        lambda: DatasetIndex(np.array([True, False])),
        TypeError,
        r"a boolean mask is not a list of ids",
    ),
    Bad(
        "index-float-size",
        lambda: DatasetIndex(3.5),
        TypeError,
        r"index must be an int, a range, or a sequence of ids, not float",
    ),
    Bad(
        "index-single-id-subset",
        lambda: DatasetIndex(5).create_subset(3),
        TypeError,
        r"ids must be a sequence of ids, not a single int 3; wrap it in a list",
    ),
    Bad(
        "index-subset-duplicates",
        lambda: DatasetIndex(5).create_subset([1, 1]),
        ValueError,
        r"must be unique.*\[1\]",
    ),
    Bad(
        "index-unknown-id",
        lambda: DatasetIndex(10).get_pos(99),
        KeyError,
        r"1 id\(s\) not in this DatasetIndex of 10 items: \[99\]",
    ),
    Bad(
        "index-unknown-ids",
        lambda: DatasetIndex(10).get_pos([3, 42, 43]),
        KeyError,
        r"2 id\(s\) not in this DatasetIndex of 10 items: \[42, 43\]",
    ),
    Bad(
        "index-get-pos-bool",
        lambda: DatasetIndex(10).get_pos(True),
        TypeError,
        r"ids are ints or strings, not a bool",
    ),
    Bad(
        "index-split-share-above-1",
        lambda: DatasetIndex(10).split(1.5),
        ValueError,
        r"shares=1\.5: a single share must be strictly between 0 and 1",
    ),
    Bad(
        "index-split-shares-over-1",
        lambda: DatasetIndex(10).split([0.7, 0.5]),
        ValueError,
        r"shares \[0\.7, 0\.5\] add up to 1\.2, more than 1",
    ),
    Bad(
        "index-split-negative-share",
        lambda: DatasetIndex(10).split([0.5, -0.1]),
        ValueError,
        r"every share must be > 0, got \[0\.5, -0\.1\]",
    ),
    Bad(
        "index-split-no-shares",
        lambda: DatasetIndex(10).split([]),
        ValueError,
        r"shares is empty; give at least one share",
    ),
    Bad(
        "index-split-str",
        lambda: DatasetIndex(10).split("half"),
        TypeError,
        r"shares must be a float or a list of floats, not str",
    ),
    Bad(
        "index-split-too-few-items",
        lambda: DatasetIndex(2).split([0.3, 0.3, 0.3]),
        ValueError,
        r"the index has 2 item\(s\), too few to split into 4 non-empty parts",
    ),
    Bad(
        "index-split-bad-shuffle",
        lambda: DatasetIndex(10).split(0.5, shuffle="yes"),
        TypeError,
        r"shuffle must be a bool, an int seed or a numpy Generator, not str",
    ),
    Bad(
        "index-immutable",
        lambda: setattr(DatasetIndex(3), "x", 1),
        AttributeError,
        r"DatasetIndex is immutable; cannot set 'x'",
    ),
    # -- Dataset
    Bad(
        "dataset-batch-class-not-a-batch",
        lambda: Dataset(N, int),
        TypeError,
        r"batch_class must be a subclass of fpipe\.Batch, got <class 'int'>",
    ),
    Bad(
        "dataset-batch-instance",
        lambda: Dataset(N, a_batch()),
        TypeError,
        r"batch_class must be a subclass of fpipe\.Batch, got ErrPair\(2 items",
    ),
    Bad(
        "dataset-tuple-without-components",
        lambda: Dataset(N, preloaded=(IMAGES, LABELS)),
        ValueError,
        r'Batch declares no components.*components = \("x", "y"\)',
    ),
    Bad(
        "dataset-tuple-too-short",
        lambda: Dataset(N, ErrPair, preloaded=(IMAGES,)),
        ValueError,
        r"preloaded is a tuple of 1 arrays but ErrPair has 2 components \['images', 'labels'\]",
    ),
    Bad(
        "dataset-dict-unknown-component",
        lambda: Dataset(N, ErrPair, preloaded={"imgs": IMAGES}),
        ValueError,
        r"preloaded has components \['imgs'\] that ErrPair does not declare.*Did you mean 'images'\?",
    ),
    Bad(
        "dataset-bare-array-two-components",
        lambda: Dataset(N, ErrPair, preloaded=IMAGES),
        TypeError,
        r"preloaded for ErrPair must be a dict or a tuple of arrays for components \['images', 'labels'\], not ndarray",
    ),
    Bad(
        "dataset-wrong-length",
        lambda: Dataset(N, preloaded=np.zeros(5)),
        ValueError,
        r"component 'data' has shape \(5,\) for 10 items",
    ),
    Bad(
        "dataset-unknown-id",
        lambda: pairs().create_batch([3, 99]),
        KeyError,
        r"1 id\(s\) not in this DatasetIndex of 10 items: \[99\]",
    ),
    Bad(
        "dataset-subset-duplicates",
        lambda: pairs().create_subset([0, 0]),
        ValueError,
        r"must be unique.*\[0\]",
    ),
    Bad(
        "dataset-split-share",
        lambda: pairs().split(2.0),
        ValueError,
        r"shares=2\.0: a single share must be strictly between 0 and 1",
    ),
    Bad(
        "dataset-immutable",
        _mutate_dataset,
        AttributeError,
        r"Dataset is immutable; cannot set 'x'",
    ),
    # -- Batch
    Bad(
        "batch-unknown-component",
        lambda: a_batch().imgs,
        AttributeError,
        r"ErrPair has no component or attribute 'imgs'\. Did you mean 'images'\?",
    ),
    Bad(
        "batch-item-unknown-component",
        lambda: a_batch()[0].imgs,
        AttributeError,
        r"item has no component 'imgs'\. Did you mean 'images'\?",
    ),
    Bad(
        "batch-replace-unknown-component",
        lambda: a_batch().replace(imgs=np.zeros((2, 2))),
        ValueError,
        r"ErrPair has no component 'imgs'.*Did you mean 'images'\?",
    ),
    Bad(
        "batch-set-component",
        _set_component,
        ImmutableBatchError,
        r"cannot set ErrPair\.images.*return self\.replace\(images=\.\.\.\)",
    ),
    Bad(
        "batch-del-component", _del_component, ImmutableBatchError, r"cannot delete ErrPair\.images"
    ),
    Bad(
        "batch-replace-wrong-length",
        lambda: a_batch().replace(images=np.zeros(3)),
        ValueError,
        r"component 'images' has shape \(3,\) for 2 items",
    ),
    Bad(
        "batch-duplicate-components",
        _define(components=("a", "a")),
        TypeError,
        r"ErrCatalogued\.components must be a non-empty tuple of distinct identifiers, got \('a', 'a'\)",
    ),
    Bad(
        "batch-component-clash",
        _define(components=("index", "x")),
        TypeError,
        r"ErrCatalogued\.components \['index'\] clash with Batch attributes",
    ),
    Bad(
        "batch-component-not-identifier",
        _define(components=("1x",)),
        TypeError,
        r"distinct identifiers, got \('1x',\)",
    ),
    Bad(
        "batch-unknown-item",
        lambda: a_batch()[99],
        KeyError,
        r"not in this DatasetIndex of 2 items: \[99\]",
    ),
    Bad(
        "batch-item-many-ids",
        lambda: a_batch()[[0, 1]],
        TypeError,
        r"batch\[\.\.\.\] takes one item id; use batch\.select\(positions\)",
    ),
    Bad(
        "batch-iterate",
        lambda: iter(a_batch()),
        TypeError,
        r"ErrPair is not iterable; iterate over batch\.indices",
    ),
    Bad(
        "batch-select-floats",
        lambda: a_batch().select([0.5]),
        TypeError,
        r"positions must be ints, a slice or a bool mask, not float64",
    ),
    Bad(
        "batch-select-short-mask",
        lambda: a_batch().select(np.array([True])),
        ValueError,
        r"a mask must have one entry per item \(2\), got \(1,\)",
    ),
    Bad(
        "batch-merge-nothing",
        lambda: ErrPair.merge([]),
        ValueError,
        r"Batch\.merge needs at least one batch",
    ),
    Bad(
        "batch-merge-other-class",
        lambda: ErrPair.merge([a_batch(), ErrSingle([5], preloaded=np.zeros((1, 2)))]),
        TypeError,
        r"cannot merge ErrPair with ErrSingle: their components differ",
    ),
    Bad(
        "batch-split-too-many",
        lambda: a_batch().split([5]),
        ValueError,
        r"sizes add up to 5 but the batch has 2 items",
    ),
    Bad(
        "batch-pipeline-outside-a-run",
        lambda: a_batch().pipeline,
        FpipeError,
        r"batch\.pipeline is only available while the batch goes through a running pipeline",
    ),
    Bad(
        "batch-random-outside-a-run",
        lambda: a_batch().random,
        FpipeError,
        r"batch\.random is only defined while the batch goes through a running pipeline",
    ),
    Bad(
        "batch-preloaded-wrong-count",
        lambda: ErrPair([0, 1], preloaded=(np.zeros(2),)),
        ValueError,
        r"tuple of 1 arrays but ErrPair has 2 components",
    ),
    # -- actions: definition and calls
    Bad(
        "action-writes-in-place",
        lambda: a_batch().scribble(),
        ImmutableBatchError,
        r"action 'ErrPair\.scribble'.*return self\.replace\(images=self\.images \* 2\)",
    ),
    Bad(
        "action-returns-none",
        lambda: a_batch().forgets(),
        TypeError,
        r"action 'ErrPair\.forgets' returned NoneType, not a batch\. Did you forget `return self`",
    ),
    Bad(
        "action-returns-int",
        lambda: a_batch().gives_int(),
        TypeError,
        r"action 'ErrPair\.gives_int' returned int, not a batch",
    ),
    Bad(
        "action-wrong-arguments",
        lambda: (pairs().p.shift(1, 2, 3)).run(2),
        PipelineCheckError,
        r"found before any batch ran:\n- step 0 `shift\(1, 2, 3\)`: 3 positional arguments given, "
        r"but ErrPair\.shift\(self, by=1\.0\) takes at most 1 after the batch; pass fewer",
    ),
    Bad(
        "check-unexpected-keyword",
        lambda: pairs().p.shift(byy=2).run(2),
        PipelineCheckError,
        r"step 0 `shift\(byy=2\)`: unexpected keyword argument 'byy'\. Did you mean 'by'\? "
        r"ErrPair\.shift\(self, by=1\.0\) takes: by",
    ),
    Bad(
        "check-missing-argument",
        lambda: pairs().p.keep_first().run(2),
        PipelineCheckError,
        r"step 0 `keep_first\(\)`: missing argument 'n' of ErrPair\.keep_first\(self, n\); "
        r"pass it by position or as n=\.\.\.",
    ),
    Bad(
        "check-argument-twice",
        lambda: pairs().p.shift(1.0, by=2.0).run(2),
        PipelineCheckError,
        r"step 0 `shift\(1\.0, by=2\.0\)`: argument 'by' of ErrPair\.shift\(self, by=1\.0\) is "
        r"given twice, by position and as "
        r"by=\.\.\.; pass it once",
    ),
    Bad(
        "check-join-without-parameter",
        lambda: pairs().p.join(pairs()).keep_first(1).run(2),
        PipelineCheckError,
        r"step 1 `keep_first\(1\)`: 1 positional argument given, but ErrPair\.keep_first\(self, n\) "
        r"takes none after the batch and the joined batch",
    ),
    Bad(
        "check-model-argument-by-name",
        lambda: pairs().p.init_model("errcat_static").uses_static(m=1).run(2),
        PipelineCheckError,
        r"step 1 `uses_static\(m=1\)`: m= is given, but parameter 'm' of "
        r"ErrPair\.uses_static\(self, m\) receives the model; drop m=",
    ),
    Bad(
        "check-several-problems",
        lambda: pairs().p.keep_first().uses_missing().update_variable("n", 1).check(),
        PipelineCheckError,
        r"the pipeline has 3 problems, found before any batch ran:\n- step 0 `keep_first\(\)`: "
        r"missing .*\n- step 1 `uses_missing\(\)`: .*\n- step 2 `update_variable\('n', 1, "
        r"mode='w'\)`: variable 'n' is never declared",
    ),
    Bad(
        "check-template-apply",
        lambda: Pipeline().apply(_plain_method).check(),
        PipelineCheckError,
        r"step 0 `apply\(_plain_method\)`: missing argument 'item' of "
        r"_plain_method\(self, item\); pass it by position or as item=\.\.\.",
    ),
    Bad(
        "action-not-a-function",
        lambda: action(42),
        TypeError,
        r"@action decorates a function, not int",
    ),
    Bad(
        "action-model-not-a-name",
        lambda: action(model=42)(_plain_method),
        TypeError,
        r"@action\(model=\.\.\.\) takes the model's name",
    ),
    Bad(
        "action-lock-not-a-name",
        lambda: action(use_lock=1)(_plain_method),
        TypeError,
        r"@action\(use_lock=\.\.\.\) takes a lock name",
    ),
    Bad(
        "action-effects-not-a-bool",
        lambda: action(effects="yes")(_plain_method),
        TypeError,
        r"@action\(effects=\.\.\.\) takes True or False, not 'yes'",
    ),
    Bad(
        "action-pure-with-model",
        lambda: action(effects=False, model="m")(_plain_method),
        TypeError,
        r"@action\(effects=False\) on '_plain_method' contradicts model=/use_lock=",
    ),
    Bad(
        "action-model-without-parameter",
        lambda: action(model="errcat_static")(_no_model_param),
        TypeError,
        r"_no_model_param\(self\) has no parameter for it: write `def _no_model_param\(self, model\):`",
    ),
    Bad(
        "action-pure-reaches-environment",
        lambda: (Pipeline().init_variable("seen", []).sneaky() << pairs()).run(4),
        ActionError,
        r"`sneaky\(\)` failed.*@action\(effects=True\)",
    ),
    # -- pipelines: construction and algebra
    Bad(
        "pipeline-config-list",
        lambda: Pipeline([1, 2]),
        TypeError,
        r"a pipeline config must be a dict, got list",
    ),
    Bad(
        "pipeline-config-pipeline",
        lambda: Pipeline() << Pipeline(),
        TypeError,
        r"`<<` links a dataset or merges a config dict; add pipelines with `\+`",
    ),
    Bad(
        "pipeline-plus-dataset",
        lambda: Pipeline() + pairs(),
        TypeError,
        r"cannot add a dataset and a pipeline with `\+`.*`pipeline << dataset` or `dataset >> pipeline`",
    ),
    Bad(
        "dataset-plus-pipeline",
        lambda: pairs() + Pipeline(),
        TypeError,
        r"cannot add a dataset and a pipeline with `\+`.*`pipeline << dataset` or `dataset >> pipeline`",
    ),
    Bad(
        "dataset-lshift-pipeline",
        lambda: pairs() << Pipeline(),
        TypeError,
        r"`dataset << pipeline` is the wrong way round.*`pipeline << dataset` or `dataset >> pipeline`",
    ),
    Bad(
        "pipeline-rshift-dataset",
        lambda: Pipeline() >> pairs(),
        TypeError,
        r"`pipeline >> dataset` is the wrong way round.*`pipeline << dataset` or `dataset >> pipeline`",
    ),
    Bad(
        "dataset-rshift-dataset",
        lambda: pairs() >> pairs(),
        TypeError,
        r"`dataset >> x` links a pipeline x to the dataset, but x is Dataset\(10 items.*\(Dataset\)",
    ),
    Bad(
        "pipeline-times-float",
        lambda: Pipeline().shift() * 1.5,
        TypeError,
        r"a pipeline repeats a whole number of times: `pipeline \* 3`, not \* 1\.5",
    ),
    Bad(
        "pipeline-times-negative",
        lambda: Pipeline().shift() * -1,
        ValueError,
        r"a pipeline can be repeated n >= 0 times, not -1",
    ),
    Bad(
        "pipeline-maybe-above-1",
        lambda: Pipeline().shift() @ 1.5,
        ValueError,
        r"`pipeline @ prob` takes a probability in \[0, 1\], not 1\.5",
    ),
    Bad(
        "pipeline-maybe-str",
        lambda: Pipeline().shift() @ "0.5",
        ValueError,
        r"takes a probability in \[0, 1\], not '0\.5'",
    ),
    Bad(
        "pipeline-plus-other-datasets",
        lambda: pairs().p + pairs(5).p,
        PipelineDefinitionError,
        r"cannot add two pipelines linked to different datasets.*\(template_a \+ template_b\) << dataset",
    ),
    Bad(
        "pipeline-plus-other-lazy-args",
        lambda: pairs().p.run(2, lazy=True) + pairs().p.run(3, lazy=True),
        PipelineDefinitionError,
        r"cannot add two pipelines with different lazy run arguments",
    ),
    Bad(
        "pipeline-unknown-action",
        lambda: Pipeline().shfit(1) << pairs(),
        UnknownActionError,
        r"ErrPair has no action 'shfit'\. Did you mean 'shift'\?",
    ),
    Bad(
        "pipeline-unknown-action-linked",
        lambda: pairs().p.tkae(),
        UnknownActionError,
        r"no action 'tkae'\. Did you mean 'take'\?",
    ),
    Bad(
        "pipeline-misspelt-method",
        lambda: pairs().p.gen_bacth(2),
        UnknownActionError,
        r"ErrPair has no action 'gen_bacth'\..* Or did you mean the pipeline method 'gen_batch'",
    ),
    Bad(
        "pipeline-method-not-an-action",
        lambda: pairs().p.helper(),
        PipelineDefinitionError,
        r"ErrPair\.helper is not an action: decorate it with @action",
    ),
    Bad(
        "pipeline-apply-not-callable",
        lambda: Pipeline().apply(5),
        TypeError,
        r"apply\(\) takes a function batch -> batch, not int",
    ),
    Bad(
        "pipeline-join-nothing",
        lambda: Pipeline().join(),
        ValueError,
        r"join\(\) needs at least one source \(a Pipeline or a Dataset\)",
    ),
    Bad(
        "pipeline-join-int",
        lambda: Pipeline().join(5),
        TypeError,
        r"join\(\) sources are Pipelines or Datasets, not int",
    ),
    Bad(
        "pipeline-merge-template",
        lambda: Pipeline().merge(Pipeline()),
        PipelineDefinitionError,
        r"a merge\(\) source pipeline must be linked to a dataset: `source << dataset`",
    ),
    Bad(
        "pipeline-rebatch-zero",
        lambda: Pipeline().rebatch(0),
        ValueError,
        r"rebatch needs a positive int batch_size, not 0",
    ),
    Bad(
        "pipeline-rebatch-float",
        lambda: Pipeline().rebatch(2.5),
        ValueError,
        r"rebatch needs a positive int batch_size, not 2\.5",
    ),
    Bad(
        "pipeline-immutable",
        _mutate_pipeline,
        AttributeError,
        r"Pipeline is immutable; cannot set 'steps'.*`p = p\.some_action\(\)`",
    ),
    Bad(
        "pipeline-join-last",
        lambda: pairs().p.join(pairs()).run(2),
        PipelineDefinitionError,
        r"join\(\.\.\.\) is the last step: follow it with the action",
    ),
    Bad(
        "pipeline-join-then-update",
        lambda: pairs().p.init_variable("n", 0).join(pairs()).update_variable("n", 1).run(2),
        PipelineDefinitionError,
        r"join\(\.\.\.\) must be followed by an action .* not by update_variable\('n'",
    ),
    Bad(
        "pipeline-rebatch-inside-maybe",
        _rebatch_inside_maybe,
        PipelineDefinitionError,
        r"rebatch cannot be used inside `pipeline @ prob`",
    ),
    Bad(
        "pipeline-join-lacking-ids",
        _lacking_join,
        ActionError,
        r"step 0 `join\(1 source\)` failed.*lacks 2 of the batch's 4 ids: \[6, 7\]",
    ),
    Bad(
        "pipeline-run-unlinked",
        lambda: Pipeline().shift().run(2),
        FpipeError,
        r"cannot run: this pipeline has no dataset\. Link one: `pipeline << dataset`",
    ),
    # -- run arguments (run, gen_batch, iterate, next_batch)
    Bad(
        "run-lazy-batch-size-zero",
        lambda: pairs().p.run(0, lazy=True),
        ValueError,
        r"run\(\): batch_size must be positive, got 0",
    ),
    Bad(
        "run-batch-size-negative",
        lambda: pairs().p.run(-2),
        ValueError,
        r"run\(\): batch_size must be positive, got -2",
    ),
    Bad(
        "run-batch-size-float",
        lambda: pairs().p.run(2.5),
        TypeError,
        r"run\(\): batch_size must be a positive int, got 2\.5 \(float\)",
    ),
    Bad(
        "gen-batch-size-str",
        lambda: pairs().p.gen_batch("8"),
        TypeError,
        r"gen_batch\(\): batch_size must be a positive int, got '8' \(str\)",
    ),
    Bad(
        "next-batch-size-bool",
        lambda: pairs().p.next_batch(True),
        TypeError,
        r"next_batch\(\): batch_size must be a positive int, got True \(bool\)",
    ),
    Bad(
        "iterate-batch-size-too-large",
        lambda: pairs().p.iterate(100),
        ValueError,
        r"iterate\(\): batch_size=100 is larger than the dataset \(10 items\)",
    ),
    Bad(
        "run-without-batch-size",
        lambda: pairs().p.run(),
        TypeError,
        r"batch_size is required: pass it, e.g\. `run\(32\)`",
    ),
    Bad(
        "run-shuffle-str",
        lambda: pairs().p.run(2, shuffle="yes"),
        TypeError,
        r"run\(\): shuffle must be a bool, an int seed, .* not str \('yes'\)",
    ),
    Bad(
        "run-shuffle-list",
        lambda: pairs().p.gen_batch(2, shuffle=[1, 2]),
        TypeError,
        r"gen_batch\(\): shuffle must be .* not list \(\[1, 2\]\)",
    ),
    Bad(
        "run-shuffle-negative",
        lambda: pairs().p.run(2, shuffle=-1),
        ValueError,
        r"run\(\): shuffle must be non-negative, got -1",
    ),
    Bad(
        "run-shuffle-and-other-seed",
        lambda: pairs().p.run(2, shuffle=3, seed=4),
        ValueError,
        r"run\(\): shuffle=3 gives the seed, and seed=4 is given too",
    ),
    Bad(
        "run-n-epochs-zero",
        lambda: pairs().p.run(2, n_epochs=0),
        ValueError,
        r"run\(\): n_epochs must be positive, got 0",
    ),
    Bad(
        "run-n-epochs-float",
        lambda: pairs().p.run(2, n_epochs=1.5),
        TypeError,
        r"run\(\): n_epochs must be a positive int or None, got 1\.5",
    ),
    Bad(
        "run-n-iters-zero",
        lambda: pairs().p.run(2, n_iters=0),
        ValueError,
        r"run\(\): n_iters must be positive, got 0",
    ),
    Bad(
        "run-n-iters-str",
        lambda: pairs().p.gen_batch(2, n_iters="3"),
        TypeError,
        r"gen_batch\(\): n_iters must be a positive int or None, got '3'",
    ),
    Bad(
        "run-endless",
        lambda: pairs().p.run(2, n_epochs=None),
        ValueError,
        r"run\(n_epochs=None\) without n_iters would never end: give n_epochs .* or n_iters .* iterate\(\.\.\., n_epochs=None\)",
    ),
    Bad(
        "run-drop-last-int",
        lambda: pairs().p.run(2, drop_last=1),
        TypeError,
        r"run\(\): drop_last must be True or False, got 1",
    ),
    Bad(
        "run-prefetch-negative",
        lambda: pairs().p.run(2, prefetch=-1),
        ValueError,
        r"run\(\): prefetch must be an int >= 0 .*got -1",
    ),
    Bad(
        "iterate-prefetch-float",
        lambda: pairs().p.iterate(2, prefetch=1.5),
        ValueError,
        r"iterate\(\): prefetch must be an int >= 0 .*got 1\.5",
    ),
    Bad(
        "run-seed-str",
        lambda: pairs().p.run(2, seed="x"),
        TypeError,
        r"run\(\): seed must be an int, a numpy Generator or None, not str \('x'\)",
    ),
    Bad(
        "run-seed-negative",
        lambda: pairs().p.run(2, seed=-5),
        ValueError,
        r"run\(\): seed must be non-negative, got -5",
    ),
    Bad(
        "run-executor-unknown",
        lambda: pairs().p.run(2, executor="gpu"),
        ValueError,
        r"run\(\): unknown executor 'gpu'; use None, 'threads', 'processes'",
    ),
    Bad(
        "run-executor-int",
        lambda: pairs().p.gen_batch(2, executor=5),
        ValueError,
        r"gen_batch\(\): unknown executor 5",
    ),
    Bad(
        "run-misspelt-argument",
        lambda: pairs().p.run(2, n_epoch=2),
        TypeError,
        r"run\(\) got an unexpected keyword argument 'n_epoch'\. Did you mean 'n_epochs'\?",
    ),
    Bad(
        "gen-batch-misspelt-argument",
        lambda: pairs().p.gen_batch(2, shufle=True),
        TypeError,
        r"gen_batch\(\) got an unexpected keyword argument 'shufle'\. Did you mean 'shuffle'\?",
    ),
    Bad(
        "dataset-next-batch-misspelt-argument",
        lambda: pairs().next_batch(2, n_epoch=2),
        TypeError,
        r"unknown run argument 'n_epoch'\. Did you mean 'n_epochs'\?",
    ),
    Bad(
        "dataset-next-batch-drop-last-str",
        lambda: pairs().next_batch(2, drop_last="no"),
        TypeError,
        r"next_batch\(\): drop_last must be True or False, got 'no'",
    ),
    Bad(
        "run-lazy-not-a-bool",
        lambda: pairs().p.run(2, lazy="yes"),
        TypeError,
        r"run\(lazy=\.\.\.\) takes True or False, got 'yes'",
    ),
    Bad(
        "run-checkpoint-not-a-checkpoint",
        lambda: pairs().p.run(2, checkpoint="run.ckpt"),
        TypeError,
        r"run\(checkpoint=\.\.\.\) takes a fpipe\.Checkpoint, got 'run\.ckpt'",
    ),
    Bad(
        "run-lazy-with-checkpoint",
        lambda: pairs().p.run(2, lazy=True, checkpoint=Checkpoint("run.ckpt")),
        TypeError,
        r"checkpoint= would be lost: pass checkpoint= to the later run\(\)",
    ),
    # -- variables
    Bad(
        "variable-name-not-str",
        lambda: Pipeline().init_variable(5),
        TypeError,
        r"a variable name is a str, not int",
    ),
    Bad(
        "variable-init-not-callable",
        lambda: Pipeline().init_variable("n", init=5),
        TypeError,
        r"init must be a callable returning the initial value",
    ),
    Bad(
        "variable-get-undeclared",
        lambda: Pipeline().init_variable("loss", 0).get_variable("los"),
        UnknownVariableError,
        r"pipeline has no variable 'los'; known variables: \['loss'\]\. Did you mean 'loss'\?",
    ),
    Bad(
        "variable-delete-undeclared",
        lambda: Pipeline().init_variable("a", 0).del_variable("x"),
        UnknownVariableError,
        r"pipeline has no variable 'x' to delete; known: \['a'\]",
    ),
    Bad(
        "variable-bad-mode",
        lambda: Pipeline().update_variable("n", 1, mode="x"),
        ValueError,
        r"unknown update mode 'x'; use 'w' \(write\), 'a' \(append\) or 'e' \(extend\)",
    ),
    Bad(
        "variable-update-undeclared",
        _undeclared_update,
        PipelineCheckError,
        r"step 1 `update_variable\('bathces', 1, mode='a'\)`: variable 'bathces' is never "
        r"declared\. Did you mean 'batches'\? Known variables: \['batches'\]\. Add "
        r"\.init_variable\('bathces', default\) to the pipeline",
    ),
    Bad(
        "check-variable-read-before-declared",
        lambda: pairs().p.shift(V("step")).init_variable("step", 1.0).run(2),
        PipelineCheckError,
        r"step 0 `shift\(V\('step'\)\)`: V\('step'\) reads variable 'step' before it is "
        r"declared: its \.init_variable\('step', \.\.\.\) is step 1; move it before this step",
    ),
    Bad(
        "check-variable-read-undeclared",
        lambda: pairs().p.shift(V("stpe")).run(2),
        PipelineCheckError,
        r"step 0 `shift\(V\('stpe'\)\)`: V\('stpe'\) reads variable 'stpe', which is never "
        r"declared\. Add \.init_variable\('stpe', default\) before this step",
    ),
    Bad(
        "check-save-to-undeclared",
        lambda: pairs().p.shift(save_to=V("shifted", mode="a")).run(2),
        PipelineCheckError,
        r"save_to=V\('shifted', mode='a'\): variable 'shifted' is never declared\. Add "
        r"\.init_variable\('shifted', default\) to the pipeline",
    ),
    Bad(
        "check-unknown-component",
        lambda: pairs().p.shift(B("imags").mean()).run(2),
        PipelineCheckError,
        r"step 0 `shift\(B\('imags'\)\.mean\(\)\)`: B\('imags'\): ErrPair has no component "
        r"'imags'\. Did you mean 'images'\? Its components: \['images', 'labels'\]; fix the "
        r"name, or declare it in ErrPair\.components",
    ),
    Bad(
        "check-missing-config-key",
        lambda: (pairs().p.shift(C("net/shift")) << {"net": {"shfit": 1}}).run(2),
        PipelineCheckError,
        r"step 0 `shift\(C\('net/shift'\)\)`: C\('net/shift'\): config\['net'\] has no key "
        r"'shift'\. Did you mean 'shfit'\? Its keys: \['shfit'\]\. Give it in the config, e\.g\. "
        r"`Pipeline\(\{'net': \{'shift': \.\.\.\}\}\)`",
    ),
    Bad(
        "variable-set-undeclared-in-action",
        _undeclared_set,
        ActionError,
        r"`note\(\)` failed.*cannot set variable 'nots'.*Did you mean 'notes'\?",
    ),
    # -- models
    Bad(
        "model-unknown-mode",
        lambda: model(mode="lazy")(_static_factory),
        ValueError,
        r"unknown model mode 'lazy'; use one of global, static, dynamic",
    ),
    Bad(
        "model-mode-positional",
        lambda: model("static"),
        TypeError,
        r"write @model\(mode=\.\.\.\) with a keyword",
    ),
    Bad(
        "model-static-signature",
        lambda: model(mode="static")(_static_factory),
        TypeError,
        r"static model factory _static_factory\(config\) has the wrong signature: fpipe calls a static model as _static_factory\(pipeline, config\)",
    ),
    Bad(
        "model-dynamic-signature",
        lambda: model(mode="dynamic")(_dynamic_factory),
        TypeError,
        r"fpipe calls a dynamic model as _dynamic_factory\(batch, config\)",
    ),
    Bad(
        "model-global-signature",
        lambda: model(_global_factory),
        TypeError,
        r"fpipe calls a global model as _global_factory\(\)",
    ),
    Bad(
        "model-unknown-name",
        lambda: Pipeline().init_model("errcat_statc"),
        ModelError,
        r"no @model named 'errcat_statc' is defined on any Batch class\. Did you mean 'errcat_static'",
    ),
    Bad(
        "model-name-not-str",
        lambda: Pipeline().init_model(5),
        TypeError,
        r"a model is named by a str or its @model method, not int",
    ),
    Bad(
        "model-init-global",
        lambda: Pipeline().init_model("errcat_global"),
        ModelError,
        r"ErrPair\.errcat_global is a global model: .* needs no init_model",
    ),
    Bad(
        "model-config-list",
        lambda: Pipeline().init_model("errcat_static", [1]),
        TypeError,
        r"init_model\('errcat_static', config=\.\.\.\): config must be a dict, got list",
    ),
    Bad(
        "model-config-section-int",
        lambda: Pipeline({"errcat_static": 5}).init_model("errcat_static"),
        TypeError,
        r"model 'errcat_static': the pipeline config's section 'errcat_static' .* config must be a dict, got int 5",
    ),
    Bad(
        "model-factory-fails",
        lambda: Pipeline().init_model("errcat_fails"),
        ModelError,
        r"static model ErrPair\.errcat_fails failed to build .*RuntimeError: no weights file",
    ),
    Bad(
        "model-get-unknown",
        lambda: Pipeline().get_model_by_name("nope"),
        ModelError,
        r"pipeline has no model 'nope'",
    ),
    Bad(
        "model-import-from-int",
        lambda: Pipeline().import_model("errcat_static", 5),
        TypeError,
        r"import_model takes a source Pipeline, not int",
    ),
    Bad(
        "model-import-missing",
        lambda: Pipeline().import_model("errcat_nope", Pipeline()),
        ModelError,
        r"import_model\('errcat_nope', source\): the source pipeline \(a template, 0 steps\) has no model 'errcat_nope'",
    ),
    Bad(
        "model-definition-called",
        lambda: ErrPair.errcat_static(None, {}),
        ModelError,
        r"model definition ErrPair\.errcat_static must not be called.*init_model\('errcat_static'\)",
    ),
    Bad(
        "model-static-descriptor",
        lambda: ErrPair.errcat_static.descriptor,
        ModelError,
        r"ErrPair\.errcat_static is a static model: it has no descriptor outside a pipeline",
    ),
    Bad(
        "model-static-not-initialised",
        lambda: pairs().p.uses_static().run(2),
        PipelineCheckError,
        r"step 0 `uses_static\(\)`: static model ErrPair\.errcat_static is used but never "
        r"initialised: add \.init_model\('errcat_static'\) to the pipeline",
    ),
    Bad(
        "model-action-unknown-model",
        lambda: pairs().p.uses_missing().run(2),
        PipelineCheckError,
        r"step 0 `uses_missing\(\)`: @action\(model='errcat_missing'\) names no model: ErrPair "
        r"has no @model 'errcat_missing' and the pipeline neither initialises nor imports one.*"
        r"Define it with @model on ErrPair, or add \.import_model\('errcat_missing', source\)",
    ),
    # -- in-batch parallelism
    Bad(
        "parallel-unknown-target",
        lambda: inbatch_parallel(init="indices", target="gpu"),
        ValueError,
        r"unknown inbatch_parallel target 'gpu'; use one of threads, async, for",
    ),
    Bad(
        "parallel-bad-init",
        lambda: inbatch_parallel(init="not valid!"),
        ValueError,
        r"init must be one of \('indices', 'items', 'run_once'\), a method name or a function",
    ),
    Bad(
        "parallel-async-target-plain-method",
        _decorate(inbatch_parallel(init="indices", target="async"), _plain_method),
        TypeError,
        r"target='async' needs an `async def` method; _plain_method is not",
    ),
    Bad(
        "parallel-async-method-on-threads",
        _decorate(inbatch_parallel(init="indices"), _async_method),
        TypeError,
        r"_async_method is `async def`: use target='async'",
    ),
    Bad(
        "parallel-item-fails",
        lambda: a_batch().fragile(),
        FpipeError,
        r"fragile failed for item #1 \(1\) of 2: ValueError: item one is bad",
    ),
    Bad(
        "parallel-unknown-post",
        lambda: a_batch().no_post(),
        AttributeError,
        r"inbatch_parallel post '_nope' is not a method of ErrPair",
    ),
    Bad(
        "parallel-init-returns-none",
        lambda: a_batch().no_items(),
        TypeError,
        r"inbatch_parallel init '_none' must return a list of items, got None",
    ),
    # -- checkpoints and states
    Bad(
        "checkpoint-every-zero",
        lambda: Checkpoint("run.ckpt", every=0),
        ValueError,
        r"Checkpoint\(every=\.\.\.\) must be a positive int, not 0",
    ),
    Bad(
        "checkpoint-every-float",
        lambda: Checkpoint("run.ckpt", every=1.5),
        ValueError,
        r"Checkpoint\(every=\.\.\.\) must be a positive int, not 1\.5",
    ),
    Bad("state-empty-dict", lambda: fpipe.IterState.from_dict({}), ValueError, r"IterState|state"),
    Bad("state-not-a-dict", lambda: fpipe.IterState.from_dict("x"), ValueError, r"IterState|state"),
]


def test_the_catalogue_is_large_and_its_ids_are_unique():
    ids = [case.id for case in CATALOGUE]
    assert len(ids) >= 100
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.id for case in CATALOGUE])
def test_bad_input_is_refused_with_a_message_that_names_the_culprit(case: Bad):
    with pytest.raises(case.error) as info:
        case.trigger()
    message = str(info.value)
    assert re.search(case.message, message, re.DOTALL), f"{case.id}: {message!r}"
