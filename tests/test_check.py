"""Checking a pipeline before it runs (fpipe.check): every problem at once, naming its step."""

from __future__ import annotations

import functools
import inspect
import pickle

import numpy as np
import pytest
from pyrsistent import pmap

import fpipe.check
from fpipe import (
    Batch,
    Dataset,
    Pipeline,
    PipelineCheckError,
    PipelineDefinitionError,
    UnknownActionError,
    action,
    inbatch_parallel,
    model,
)
from fpipe.algebra import _rebuild
from fpipe.check import Problem, check_pipeline
from fpipe.env import Environment
from fpipe.expressions import B, C, F, R, V
from fpipe.steps import ActionStep


def _logged(fn):
    """A pass-through decorator (functools.wraps): the check reads the wrapped signature."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


class Chk(Batch):
    components = ("images", "labels")

    @action
    def shift(self, by=1.0):
        return self.replace(images=self.images + by)

    @action
    def blur(self, sigma, *, mode="same"):
        return self

    @action
    def pair(self, other, weight=1.0):
        return self

    @action
    def triple(self, first, second):
        return self

    @action
    def flexible(self, *args, **kwargs):
        return self

    @action
    @_logged
    def logged(self, rate):
        return self

    @action(model="chk_static")
    def train(self, net, lr):
        return self

    @action(model="chk_dynamic")
    def predict(self, net):
        return self

    @action(model="chk_global")
    def lookup(self, table):
        return self

    @action(model="chk_nowhere")
    def lost(self, net):
        return self

    @action
    @inbatch_parallel(init="indices", post="_gather", target="for")
    def per_item(self, item, scale, rng=None):
        return item * scale

    def _gather(self, results, scale):
        return self

    @action
    @inbatch_parallel(init="run_once", target="for")
    def once(self, factor):
        return self

    @action
    @inbatch_parallel(init="_pick", target="for")
    def drawn(self, item, rng, *, size):
        return rng.normal(size=size)

    def _pick(self, size):
        return self.indices[:size].tolist()

    @action(effects=True)
    def bump(self):
        CALLS.append(len(self))
        return self

    @model(mode="static")
    def chk_static(pipeline, config):
        return {"w": 0.0}

    @model(mode="dynamic")
    def chk_dynamic(batch, config):
        return {"n": len(batch)}

    @model
    def chk_global():
        return {"g": 1}


CALLS: list[int] = []
N = 8


def chk(n: int = N) -> Dataset:
    return Dataset(n, Chk, preloaded=(np.zeros((n, 2)), np.arange(n)))


def lines(p: Pipeline) -> list[str]:
    return [str(problem) for problem in check_pipeline(p)]


# -- a correct pipeline passes silently ---------------------------------------------------------
def test_a_correct_pipeline_passes_and_check_returns_it():
    p = (
        chk()
        .p.init_variable("seen", [])
        .shift()
        .shift(2.0)
        .blur(1.0, mode="valid")
        .join(chk())
        .pair(weight=0.5)
        .flexible(1, 2, anything=3)
        .logged(rate=0.1)
        .init_model("chk_static")
        .train(lr=0.1)
        .predict()
        .lookup()
        .per_item(2)
        .once(factor=3)
        .update_variable("seen", 1, mode="a")
    )
    assert check_pipeline(p) == []
    assert p.check() is p
    assert len(p.run(4).get_variable("seen")) == 2


def test_a_template_is_checked_for_what_does_not_need_its_dataset():
    assert check_pipeline(Pipeline().shift(1, 2, 3).blur()) == []  # actions: once linked
    assert lines(Pipeline().update_variable("n", 1)) == [
        "step 0 `update_variable('n', 1, mode='w')`: variable 'n' is never declared. Add "
        ".init_variable('n', default) to the pipeline"
    ]


# -- arguments ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda p: p.blur(),
            "step 0 `blur()`: missing argument 'sigma' of Chk.blur(self, sigma, *, mode='same'); "
            "pass it by position or as sigma=...",
        ),
        (
            lambda p: p.blur(sigam=1.0),
            "step 0 `blur(sigam=1.0)`: unexpected keyword argument 'sigam'. Did you mean "
            "'sigma'? Chk.blur(self, sigma, *, mode='same') takes: sigma, mode",
        ),
        (
            lambda p: p.blur(1.0, sigma=2.0),
            "step 0 `blur(1.0, sigma=2.0)`: argument 'sigma' of Chk.blur(self, sigma, *, "
            "mode='same') is given twice, by position and as sigma=...; pass it once",
        ),
        (
            lambda p: p.shift(1, 2),
            "step 0 `shift(1, 2)`: 2 positional arguments given, but Chk.shift(self, by=1.0) "
            "takes at most 1 after the batch; pass fewer, or name them",
        ),
        (
            lambda p: p.blur(1.0, "same"),
            "step 0 `blur(1.0, 'same')`: 2 positional arguments given, but Chk.blur(self, "
            "sigma, *, mode='same') takes at most 1 after the batch; pass fewer, or name them",
        ),
        (
            lambda p: p.logged(rat=1),
            "step 0 `logged(rat=1)`: unexpected keyword argument 'rat'. Did you mean 'rate'? "
            "Chk.logged(self, rate) takes: rate",
        ),
    ],
    ids=["missing", "unexpected", "twice", "too-many", "keyword-only-by-position", "wrapped"],
)
def test_arguments_that_do_not_bind_are_reported_with_the_signature(make, expected):
    assert lines(make(chk().p)) == [expected]


def test_a_plain_function_step_is_bound_too():
    def scale(batch, k, /, *, unit):
        return batch

    assert lines(chk().p.apply(scale, k=2)) == [
        "step 0 `apply(scale, k=2)`: 'k' is positional-only in scale(batch, k, /, *, unit): "
        "pass it by position",
        "step 0 `apply(scale, k=2)`: missing argument 'unit' of scale(batch, k, /, *, unit); "
        "pass it as unit=...",
    ]
    assert lines(chk().p.apply(scale, 2)) == [
        "step 0 `apply(scale, 2)`: missing argument 'unit' of scale(batch, k, /, *, unit); "
        "pass it as unit=..."
    ]
    assert lines(chk().p.apply(scale, 2, unit="m")) == []


def test_functions_with_star_args_accept_anything_and_builtins_without_a_signature_are_skipped():
    assert lines(chk().p.flexible(1, 2, 3, a=1, b=2)) == []
    assert lines(chk().p.apply(lambda b, *a, **k: b, 1, x=2)) == []
    with pytest.raises(ValueError):
        inspect.signature(max)
    assert lines(chk().p.apply(max, 1, 2, 3, key=4, nonsense=5)) == []


def test_join_passes_one_batch_per_source_before_the_arguments():
    ds = chk()
    assert lines(ds.p.join(ds).pair()) == []  # other <- the joined batch
    assert lines(ds.p.join(ds, ds).triple()) == []  # first, second <- the two joined batches
    assert lines(ds.p.join(ds).join(ds.p.shift()).triple()) == []  # consecutive joins add up
    assert lines(ds.p.join(ds).init_variable("x", 0).pair()) == []  # declarations: transparent
    assert lines(ds.p.join(ds).pair(2.0)) == []  # weight
    assert lines(ds.p.join(ds).pair(2.0, 3.0)) == [
        "step 1 `pair(2.0, 3.0)`: 2 positional arguments given, but Chk.pair(self, other, "
        "weight=1.0) takes at most 1 after the batch and the joined batch; pass fewer, or name "
        "them"
    ]
    assert lines(ds.p.join(ds, ds).pair(weight=1.0)) == [
        "step 1 `pair(weight=1.0)`: weight= is given, but parameter 'weight' of Chk.pair(self, "
        "other, weight=1.0) receives the joined batch; drop weight="
    ]
    assert lines(ds.p.join(ds, ds, ds).pair()) == [
        "step 1 `pair()`: Chk.pair(self, other, weight=1.0) has no parameter for the joined "
        "batch: fpipe calls it with the batch and 3 joined batches before the step's arguments; "
        "add a parameter for each"
    ]
    assert lines(ds.p.pair()) == [
        "step 0 `pair()`: missing argument 'other' of Chk.pair(self, other, weight=1.0); pass "
        "it by position or as other=..."
    ]


def test_a_model_action_gets_the_model_before_the_arguments():
    p = chk().p.init_model("chk_static")
    assert lines(p.train(0.1)) == lines(p.train(lr=0.1)) == []
    assert lines(p.train()) == [
        "step 1 `train()`: missing argument 'lr' of Chk.train(self, net, lr); pass it by "
        "position or as lr=..."
    ]
    assert lines(p.train(0.1, net=1)) == [
        "step 1 `train(0.1, net=1)`: net= is given, but parameter 'net' of Chk.train(self, "
        "net, lr) receives the model; drop net="
    ]
    assert lines(chk().p.join(chk()).init_model("chk_static").train(0.1)) == [
        "step 2 `train(0.1)`: 1 positional argument given, but Chk.train(self, net, lr) takes "
        "none after the batch, the model and the joined batch; pass fewer, or name them"
    ]


def test_an_inbatch_parallel_action_is_bound_as_each_item_call_and_its_post_receive_it():
    ds = chk()
    assert lines(ds.p.per_item(2)) == lines(ds.p.per_item(scale=2)) == []
    assert lines(ds.p.per_item()) == [
        "step 0 `per_item()`: missing argument 'scale' of Chk.per_item(self, item, scale, "
        "rng=None) (@inbatch_parallel calls it per item); pass it by position or as scale=...",
        "step 0 `per_item()`: missing argument 'scale' of Chk._gather(self, results, scale) "
        "(the post of @inbatch_parallel on Chk.per_item); pass it by position or as scale=...",
    ]
    assert lines(ds.p.once(3)) == []
    assert lines(ds.p.drawn(size=2)) == []  # rng= comes from fpipe; init gets the arguments
    assert lines(ds.p.drawn(2, size=1)) == [
        "step 0 `drawn(2, size=1)`: argument 'rng' of Chk.drawn(self, item, rng, *, size) "
        "(@inbatch_parallel calls it per item) receives a positional argument, but fpipe "
        "passes rng= itself; pass fewer positional arguments, or name them",
        "step 0 `drawn(2, size=1)`: argument 'size' of Chk._pick(self, size) (the init of "
        "@inbatch_parallel on Chk.drawn) is given twice, by position and as size=...; pass it "
        "once",
    ]
    assert lines(ds.p.drawn(n=1)) == [
        "step 0 `drawn(n=1)`: unexpected keyword argument 'n'. Chk.drawn(self, item, rng, *, "
        "size) (@inbatch_parallel calls it per item) takes: rng, size",
        "step 0 `drawn(n=1)`: missing argument 'size' of Chk.drawn(self, item, rng, *, size) "
        "(@inbatch_parallel calls it per item); pass it as size=...",
        "step 0 `drawn(n=1)`: unexpected keyword argument 'n'. Chk._pick(self, size) (the init "
        "of @inbatch_parallel on Chk.drawn) takes: size",
        "step 0 `drawn(n=1)`: missing argument 'size' of Chk._pick(self, size) (the init of "
        "@inbatch_parallel on Chk.drawn); pass it by position or as size=...",
    ]


# -- models ---------------------------------------------------------------------------------------
def test_a_model_action_needs_a_model_the_run_can_find():
    ds = chk()
    assert lines(ds.p.predict()) == []  # dynamic: built in the run from its definition
    assert lines(ds.p.lookup()) == []  # global: built with the class
    trained = ds.p.init_model("chk_static")
    assert lines(ds.p.import_model("chk_static", trained).train(0.1)) == []
    assert lines(ds.p.train(0.1)) == [
        "step 0 `train(0.1)`: static model Chk.chk_static is used but never initialised: add "
        ".init_model('chk_static') to the pipeline"
    ]
    (problem,) = check_pipeline(ds.p.lost())
    assert problem.kind == "model"
    assert str(problem) == (
        "step 0 `lost()`: @action(model='chk_nowhere') names no model: Chk has no @model "
        "'chk_nowhere' and the pipeline neither initialises nor imports one; known models: "
        "['chk_dynamic', 'chk_global', 'chk_static']. Define it with @model on Chk, or add "
        ".import_model('chk_nowhere', source)"
    )


# -- variables ------------------------------------------------------------------------------------
def test_update_variable_of_an_undeclared_variable_is_reported_with_a_suggestion():
    p = chk().p.init_variable("losses", []).update_variable("loses", 1.0, mode="a")
    assert lines(p) == [
        "step 1 `update_variable('loses', 1.0, mode='a')`: variable 'loses' is never declared. "
        "Did you mean 'losses'? Known variables: ['losses']. Add .init_variable('loses', "
        "default) to the pipeline"
    ]


def test_a_variable_declared_anywhere_in_the_pipeline_may_be_written():
    ds = chk()
    assert lines(ds.p.update_variable("n", 1).init_variable("n", 0)) == []  # a run declares first
    assert lines(ds.p.init_variable("n", 0) @ 0.5 + ds.p.update_variable("n", 1)) == []


def test_a_pipeline_that_a_run_returned_carries_its_variables():
    p = chk().p.update_variable("n", 1)
    assert [q.kind for q in check_pipeline(p)] == ["variable"]
    assert check_pipeline(p._with_env(Environment(variables=pmap({"n": 0})))) == []


def test_v_reads_a_variable_declared_at_an_earlier_step():
    ds = chk()
    ok = ds.p.init_variable("lr", 0.1).blur(V("lr")) + ds.p.init_variable("k", 1) @ 0.5
    assert lines(ok + ds.p.shift(F(max)(V("k"), R("normal", scale=V("lr"))))) == []
    assert lines(ds.p.blur(V("lr")).init_variable("lr", 0.1)) == [
        "step 0 `blur(V('lr'))`: V('lr') reads variable 'lr' before it is declared: its "
        ".init_variable('lr', ...) is step 1; move it before this step"
    ]
    assert lines(ds.p.init_variable("rate", 0.1).blur(sigma={"s": [V("rat")]})) == [
        "step 1 `blur(sigma={'s': [V('rat')]})`: V('rat') reads variable 'rat', which is never "
        "declared. Did you mean 'rate'? Known variables: ['rate']. Add .init_variable('rat', "
        "default) before this step"
    ]


def test_update_variable_reads_the_variables_of_its_value_expression():
    p = chk().p.init_variable("n", 0).update_variable("n", V("n") + V("m"))
    assert [q.message for q in check_pipeline(p)] == [
        "V('m') reads variable 'm', which is never declared. Known variables: ['n']. Add "
        ".init_variable('m', default) before this step"
    ]


def test_each_expression_is_reported_once_per_step():
    p = chk().p.blur(V("x") + V("x"), mode=V("x"))
    assert [q.message[:25] for q in check_pipeline(p)] == ["V('x') reads variable 'x'"]


# -- components and config ------------------------------------------------------------------------
def test_b_names_a_component_of_the_batch_class():
    ds = chk()
    assert lines(ds.p.blur(B("images")).blur(B()).blur(B("labels").mean())) == []
    assert lines(ds.p.blur(B("imgs") * 2)) == [
        "step 0 `blur(B('imgs') * 2)`: B('imgs'): Chk has no component 'imgs'. Did you mean "
        "'images'? Its components: ['images', 'labels']; fix the name, or declare it in "
        "Chk.components"
    ]
    assert lines(Dataset(4).p.apply(lambda b, x: b, B("data"))) == []  # no components: data
    assert lines(Pipeline().blur(B("imgs"))) == []  # a template: checked once it is linked


def test_c_names_a_key_of_the_config_once_the_config_is_known():
    ds = chk()
    config = {"lr": 0.1, "net": {"units": 8}}
    assert lines(ds.p.blur(C("lr")).blur(C("net/units")) << config) == []
    assert lines(ds.p.blur(C("lrr")) << config) == [
        "step 0 `blur(C('lrr'))`: C('lrr'): the config has no key 'lrr'. Did you mean 'lr'? "
        "Its keys: ['lr', 'net']. Give it in the config, e.g. `Pipeline({'lrr': ...})` or "
        "`pipeline << {'lrr': ...}`"
    ]
    assert lines(ds.p.blur(C("net/unit")) << config) == [
        "step 0 `blur(C('net/unit'))`: C('net/unit'): config['net'] has no key 'unit'. Did you "
        "mean 'units'? Its keys: ['units']. Give it in the config, e.g. `Pipeline({'net': "
        "{'unit': ...}})`"
    ]
    assert lines(ds.p.blur(C("lr/x")) << config) == [
        "step 0 `blur(C('lr/x'))`: C('lr/x'): config['lr'] is float 0.1, not a dict. Give it in "
        "the config, e.g. `Pipeline({'lr': {'x': ...}})`"
    ]
    template = Pipeline().blur(C("lr"))
    assert lines(template) == []  # a template's config may come later
    assert lines(template << ds) != [] and lines(template << ds << {"lr": 1}) == []


def test_save_to_needs_a_declared_variable_or_a_component():
    ds = chk()
    p = ds.p.init_variable("sigmas", []).blur(1.0, save_to=V("sigmas", mode="a"))
    assert lines(p) == [] and len(p.run(4).get_variable("sigmas")) == 2  # the run agrees
    assert lines(ds.p.blur(1.0, save_to=V("sigma", mode="a"))) == [
        "step 0 `blur(1.0, save_to=V('sigma', mode='a'))`: save_to=V('sigma', mode='a'): "
        "variable 'sigma' is never declared. Add .init_variable('sigma', default) to the "
        "pipeline"
    ]
    assert lines(ds.p.apply(lambda b: b.images, save_to=B("labels"))) == []
    assert lines(ds.p.apply(lambda b: b.images, save_to=B("indices"))) == [
        "step 0 `apply(<lambda>, save_to=B('indices'))`: save_to=B('indices'): Chk has no "
        "component 'indices'. Its components: ['images', 'labels']; fix the name, or declare "
        "it in Chk.components"
    ]


def test_a_function_with_a_save_to_parameter_takes_save_to_as_an_argument():
    def keep(batch, save_to):
        return batch

    assert lines(chk().p.apply(keep, save_to=V("n"))) == [
        "step 0 `apply(keep, save_to=V('n'))`: V('n') reads variable 'n', which is never "
        "declared. Add .init_variable('n', default) before this step"
    ]
    assert lines(chk().p.init_variable("n", 0).apply(keep, save_to=V("n"))) == []


def test_b_may_read_a_public_attribute_of_the_batch():
    assert lines(chk().p.apply(lambda b, ids: b, B("indices"))) == []


def test_config_probabilities_and_repeat_counts_are_config_keys_too():
    ds = chk()
    p = ds.p.shift() @ C("aug") + ds.p.blur(sigam=1) * C("times")
    assert lines(p << {"aug": 0.5}) == [
        "step 1 `(blur(sigam=1)) * C('times')`: C('times'): the config has no key 'times'. Its "
        "keys: ['aug']. Give it in the config, e.g. `Pipeline({'times': ...})` or `pipeline << "
        "{'times': ...}`",
        "step 1.0.0 `blur(sigam=1)`: unexpected keyword argument 'sigam'. Did you mean 'sigma'? "
        "Chk.blur(self, sigma, *, mode='same') takes: sigma, mode",
    ]
    assert [q.path for q in check_pipeline(ds.p.blur() @ C("aug") << {})] == [(0,), (0, 0)]
    repeated = ds.p.init_variable("n", 0) * C("times") + ds.p.blur(V("n"))
    assert lines(repeated << {"times": 2}) == []  # a run declares what a repetition declares


# -- several problems, nested steps, sources -------------------------------------------------------
def test_every_problem_is_reported_at_once_in_step_order():
    p = chk().p.blur().shift(1, 2).train(0.1).update_variable("x", 1).lost()
    assert [(q.path, q.kind) for q in check_pipeline(p)] == [
        ((0,), "arguments"),
        ((1,), "arguments"),
        ((2,), "model"),
        ((3,), "variable"),
        ((4,), "model"),
    ]
    with pytest.raises(PipelineCheckError) as info:
        p.check()
    message = str(info.value)
    assert message.startswith("the pipeline has 5 problems, found before any batch ran:\n- step 0 ")
    assert len(message.splitlines()) == 6
    assert all(line.startswith("- step ") for line in message.splitlines()[1:])


def test_steps_inside_maybe_have_nested_paths():
    ds = chk()
    p = ds.p.shift() + (Pipeline().shift() + Pipeline().blur() @ 0.5) @ 0.5
    assert lines(p) == [
        "step 1.1.0 `blur()`: missing argument 'sigma' of Chk.blur(self, sigma, *, "
        "mode='same'); pass it by position or as sigma=..."
    ]
    assert [q.path for q in check_pipeline(ds.p.blur() @ 0.3)] == [(0, 0)]


def test_source_pipelines_are_checked_as_scopes_of_their_own():
    ds = chk()
    source = ds.p.init_variable("inner", 0).shift(1, 2)
    p = ds.p.join(source).pair().merge(source).update_variable("inner", 1)
    assert lines(p) == [
        "in join source #0 of step 0: step 1 `shift(1, 2)`: 2 positional arguments given, but "
        "Chk.shift(self, by=1.0) takes at most 1 after the batch; pass fewer, or name them",
        "step 3 `update_variable('inner', 1, mode='w')`: variable 'inner' is never declared. "
        "Add .init_variable('inner', default) to the pipeline",
    ]  # the source is checked once; its variables are its own


def test_an_action_the_batch_class_lacks_is_reported_with_the_error_chained():
    p = _rebuild(Pipeline, (ActionStep("shfit"),), chk(), {}, None, Environment(), None)
    (problem,) = check_pipeline(p)
    assert problem.kind == "action" and isinstance(problem.cause, UnknownActionError)
    assert str(problem).startswith("step 0 `shfit()`: Chk has no action 'shfit'. Did you mean")
    with pytest.raises(PipelineCheckError) as info:
        p.check()
    cause = info.value.__cause__
    assert type(cause) is UnknownActionError and str(cause) == str(problem.cause)
    back = pickle.loads(pickle.dumps(info.value))
    assert str(back) == str(info.value) and type(back.__cause__) is UnknownActionError


# -- the error --------------------------------------------------------------------------------------
def test_the_error_is_a_definition_error_that_pickles_with_its_problems():
    with pytest.raises(PipelineDefinitionError) as info:
        chk().p.blur().shift(1, 2).check()
    err = info.value
    assert isinstance(err, PipelineCheckError) and len(err.problems) == 2
    assert all(isinstance(q, Problem) for q in err.problems)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is PipelineCheckError
    assert str(back) == str(err) and back.problems == err.problems


def test_a_long_list_shows_the_first_problems_and_keeps_them_all():
    with pytest.raises(PipelineCheckError) as info:
        (chk().p.blur() * 40).check()
    err = info.value
    assert len(err.problems) == 40
    shown = str(err).splitlines()
    assert (
        len(shown) == 32
        and shown[-1] == "- ... and 10 more (this error's .problems lists them all)"
    )


def test_the_argument_of_a_step_label_stays_short():
    (problem,) = check_pipeline(chk().p.blur(np.zeros((100, 100)), "x" * 100, 3))
    assert problem.label == "blur(<array float64[100, 100]>, " + repr("x" * 100)[:37] + "..., 3)"


# -- when the check runs ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "start",
    [
        lambda p: p.run(2),
        lambda p: p.run(2, prefetch=2),
        lambda p: p.iterate(2),
        lambda p: p.gen_batch(2, prefetch=1),
        lambda p: p.next_batch(2),
    ],
    ids=["run", "run-prefetch", "iterate", "gen_batch", "next_batch"],
)
def test_every_run_checks_its_pipeline_before_any_batch(start):
    CALLS.clear()
    p = chk().p.bump().bump().blur()
    with pytest.raises(PipelineCheckError, match=r"step 2 `blur\(\)`: missing argument 'sigma'"):
        start(p)  # raised by the call itself, before the first next()
    assert CALLS == []
    assert len(chk().p.bump().run(2).steps) == 1 and CALLS == [2] * (N // 2)


def test_a_run_checks_once_not_once_per_batch(monkeypatch):
    import fpipe.algebra

    calls = []
    real = fpipe.algebra.check_pipeline

    def counting(pipeline):
        calls.append(pipeline)
        return real(pipeline)

    monkeypatch.setattr(fpipe.algebra, "check_pipeline", counting)
    assert len(chk().p.shift().run(2, n_epochs=2).steps) == 1
    assert len(calls) == 1


def test_linking_does_not_check_a_run_does():
    p = Pipeline().blur() << chk()  # the config, models, variables may still come
    assert p.dataset is not None
    with pytest.raises(PipelineCheckError):
        p.run(2)


def test_signatures_are_read_once_per_function_not_once_per_step(monkeypatch):
    def fresh(batch, k):
        return batch

    calls = []
    real = inspect.signature

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting)
    p = (chk().p.apply(fresh, 1) + chk().p.apply(fresh, k=1)) * 100  # two ways to call it
    before = fpipe.check._binding.cache_info()
    assert check_pipeline(p) == [] and check_pipeline(p) == []
    assert calls.count(fresh) == 1
    after = fpipe.check._binding.cache_info()
    assert after.misses - before.misses == 2  # one binding per way, then looked up
    assert after.hits - before.hits == 398
