"""Model definitions, model actions, import, locks and the run environment (no TensorFlow).

Descriptors here are dicts of numpy weights. Model names carry a ``tm_`` prefix because
a template pipeline resolves names among *all* Batch classes alive in the process.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from fpipe import (
    ActionError,
    Batch,
    Dataset,
    Environment,
    ModelError,
    Pipeline,
    PipelineCheckError,
    SkipBatch,
    action,
    model,
)
from fpipe.models import ModelDefinition, find_definition

CALLS: Counter[str] = Counter()
SEEN: dict[str, list] = {}


class TMBatch(Batch):
    components = ("images", "labels")

    @model
    def tm_global():
        CALLS["tm_global"] += 1
        return {"w": np.zeros(2), "kind": "global"}

    @model(mode="static")
    def tm_static(pipeline, config):
        CALLS["tm_static"] += 1
        SEEN.setdefault("tm_static", []).append(
            {
                "config": dict(config),
                "scale": pipeline.get_variable("scale", None),
                "has_late": pipeline.has_variable("late"),
                "pipeline_config": dict(pipeline.config),
            }
        )
        return {"w": np.full(2, float(config.get("init", 0.0))), "kind": "static"}

    @model(mode="dynamic")
    def tm_dynamic(batch, config):
        CALLS["tm_dynamic"] += 1
        SEEN.setdefault("tm_dynamic", []).append(
            {"shape": batch.images.shape[1:], "config": dict(config)}
        )
        return {"w": np.zeros(batch.images.shape[1:]), "kind": "dynamic"}

    @action(model="tm_static")
    def use_static(self, m):
        self.pipeline.update_variable("static_ids", id(m), mode="a")
        return self

    @action(model="tm_dynamic")
    def use_dynamic(self, m):
        self.pipeline.update_variable("dynamic_ids", id(m), mode="a")
        return self

    @action(model="tm_dynamic")
    def use_dynamic_too(self, m):
        self.pipeline.update_variable("dynamic_ids", id(m), mode="a")
        return self

    @action(model="tm_global")
    def use_global(self, m):
        self.pipeline.update_variable("global_ids", id(m), mode="a")
        return self

    @action
    def lookup(self, name):
        self.pipeline.update_variable("looked_up", self.get_model_by_name(name)["kind"], mode="a")
        return self


def make_ds(n=20, width=3, cls=TMBatch):
    images = np.arange(n * width, dtype=float).reshape(n, width)
    return Dataset(n, cls, preloaded=(images, np.arange(n) % 2))


@pytest.fixture(autouse=True)
def _reset_seen():
    SEEN.clear()


# -- model definitions ----------------------------------------------------------------


def test_model_decorator_forms_default_to_global():
    class TMForms(Batch):
        @model
        def tm_bare():
            return "bare"

        @model()
        def tm_called():
            return "called"

        @model(mode="global")
        def tm_explicit():
            return "explicit"

    assert [TMForms.tm_bare.mode, TMForms.tm_called.mode, TMForms.tm_explicit.mode] == [
        "global"
    ] * 3
    assert (TMForms.tm_bare.descriptor, TMForms.tm_called.descriptor) == ("bare", "called")
    assert TMForms.tm_explicit.descriptor == "explicit"
    assert isinstance(TMForms.__dict__["tm_bare"], ModelDefinition)


def test_unknown_mode_is_an_error_at_class_creation():
    with pytest.raises(ValueError, match=r"unknown model mode 'lazy'.*global, static, dynamic"):

        class TMBadMode(Batch):
            @model(mode="lazy")
            def tm_bad(pipeline, config):
                return None


def test_global_model_is_built_once_when_the_class_is_created():
    built = []

    class TMGlobalOnce(Batch):
        @model
        def tm_g_once():
            built.append(1)
            return {"w": 1}

        @action(model="tm_g_once")
        def touch(self, m):
            self.pipeline.update_variable("ids", id(m), mode="a")
            return self

    assert built == [1]  # before any pipeline exists
    p = Pipeline().init_variable("ids", []).touch() << Dataset(6, TMGlobalOnce)
    r1, r2 = p.run(2), p.run(3, prefetch=2)
    assert built == [1]
    assert set(r1.get_variable("ids") + r2.get_variable("ids")) == {
        id(TMGlobalOnce.tm_g_once.descriptor)
    }
    assert r1.get_model_by_name("tm_g_once") is TMGlobalOnce.tm_g_once.descriptor


def test_global_model_that_fails_says_when_it_was_built():
    with pytest.raises(ModelError, match=r"global model TMBroken.tm_broken failed to build when"):

        class TMBroken(Batch):
            @model
            def tm_broken():
                raise RuntimeError("no GPU")


def test_static_and_dynamic_models_have_no_descriptor_outside_a_pipeline():
    with pytest.raises(ModelError, match=r"TMBatch.tm_static is a static model.*get_model_by_name"):
        TMBatch.tm_static.descriptor
    with pytest.raises(ModelError, match="is a dynamic model"):
        TMBatch.tm_dynamic.descriptor


def test_init_model_of_a_global_model_is_refused():
    with pytest.raises(ModelError, match=r"is a global model.*needs no init_model"):
        Pipeline().init_model("TMBatch.tm_global")


def test_calling_a_definition_directly_is_refused_with_directions():
    with pytest.raises(ModelError, match=r"must not be called.*get_model_by_name\('tm_static'\)"):
        TMBatch.tm_static(None, {})
    with pytest.raises(ModelError, match=r"init_model\('tm_static'\)"):
        TMBatch.tm_static(None, {})
    batch = make_ds().create_batch([0, 1])
    with pytest.raises(ModelError, match=r"@action\(model='tm_dynamic'\)"):
        batch.tm_dynamic({})
    with pytest.raises(ModelError, match="must not be called"):
        TMBatch.tm_global()


# -- static models ------------------------------------------------------------------------


def test_static_model_is_built_once_when_init_model_is_added():
    before = CALLS["tm_static"]
    template = Pipeline().init_variable("static_ids", []).init_model("tm_static")
    assert CALLS["tm_static"] == before + 1
    ds_a, ds_b = make_ds(10), make_ds(30, width=5)
    derived = [
        template << ds_a,
        (template << ds_a).use_static(),
        template + Pipeline().use_static(),
        (template + Pipeline().use_static()) << ds_b,
        ((template << ds_b).use_static() * 2).use_static(),
    ]
    results = [p.run(4) for p in derived if p.dataset is not None]
    results.append(derived[1].run(3, prefetch=3, shuffle=1))
    assert CALLS["tm_static"] == before + 1
    descriptor = template.get_model_by_name("tm_static")
    assert all(p.get_model_by_name("tm_static") is descriptor for p in derived)
    assert all(r.get_model_by_name("tm_static") is descriptor for r in results)
    assert {i for r in results for i in r.get_variable("static_ids")} == {id(descriptor)}


def test_static_factory_sees_earlier_variables_and_the_config():
    p = (
        Pipeline(config={"tm_static": {"init": 2.0, "units": 4}, "other": 1})
        .init_variable("scale", 3)
        .init_model("tm_static", config={"units": 8})
        .init_variable("late", 1)
    )
    (seen,) = SEEN["tm_static"]
    assert seen == {
        "config": {"init": 2.0, "units": 8},
        "scale": 3,
        "has_late": False,
        "pipeline_config": {"tm_static": {"init": 2.0, "units": 4}, "other": 1},
    }
    assert p.get_model_by_name("tm_static")["w"].tolist() == [2.0, 2.0]


def test_static_config_from_a_config_linked_with_lshift():
    p = (Pipeline() << {"tm_static": {"init": 5.0}}).init_model("tm_static")
    assert SEEN["tm_static"][-1]["config"] == {"init": 5.0}
    assert p.get_model_by_name("tm_static")["w"].tolist() == [5.0, 5.0]


def test_static_model_failure_names_the_model():
    class TMStaticFails(Batch):
        @model(mode="static")
        def tm_static_fails(pipeline, config):
            return pipeline.get_variable("session")

    with pytest.raises(ModelError, match=r"static model TMStaticFails.tm_static_fails failed"):
        Pipeline().init_model("tm_static_fails")


def test_static_model_used_without_init_model_says_to_add_it():
    p = make_ds().p.use_static()
    with pytest.raises(
        PipelineCheckError, match=r"never initialised: add \.init_model\('tm_static'\)"
    ):
        p.run(5)


# -- resolving names on templates ------------------------------------------------------------


def test_template_resolves_a_name_among_all_batch_classes():
    p = Pipeline().init_model("tm_static")
    assert p.batch_class is None
    (step,) = p.steps
    assert step.definition is TMBatch.__dict__["tm_static"]


def test_ambiguous_name_lists_candidates_and_accepts_qualified_names_or_the_method():
    made = []

    class TMAmbigA(Batch):
        @model(mode="static")
        def tm_ambig(pipeline, config):
            made.append("A")
            return "A"

    class TMAmbigB(Batch):
        @model(mode="static")
        def tm_ambig(pipeline, config):
            made.append("B")
            return "B"

    with pytest.raises(ModelError, match=r"'tm_ambig' is ambiguous.*TMAmbigA.tm_ambig, TMAmbigB"):
        Pipeline().init_model("tm_ambig")
    assert made == []
    assert Pipeline().init_model("TMAmbigB.tm_ambig").get_model_by_name("tm_ambig") == "B"
    assert Pipeline().init_model(TMAmbigA.tm_ambig).get_model_by_name("tm_ambig") == "A"
    # a linked pipeline prefers its own batch class's definition
    assert (Dataset(3, TMAmbigA).p.init_model("tm_ambig")).get_model_by_name("tm_ambig") == "A"
    assert made == ["B", "A", "A"]


def test_unknown_model_name_suggests_a_close_one():
    with pytest.raises(ModelError, match=r"no @model named 'tm_statc'.*Did you mean .tm_static."):
        Pipeline().init_model("tm_statc")
    with pytest.raises(TypeError, match="named by a str or its @model method"):
        find_definition(3)


# -- dynamic models --------------------------------------------------------------------------


def dynamic_pipeline(ds=None, **config):
    p = (
        Pipeline(config=config or None)
        .init_variable("dynamic_ids", [])
        .use_dynamic()
        .use_dynamic_too()
    )
    return p << (ds if ds is not None else make_ds())


def test_dynamic_model_is_built_lazily_once_per_run():
    before = CALLS["tm_dynamic"]
    p = dynamic_pipeline()
    assert CALLS["tm_dynamic"] == before  # defining builds nothing
    r1 = p.run(3)
    assert CALLS["tm_dynamic"] == before + 1
    r2 = p.run(5, shuffle=2)
    assert CALLS["tm_dynamic"] == before + 2
    m1, m2 = r1.get_model_by_name("tm_dynamic"), r2.get_model_by_name("tm_dynamic")
    assert m1 is not m2
    assert set(r1.get_variable("dynamic_ids")) == {id(m1)}
    assert len(r1.get_variable("dynamic_ids")) == 2 * 7  # 7 batches, two actions each
    assert set(r2.get_variable("dynamic_ids")) == {id(m2)}


def test_dynamic_model_is_not_built_when_no_action_asks_for_it():
    before = CALLS["tm_dynamic"]
    r = (Pipeline().init_model("tm_dynamic") << make_ds()).run(4)
    assert CALLS["tm_dynamic"] == before
    assert "tm_dynamic" not in r.models


@pytest.mark.parametrize("prefetch", [0, 1, 4])
def test_dynamic_model_is_built_once_under_prefetch(prefetch):
    before = CALLS["tm_dynamic"]
    r = dynamic_pipeline().run(2, prefetch=prefetch, n_epochs=2)
    assert CALLS["tm_dynamic"] == before + 1
    assert set(r.get_variable("dynamic_ids")) == {id(r.get_model_by_name("tm_dynamic"))}


def test_dynamic_model_sees_the_shapes_of_the_data():
    dynamic_pipeline(make_ds(10, width=3)).run(5)
    dynamic_pipeline(make_ds(10, width=7)).run(5)
    assert [s["shape"] for s in SEEN["tm_dynamic"]] == [(3,), (7,)]


def test_dynamic_model_config_merges_init_model_over_the_pipeline_section():
    p = (
        Pipeline(config={"tm_dynamic": {"units": 4, "lr": 0.1}})
        .init_model("tm_dynamic", config={"lr": 0.01})
        .init_variable("dynamic_ids", [])
        .use_dynamic()
        << make_ds()
    )
    p.run(10)
    assert SEEN["tm_dynamic"][-1]["config"] == {"units": 4, "lr": 0.01}
    dynamic_pipeline(tm_dynamic={"units": 2}).run(10)
    assert SEEN["tm_dynamic"][-1]["config"] == {"units": 2}


def test_dynamic_model_failure_names_the_model_and_the_batch():
    class TMDynFails(Batch):
        @model(mode="dynamic")
        def tm_dyn_fails(batch, config):
            raise ValueError("bad shape")

        @action(model="tm_dyn_fails")
        def fit(self, m):
            return self

    with pytest.raises(ActionError, match=r"fit\(\)` failed on batch #0.*TMDynFails.tm_dyn_fails"):
        Dataset(4, TMDynFails).p.fit().run(2)


# -- model actions and get_model_by_name ------------------------------------------------------


def test_several_actions_share_one_model():
    class TMShare(Batch):
        @model(mode="dynamic")
        def tm_share(batch, config):
            return {"w": np.zeros(1), "steps": []}

        @action(model="tm_share")
        def train(self, m, lr=1.0):
            m["steps"].append(("train", lr))
            return self

        @action(model="tm_share")
        def evaluate(self, m):
            m["steps"].append(("eval", len(self)))
            return self

    r = Dataset(5, TMShare).p.train(lr=0.5).evaluate().run(3)
    assert r.get_model_by_name("tm_share")["steps"] == [
        ("train", 0.5),
        ("eval", 3),
        ("train", 0.5),
        ("eval", 2),
    ]


def _hit_by_hand(batch):
    return batch.hit("inner")


def test_model_action_called_by_hand_inside_a_run_gets_the_model():
    class TMByHand(Batch):
        @model
        def tm_by_hand():
            return {"hits": []}

        @action(model="tm_by_hand")
        def hit(self, m, tag):
            m["hits"].append(tag)
            return self

        # calling a model action by hand reaches the run's models: `outer` must say so
        @action(effects=True)
        def outer(self):
            return self.hit("inner")

        @action
        def undeclared_outer(self):
            return _hit_by_hand(self)  # fpipe cannot see into this helper

    Dataset(4, TMByHand).p.outer().run(2)
    assert TMByHand.tm_by_hand.descriptor["hits"] == ["inner", "inner"]
    with pytest.raises(ActionError, match=r"UndeclaredEffectError.*@action\(effects=True\)"):
        Dataset(4, TMByHand).p.undeclared_outer().run(2)
    assert TMByHand.tm_by_hand.descriptor["hits"] == ["inner", "inner"]  # it never ran


def _log_size(batch):  # a helper: fpipe cannot see that it reaches the environment
    batch.pipeline.update_variable("sizes", len(batch), mode="a")


def test_a_pure_action_cannot_swallow_its_undeclared_effect():
    # FPIPE BUG (reported, left failing on purpose): PureView only *raises*
    # UndeclaredEffectError, so a pure action whose own `try/except Exception` (or
    # `except ValueError`: the error derives from ValueError through
    # PipelineDefinitionError) surrounds the call swallows it, and the run goes on
    # silently without the effect. fpipe/actions.py promises that such an action "is
    # stopped at its first call".
    class TMCatcher(Batch):
        @action
        def careless(self):
            try:
                _log_size(self)
            except Exception:  # best-effort logging: meant for the helper's own errors
                pass
            return self

    p = Dataset(4, TMCatcher).p.init_variable("sizes", []).careless()
    with pytest.raises(ActionError, match="UndeclaredEffectError"):
        p.run(2)


def test_get_model_by_name_prefers_imported_then_static_then_dynamic_then_global():
    class TMOrderSource(Batch):
        @model(mode="static")
        def tm_o(pipeline, config):
            return "imported"

        @model(mode="dynamic")
        def tm_o2(batch, config):
            return "dynamic"

    class TMOrderOther(Batch):
        @model(mode="static")
        def tm_o(pipeline, config):
            return "static"

    class TMOrder(Batch):
        @model
        def tm_o():
            return "global"

        @model
        def tm_o2():
            return "global"

        @action
        def record(self, name):
            self.pipeline.update_variable(name, self.get_model_by_name(name), mode="a")
            return self

    source = Pipeline().init_model("TMOrderSource.tm_o")
    ds = Dataset(4, TMOrder)
    base = Pipeline().init_variable("tm_o", []).init_variable("tm_o2", [])
    steps = Pipeline().record("tm_o").record("tm_o2")

    only_global = (base + steps << ds).run(2)
    assert only_global.get_variable("tm_o") == ["global", "global"]
    assert only_global.get_model_by_name("tm_o") == "global"

    with_dynamic = (base.init_model("TMOrderSource.tm_o2") + steps << ds).run(2)
    assert with_dynamic.get_variable("tm_o2") == ["dynamic", "dynamic"]

    static = base.init_model("TMOrderOther.tm_o")
    assert (static + steps << ds).run(2).get_variable("tm_o") == ["static", "static"]
    assert static.get_model_by_name("tm_o") == "static"

    imported = static.import_model("tm_o", source)
    r = (imported + steps << ds).run(2)
    assert r.get_variable("tm_o") == ["imported", "imported"]
    assert r.get_model_by_name("tm_o") == "imported"
    assert imported.get_model_by_name("tm_o") == "imported"
    assert r.models["tm_o"] == "imported"
    # imported wins whichever comes first in the pipeline
    both = Pipeline().import_model("tm_o", source).init_model("TMOrderOther.tm_o")
    assert both.get_model_by_name("tm_o") == "imported"
    assert both.models["tm_o"] == "imported"


def test_unknown_model_name_lists_the_known_ones():
    p = Pipeline().init_model("tm_static") << make_ds()
    with pytest.raises(ModelError, match=r"no model 'tm_nope'; it has \['tm_static'\]"):
        p.get_model_by_name("tm_nope")
    with pytest.raises(
        ActionError, match=r"no model named 'tm_nope'.*known models: \[.*'tm_global'"
    ):
        p.lookup("tm_nope").run(10)


def test_batch_get_model_by_name_inside_an_action():
    r = (
        Pipeline()
        .init_variable("looked_up", [])
        .init_model("tm_static")
        .lookup("tm_static")
        .lookup("tm_dynamic")
        .lookup("tm_global")
        << make_ds()
    ).run(20)
    assert r.get_variable("looked_up") == ["static", "dynamic", "global"]


def test_model_action_under_prefetch_runs_on_the_driver_in_batch_order():
    class TMOrderly(Batch):
        @model(mode="dynamic")
        def tm_orderly(batch, config):
            return {"seen": [], "threads": set()}

        @action
        def heavy(self):
            time.sleep(0.002 * (self.indices[0] % 3))
            return self.replace(data=self.data * 2)

        @action(model="tm_orderly")
        def fit(self, m):
            m["seen"].append(int(self.indices[0]))
            m["threads"].add(threading.current_thread().name)
            return self

    ds = Dataset(40, TMOrderly, preloaded=np.arange(40.0))
    r = ds.p.heavy().fit().run(4, prefetch=4, shuffle=3)
    expected = [int(b.indices[0]) for b in ds.p.gen_batch(4, shuffle=3)]
    m = r.get_model_by_name("tm_orderly")
    assert m["seen"] == expected
    assert m["threads"] == {threading.current_thread().name}


# -- import_model ---------------------------------------------------------------------------


def test_import_model_takes_the_trained_descriptor_and_never_rebuilds():
    train = dynamic_pipeline().run(4)
    trained = train.get_model_by_name("tm_dynamic")
    before = Counter(CALLS)
    inference = (
        Pipeline().init_variable("dynamic_ids", []).import_model("tm_dynamic", train).use_dynamic()
    )
    results = [(inference << make_ds(12)).run(5, prefetch=p) for p in (0, 2)]
    assert dict(CALLS) == dict(before)
    for r in results:
        assert set(r.get_variable("dynamic_ids")) == {id(trained)}
        assert r.get_model_by_name("tm_dynamic") is trained
    assert inference.get_model_by_name("tm_dynamic") is trained


def test_import_model_from_a_template_with_a_static_model():
    template = Pipeline().init_model("tm_static", config={"init": 7.0})
    before = CALLS["tm_static"]
    p = Pipeline().import_model("tm_static", template).init_variable("static_ids", []).use_static()
    r = (p << make_ds()).run(10)
    assert CALLS["tm_static"] == before
    assert r.get_variable("static_ids") == [id(template.get_model_by_name("tm_static"))] * 2


def test_import_of_a_missing_model_names_the_model_and_the_source():
    source = dynamic_pipeline()  # never run: its dynamic model does not exist yet
    with pytest.raises(ModelError, match=r"import_model\('tm_dynamic', source\).*source pipeline"):
        Pipeline().import_model("tm_dynamic", source)
    with pytest.raises(ModelError, match=r"use the pipeline that run\(\) returned"):
        Pipeline().import_model("tm_dynamic", source)
    with pytest.raises(TypeError, match="takes a source Pipeline, not Dataset"):
        Pipeline().import_model("tm_dynamic", make_ds())


# -- locks ------------------------------------------------------------------------------------


class TMLocked(Batch):
    guard = threading.Lock()
    active = 0
    peak = 0

    @classmethod
    def reset(cls):
        cls.active = cls.peak = 0

    @model(mode="dynamic")
    def tm_locked(batch, config):
        return {"updates": 0}

    @action(model="tm_locked", use_lock="tm_lock")
    def train(self, m, boom_at=None, skip_at=None):
        cls = type(self)
        with cls.guard:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
        try:
            time.sleep(0.001)
            if boom_at is not None and int(self.indices[0]) == boom_at:
                raise RuntimeError("diverged")
            if skip_at is not None and int(self.indices[0]) == skip_at:
                raise SkipBatch
            m["updates"] += 1
        finally:
            with cls.guard:
                cls.active -= 1
        return self

    @action(use_lock="tm_lock")
    def locked_only(self):
        return self.train()

    @action(effects=True)  # it calls a model action by hand
    def try_twice(self):
        try:
            self.train(boom_at=int(self.indices[0]))
        except RuntimeError:
            pass
        return self.train()  # would deadlock if the failed call kept the lock


@pytest.mark.parametrize("prefetch", [0, 2, 4])
def test_locked_action_never_runs_in_two_batches_at_once(prefetch):
    TMLocked.reset()
    ds = Dataset(64, TMLocked, preloaded=np.arange(64.0))
    r = ds.p.train().run(2, prefetch=prefetch, n_epochs=2)
    assert TMLocked.peak == 1
    assert TMLocked.active == 0
    assert r.get_model_by_name("tm_locked")["updates"] == 64
    assert "tm_lock" in r._env.locks


@pytest.mark.timeout(30)
def test_lock_is_released_when_the_action_raises():
    ds = Dataset(8, TMLocked, preloaded=np.arange(8.0))
    it = ds.p.train(boom_at=2).iterate(2)
    with pytest.raises(ActionError, match=r"train\(boom_at=2\)` failed on batch #1.*diverged"):
        list(it)
    assert it._engine.run.lock_is_held("tm_lock") is False
    # the same lock is taken again: by a later batch of a run, and by another run
    r = ds.p.try_twice().run(2, prefetch=2)
    assert r.get_model_by_name("tm_locked")["updates"] == 4
    r = ds.p.train(skip_at=0).run(2)
    assert r.get_model_by_name("tm_locked")["updates"] == 3


def test_lock_names_are_per_run():
    ds = Dataset(8, TMLocked, preloaded=np.arange(8.0))
    a, b = ds.p.train().iterate(2), ds.p.train().iterate(2)
    next(a)
    with a._engine.run.lock("tm_lock"):  # one run holding its lock does not block another run
        assert len(list(b)) == 4
    assert len(list(a)) == 3


# -- the environment ------------------------------------------------------------------------


def test_run_returns_the_final_environment_and_leaves_the_definition_alone():
    p = dynamic_pipeline().init_model("tm_static").init_variable("n", 0)
    p = p.update_variable("n", lambda b: len(b), mode="a")
    snapshot = (repr(p), p.models, p.variables, hash(p))
    r = p.run(6)
    assert r.get_variable("n") == [6, 6, 6, 2]
    assert set(r.models) == {"tm_dynamic", "tm_static"}
    assert r.get_model_by_name("tm_dynamic") is r.models["tm_dynamic"]
    # the same description, holding a final environment: it runs differently from p
    assert r.steps == p.steps and r.dataset == p.dataset and r != p
    assert r.result_env is not None and p.result_env is None
    assert (repr(p), p.models, p.variables, hash(p)) == snapshot  # p is untouched
    assert p.get_variable("n") == 0
    with pytest.raises(ModelError, match=r"dynamic ones exist only in a run"):
        p.get_model_by_name("tm_dynamic")


def test_environment_of_one_run_never_leaks_into_another():
    p = dynamic_pipeline().init_variable("log", []).update_variable("log", "x", mode="a")
    a = p.iterate(4)
    b = p.iterate(10)
    next(a)
    assert len(list(b)) == 2
    rest = list(a)
    assert len(rest) == 4
    assert a.env.variables["log"] == ["x"] * 5
    assert b.env.variables["log"] == ["x"] * 2
    assert a.env.dynamic["tm_dynamic"] is not b.env.dynamic["tm_dynamic"]
    assert p.get_variable("log") == []
    # a derived pipeline starts from the definition, not from a sibling's result
    r1 = p.run(20)
    r2 = (p << make_ds(20)).run(20)
    assert r1.get_variable("log") == r2.get_variable("log") == ["x"]
    assert r1.get_model_by_name("tm_dynamic") is not r2.get_model_by_name("tm_dynamic")


def test_a_result_run_again_builds_its_dynamic_model_again():
    r1 = dynamic_pipeline().run(10)
    before = CALLS["tm_dynamic"]
    r2 = r1.run(10)
    assert CALLS["tm_dynamic"] == before + 1
    assert r2.get_model_by_name("tm_dynamic") is not r1.get_model_by_name("tm_dynamic")
    assert len(r1.get_variable("dynamic_ids")) == 4  # r1 is unchanged by r2's run


def test_environment_is_an_immutable_value():
    env = Environment()
    env2 = env.set_variable("a", 1).update_variable("log", 1, mode="a")
    assert dict(env.variables) == {}
    assert dict(env2.variables) == {"a": 1, "log": [1]}
    with pytest.raises(AttributeError):
        env.variables = {}  # type: ignore[misc]
    assert env2.models == {}


def test_no_model_is_kept_on_definitions_or_classes_after_a_run():
    r = dynamic_pipeline().run(10)
    definition = TMBatch.__dict__["tm_dynamic"]
    assert not any(
        v is r.get_model_by_name("tm_dynamic") for v in vars(definition.__class__).values()
    )
    assert not hasattr(definition, "__dict__")  # slots only: nowhere to hide a built model
    assert not any(isinstance(v, dict) and "kind" in v for v in vars(TMBatch).values())
