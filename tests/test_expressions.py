"""Named expressions: the datatype (fpipe.expressions) and how runs resolve it (fpipe.resolve).

B (the batch and its components), V (variables), C (the config), R (random draws), I
(where the run is), F(fn)(...) calls and the operators on them; expressions as step
arguments, in update_variable, as save_to= destinations and as the operands of `@` and
`*`; which steps they make effectful, under prefetch too; and every error message.
"""

from __future__ import annotations

import copy
import operator
import pickle
import re
import threading

import numpy as np
import pytest
from pyrsistent import pmap

import fpipe
from fpipe import (
    ActionError,
    B,
    Batch,
    C,
    Dataset,
    F,
    FpipeError,
    I,
    Pipeline,
    PipelineDefinitionError,
    ProcessExecutor,
    R,
    ResumeError,
    UnknownVariableError,
    V,
    action,
)
from fpipe.digest import digest
from fpipe.env import Environment
from fpipe.expressions import BINARY, UNARY, Expr, Leaf, contains_expression, leaves
from fpipe.fingerprint import differences, identity_of
from fpipe.interpreter import compile_program, compile_step, run_compiled
from fpipe.resolve import resolver
from fpipe.runstate import BatchContext, RunState
from fpipe.steps import ActionStep, Maybe, Repeat

THREADS: list[str] = []  # the threads a pure expression step ran on
CALLS: list[object] = []  # what F-called functions were called with


class Pics(Batch):
    components = ("images", "labels", "out")

    @action
    def scale(self, k):
        return self.replace(images=self.images * k)

    @action
    def fill(self, value):
        return self.replace(
            out=np.broadcast_to(np.asarray(value, dtype=float), (len(self),)).copy()
        )

    @action
    def fill_kw(self, *, value, offset=0.0):
        values = np.broadcast_to(np.asarray(value, dtype=float), (len(self),))
        return self.replace(out=values + offset)

    @action
    def note_thread(self, value):
        THREADS.append(threading.current_thread().name)
        return self.replace(out=np.full(len(self), float(value)))

    @action
    def shaped(self, shape):
        return self.replace(out=np.full(len(self), float(np.prod(shape))))

    @action
    def total(self):
        return float(self.images.sum())

    @action
    def doubled(self):
        return self.images[:, 0] * 2

    @action
    def hold(self, value):
        CALLS.append(value)
        return self

    @action
    def export(self, save_to):
        CALLS.append(save_to)
        return self

    @action
    def first_draw(self):
        return self.replace(out=self.random.normal(size=len(self)))


IMAGES = np.arange(24.0).reshape(8, 3)
DS = Dataset(8, Pics, preloaded={"images": IMAGES, "labels": np.arange(8) % 2, "out": np.zeros(8)})


def outs(pipeline, batch_size=4, **run):
    return [b.out.tolist() for b in (pipeline << DS).gen_batch(batch_size, **run)]


def ctx_for(config=None, variables=None, epoch=0, iteration=0, in_epoch=None):
    env = Environment()
    for name, value in (variables or {}).items():
        env = env.set_variable(name, value)
    run = RunState(seed=3, env=env, batch_class=Pics, config=pmap(config or {}))
    return BatchContext(run, epoch, iteration, in_epoch)


def run_one(pipeline, ctx):
    program = compile_program(pipeline.steps, Pics)
    batch = DS.create_batch(DS.indices[:4])._with_ctx(ctx)
    return run_compiled(program.stages[0], batch, ctx)


# -- the datatype --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (B(), "B()"),
        (B("images"), "B('images')"),
        (V("loss"), "V('loss')"),
        (V("preds", mode="append"), "V('preds', mode='a')"),
        (C("model/lr"), "C('model/lr')"),
        (
            R("normal", loc=0, scale=0.1, size=C("shape")),
            "R('normal', loc=0, scale=0.1, size=C('shape'))",
        ),
        (I("epoch"), "I('epoch')"),
        (V("n") + 1, "V('n') + 1"),
        (2 * (V("n") + 1), "2 * (V('n') + 1)"),
        (V("a") - (V("b") - 1), "V('a') - (V('b') - 1)"),
        ((V("a") - V("b")) - 1, "V('a') - V('b') - 1"),
        (-(V("x") ** 2), "-V('x') ** 2"),
        ((-V("x")) ** 2, "(-V('x')) ** 2"),
        ((-1) ** V("n"), "(-1) ** V('n')"),
        (abs(V("x")) / 2, "abs(V('x')) / 2"),
        (C("shape")[0], "C('shape')[0]"),
        (B("images")[1:3, ..., ::2], "B('images')[1:3, ..., ::2]"),
        (B("images").shape[C("axis")], "B('images').shape[C('axis')]"),
        (B("images").mean(axis=0), "B('images').mean(axis=0)"),
        (F(np.clip)(B("images"), 0, C("hi")), "F(clip)(B('images'), 0, C('hi'))"),
        ((V("m") & 1) | (V("m") ^ 2), "V('m') & 1 | V('m') ^ 2"),
    ],
)
def test_expressions_have_a_readable_repr(expr, text):
    assert repr(expr) == text


@pytest.mark.parametrize("op", sorted(BINARY))
def test_every_operator_builds_an_expression_that_resolves_like_the_operator(op):
    fn = BINARY[op][0]
    a, b = (np.array([[1, 2], [3, 4]]),) * 2 if op == "@" else (7, 3)
    ctx = ctx_for({"a": a, "b": b})
    both, left_constant = fn(C("a"), C("b")), fn(a, C("b"))
    assert repr(both) == f"C('a') {op} C('b')"
    for expr in (both, left_constant):
        assert np.array_equal(resolver(expr, Pics, ((0,), "test"))(None, ctx), fn(a, b))


@pytest.mark.parametrize("op", sorted(UNARY))
def test_every_unary_operator_builds_an_expression_that_resolves_like_it(op):
    fn = UNARY[op]
    expr = fn(C("a"))
    assert repr(expr) == ("abs(C('a'))" if op == "abs" else f"{op}C('a')")
    assert resolver(expr, Pics, ((0,), "test"))(None, ctx_for({"a": -5})) == fn(-5)


def test_equality_and_hash_are_structural_and_equality_is_a_bool():
    a = V("n") * 2 + C("shape")[0]
    b = V("n") * 2 + C("shape")[0]
    assert (a == b) is True and hash(a) == hash(b) and a is not b
    assert (a == V("n") * 3 + C("shape")[0]) is False
    assert V("n") + 1 != V("n") + 1.0  # 1 and 1.0 are different constants
    assert B("x") != V("x") and C("x") != V("x")
    assert V("x") != V("x", mode="a")
    assert (np.ones(2) == V("x")) is False and (V("x") == np.ones(2)) is False
    assert len({a, b, V("n")}) == 2


def test_array_constants_are_frozen_copies_compared_by_content():
    weights = np.array([1.0, 2.0])
    expr = B("images") * weights
    weights[:] = 0.0
    assert expr == B("images") * np.array([1.0, 2.0])
    assert expr != B("images") * np.array([1.0, 3.0])
    frozen = expr._args[1]
    assert not frozen.flags.writeable
    assert np.ones(2) + V("x") == Expr.__radd__(V("x"), np.ones(2))  # numpy defers to us


def test_expressions_pickle_and_copy_as_values():
    expr = F(np.clip)(R("normal", size=C("shape")) * V("scale"), 0, 1) + B("images")[0]
    assert pickle.loads(pickle.dumps(expr)) == expr
    assert copy.deepcopy(expr) == expr and copy.copy(expr) == expr
    assert pickle.loads(pickle.dumps(F(np.clip))) == F(np.clip)


def test_building_an_expression_runs_nothing():
    def record(*args):
        CALLS.append(args)
        return 0

    CALLS.clear()
    expr = F(record)(V("n"), B("images").mean()) + R("normal") * I("epoch")
    assert CALLS == [] and isinstance(expr, Expr)


def test_expressions_are_immutable():
    with pytest.raises(AttributeError, match="V expressions are values and cannot change"):
        V("x").name = "y"
    with pytest.raises(AttributeError, match="cannot change"):
        F(len).fn = abs


def test_an_expression_has_no_truth_value_at_definition_time():
    message = (
        "V('x') is an expression: it is resolved when a step runs, so it has no truth value "
        "when the pipeline is written (`if V('x'):`, `and`, `or` and `not` cannot work). Pass "
        "it to a step and test the value there, or compute with F(fn)(expression, ...)."
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        if V("x"):
            pass


def test_comparisons_do_not_build_expressions_and_say_what_to_write():
    message = (
        "expressions do not build comparisons (`==` compares two expressions as values): "
        "write F(operator.lt)(a, b), F(operator.eq)(a, b) and so on"
    )
    for compare in (operator.lt, operator.le, operator.gt, operator.ge):
        with pytest.raises(TypeError, match=re.escape(message)):
            compare(V("n"), 3)
    assert repr(F(operator.lt)(V("n"), 3)) == "F(lt)(V('n'), 3)"


def test_an_expression_cannot_be_iterated_or_unpacked():
    message = (
        "C('shape') is an expression, resolved when a step runs: it cannot be iterated or "
        "unpacked when the pipeline is written; index it instead, e.g. C('shape')[0]"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        _h, _w = C("shape")
    with pytest.raises(TypeError, match=re.escape(message)):
        _ = 3 in C("shape")


def test_private_attributes_are_not_expressions():
    assert not hasattr(V("x"), "_private") and not hasattr(V("x"), "__array__")
    assert isinstance(V("x").shape, Expr) and repr(V("x").shape) == "V('x').shape"
    assert V("x").name == "x" and V("x").kind == "V"  # a leaf's own attributes


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: V(1), TypeError, "V(...) takes a variable name (a non-empty str), not 1"),
        (lambda: B(""), TypeError, "B(...) takes a component name (a non-empty str), not ''"),
        (
            lambda: C("a//b"),
            ValueError,
            "C('a//b'): a nested config key is 'outer/inner', no empty part",
        ),
        (
            lambda: V("x", mode="z"),
            ValueError,
            "unknown update mode 'z'; use 'w' (write), 'a' (append) or 'e' (extend)",
        ),
        (
            lambda: R("norml"),
            ValueError,
            "R('norml'): numpy's random Generator has no method 'norml'. Did you mean 'normal' "
            "or 'lognormal' or 'uniform'? R draws with a method that returns its draw, e.g. "
            "R('normal', size=3), R('integers', 0, 10), R('permutation', 5).",
        ),
        (
            lambda: R("shuffle", [1, 2]),
            ValueError,
            "R('shuffle'): numpy's random Generator has no method 'shuffle'",
        ),
        (
            lambda: I("epch"),
            ValueError,
            "I('epch'): the position of a run is I('epoch'), I('batch') or I('iteration'). Did "
            "you mean 'epoch'?",
        ),
        (
            lambda: F(3),
            TypeError,
            "F(fn) takes a function, not 3; a method of an expression is called directly, e.g. "
            "B('images').mean(axis=0)",
        ),
        (lambda: F(B("x").mean), TypeError, "F(fn) takes a function, not B('x').mean"),
    ],
)
def test_bad_expressions_are_refused_when_built(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_leaves_walk_every_argument_value():
    value = (
        1,
        [B(), {"k": V("n") * C("lr")}],
        pmap({"p": F(np.clip)(B("images"), I("epoch"), 1)}),
        frozenset({"plain"}),
        R("normal", size=C("shape")),
        B("labels").sum(axis=C("axis")),
        "V",
    )
    found = [(leaf.kind, leaf.name) for leaf in leaves(value)]
    assert found == [
        ("B", None),
        ("V", "n"),
        ("C", "lr"),
        ("B", "images"),
        ("I", "epoch"),
        ("R", "normal"),
        ("C", "shape"),
        ("B", "labels"),
        ("C", "axis"),
    ]
    assert all(isinstance(leaf, Leaf) for leaf in leaves(value))
    assert contains_expression(value) and contains_expression(F(len)())
    assert not contains_expression((1, [2, {"k": np.ones(2)}], "V('x')"))
    assert list(leaves(np.ones(3))) == []


def test_the_names_are_exported_from_fpipe():
    assert {"B", "V", "C", "F", "R", "I"} <= set(fpipe.__all__)
    assert fpipe.V is V and fpipe.F is F


def test_equal_expressions_have_equal_digests_and_fingerprints():
    assert digest(V("n") + C("k")) == digest(V("n") + C("k"))
    assert digest(V("n") + C("k")) != digest(V("n") + C("j"))
    a = identity_of(Pipeline().scale(C("lr")) << DS, {"batch_size": 4})
    b = identity_of(Pipeline().scale(C("lr")) << DS, {"batch_size": 4})
    c = identity_of(Pipeline().scale(C("lr2")) << DS, {"batch_size": 4})
    assert a == b and differences(a, b) == []
    assert differences(a, c) == ["step 0: scale(C('lr')) vs scale(C('lr2'))"]


def test_a_resume_state_carries_the_expressions_and_refuses_other_ones():
    p = Pipeline().fill(C("k") * I("iteration")) << {"k": 2.0} << DS
    with p.iterate(2, seed=0) as it:
        next(it)
        state = it.get_state()
        rest = [b.out.tolist() for b in it]
    with p.iterate(2, state=state) as again:
        assert [b.out.tolist() for b in again] == rest
    other = Pipeline().fill(C("k") * I("epoch")) << {"k": 2.0} << DS
    with pytest.raises(
        ResumeError,
        match=re.escape("step 0: fill(C('k') * I('iteration')) vs fill(C('k') * I('epoch'))"),
    ):
        other.iterate(2, state=state)


# -- resolving leaves ------------------------------------------------------------------------
def test_b_reads_components_attributes_and_the_batch():
    assert outs(Pipeline().fill(B("images")[:, 0])) == [[0, 3, 6, 9], [12, 15, 18, 21]]
    assert outs(Pipeline().fill(B("indices") * 10)) == [[0, 10, 20, 30], [40, 50, 60, 70]]
    assert outs(Pipeline().fill(F(len)(B()))) == [[4] * 4, [4] * 4]


def test_c_reads_the_config_and_nested_keys_and_templates_take_it_with_lshift():
    template = Pipeline().fill_kw(value=C("model/lr") * 10, offset=C("offset"))
    linked = (template << {"model": {"lr": 0.5}, "offset": 1.0}) << DS
    assert [b.out.tolist() for b in linked.gen_batch(4)] == [[6.0] * 4, [6.0] * 4]
    shapes = Pipeline().shaped(shape=(C("h"), C("w")))
    assert outs(shapes << {"h": 2, "w": 3}) == [[6.0] * 4] * 2
    assert outs(Pipeline().shaped(shape=C("shape")) << {"shape": (28, 28)}) == [[784.0] * 4] * 2


def test_v_reads_the_variable_as_earlier_steps_left_it():
    p = Pipeline().init_variable("n", 0).update_variable("n", V("n") + 1).fill(V("n") * 10)
    assert outs(p, n_epochs=2) == [[10.0] * 4, [20.0] * 4, [30.0] * 4, [40.0] * 4]


def test_a_list_read_with_v_never_changes_after_the_read():
    CALLS.clear()
    p = Pipeline().init_variable("log", []).update_variable("log", I("iteration"), mode="a")
    (p.hold(V("log")) << DS).run(2)
    assert CALLS == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]  # each as it was when read


def test_update_variable_takes_an_expression_in_every_mode():
    p = (
        (
            Pipeline()
            .init_variable("sums", [])
            .init_variable("all", [])
            .init_variable("last", None)
            .update_variable("sums", B("images").sum(), mode="a")
            .update_variable("all", B("labels"), mode="e")
            .update_variable("last", (I("iteration"), C("tag")), mode="w")
        )
        << {"tag": "t"}
        << DS
    )
    r = p.run(4)
    assert r.get_variable("sums") == [IMAGES[:4].sum(), IMAGES[4:].sum()]
    assert r.get_variable("all") == [0, 1, 0, 1, 0, 1, 0, 1]
    assert r.get_variable("last") == (1, "t")


def test_r_draws_from_the_steps_stream_the_same_with_any_executor():
    p = Pipeline().fill(R("normal", loc=C("mu"), size=4)) << {"mu": 5.0}
    first = outs(p, seed=7)
    assert first == outs(p, seed=7) == outs(p, seed=7, prefetch=4)
    assert first == outs(p, seed=7, prefetch=2, executor=ProcessExecutor(1))
    assert first != outs(p, seed=8)
    # R draws first from the very generator the action then reads as self.random
    direct = outs(Pipeline().first_draw(), seed=7)
    assert np.allclose(np.array(first) - 5.0, direct)
    assert outs(Pipeline().fill(R("normal", size=4)), seed=7) == direct


def test_i_gives_the_epoch_and_the_iteration():
    p = Pipeline().fill(I("epoch") * 100 + I("iteration"))
    assert outs(p, n_epochs=2) == [[0.0] * 4, [1.0] * 4, [102.0] * 4, [103.0] * 4]


def test_i_batch_is_the_batchs_number_in_its_epoch_where_the_run_says_it():
    p = Pipeline().fill(I("batch"))
    assert run_one(p, ctx_for(in_epoch=5)).out.tolist() == [5.0] * 4
    message = (
        "I('batch'): this batch's number in its epoch is not known here (after a rebatch, or "
        "in a run that did not say it); use I('iteration') instead"
    )
    with pytest.raises(ActionError, match=re.escape(message)):
        run_one(p, ctx_for())


@pytest.mark.parametrize(
    "run",
    [{}, {"prefetch": 2}, {"executor": "processes"}],
    ids=["sequential", "threads", "processes"],
)
def test_i_batch_counts_from_zero_in_every_epoch_of_a_run(run):
    p = Pipeline().fill(I("batch"))
    assert outs(p, n_epochs=2, **run) == [[0.0] * 4, [1.0] * 4] * 2


def test_f_calls_and_method_calls_resolve_their_arguments():
    p = Pipeline().fill(F(np.clip)(B("images")[:, 0], C("lo"), 10) + B("images").mean(axis=1))
    expected = np.clip(IMAGES[:, 0], 2, 10) + IMAGES.mean(axis=1)
    assert outs(p << {"lo": 2}) == [expected[:4].tolist(), expected[4:].tolist()]
    assert outs(Pipeline().fill(F(operator.lt)(B("labels"), 1) * 1.0)) == [[1.0, 0.0] * 2] * 2


# -- save_to= --------------------------------------------------------------------------------
def test_save_to_a_variable_stores_what_the_action_returns():
    p = Pipeline().init_variable("totals", []).total(save_to=V("totals", mode="a"))
    r = (p << DS).run(4)
    assert r.get_variable("totals") == [IMAGES[:4].sum(), IMAGES[4:].sum()]
    last = (Pipeline().init_variable("t", None).total(save_to=V("t")) << DS).run(4)
    assert last.get_variable("t") == IMAGES[4:].sum()
    step = p.steps[1]
    assert step.kwargs == {} and step.save_to == V("totals", mode="a")
    assert step.label == "total(save_to=V('totals', mode='a'))"


def test_save_to_a_component_replaces_it_and_apply_takes_save_to_too():
    assert outs(Pipeline().doubled(save_to=B("out"))) == [[0, 6, 12, 18], [24, 30, 36, 42]]
    p = Pipeline().apply(lambda b, k: b.labels * k, 3, save_to=B("out"))
    assert outs(p) == [[0, 3, 0, 3]] * 2


def test_an_action_with_a_save_to_parameter_gets_the_argument_itself():
    CALLS.clear()
    list((Pipeline().export(save_to="preds.npy") << DS).gen_batch(4))
    assert CALLS == ["preds.npy", "preds.npy"]
    CALLS.clear()
    list((Pipeline().export(save_to=C("path")) << {"path": "x.npy"} << DS).gen_batch(4))
    assert CALLS == ["x.npy", "x.npy"]  # an expression argument like any other


def test_save_to_must_name_a_variable_or_a_component():
    message = (
        "step 0 `total(save_to=C('x'))`: save_to=C('x'): save_to= says where the action's "
        "result goes: V('name', mode='w'|'a'|'e') (a variable of the run) or B('component') "
        "(a component of the batch)"
    )
    with pytest.raises(PipelineDefinitionError, match=re.escape(message)):
        compile_program(Pipeline().total(save_to=C("x")).steps, Pics)
    with pytest.raises(PipelineDefinitionError, match=re.escape("save_to=B(): save_to= says")):
        compile_program(Pipeline().total(save_to=B()).steps, Pics)
    message = "step 0 `total(save_to=B('indices'))`: B('indices'): Pics has no component 'indices'"
    with pytest.raises(PipelineDefinitionError, match=re.escape(message)):
        compile_program(Pipeline().total(save_to=B("indices")).steps, Pics)
    with pytest.raises(PipelineDefinitionError, match="save_to= is given twice"):
        ActionStep("total", (), {"save_to": V("a")}, save_to=V("b"))


# -- pure or effectful -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pipeline", "effectful"),
    [
        (Pipeline().fill(B("images")[:, 0]), False),
        (Pipeline().fill(C("k")), False),
        (Pipeline().fill(R("normal", size=4)), False),
        (Pipeline().fill(I("epoch")), False),
        (Pipeline().fill(F(len)(B())), False),
        (Pipeline().doubled(save_to=B("out")), False),
        (Pipeline().fill(V("n")), True),
        (Pipeline().fill(C("k") + V("n") * 0), True),
        (Pipeline().fill_kw(value=1, offset=V("n")), True),
        (Pipeline().fill(R("normal", size=V("n"))), True),
        (Pipeline().total(save_to=V("t")), True),
        (Pipeline().update_variable("n", B("images").sum()), True),
    ],
)
def test_a_step_that_reads_or_writes_variables_is_effectful_the_others_stay_pure(
    pipeline, effectful
):
    (step,) = compile_program(pipeline.steps, Pics).stages[0]
    assert step.effectful is effectful


def test_a_pure_expression_step_is_computed_ahead_on_the_workers():
    p = Pipeline().note_thread(C("k") + I("iteration")) << {"k": 1.0}
    THREADS.clear()
    sequential = outs(p)
    assert set(THREADS) == {threading.current_thread().name}
    THREADS.clear()
    assert outs(p, prefetch=4) == sequential
    assert THREADS and threading.current_thread().name not in THREADS


def test_a_step_reading_a_variable_sees_every_earlier_update_in_order_under_prefetch():
    p = (
        (
            Pipeline()
            .init_variable("n", 0)
            .init_variable("seen", [])
            .scale(C("k"))  # pure: computed ahead
            .update_variable("n", V("n") + F(len)(B()))
            .fill(V("n"))
            .update_variable("seen", B("out")[0], mode="a")
        )
        << {"k": 2.0}
        << Dataset(40, Pics, preloaded={"images": np.ones((40, 3))})
    )
    sequential = p.run(3, n_epochs=3, shuffle=True, seed=1)
    ahead = p.run(3, n_epochs=3, shuffle=True, seed=1, prefetch=4)
    assert ahead.get_variable("seen") == sequential.get_variable("seen")
    assert sequential.get_variable("seen")[:3] == [3, 6, 9] and sequential.get_variable("n") == 120


# -- `@` and `*` with the config ---------------------------------------------------------------
def test_at_a_config_probability_draws_the_same_coin_as_the_number():
    aug = Pipeline().fill(R("normal", size=F(len)(B())))
    by_config = outs(aug @ C("aug_prob") << {"aug_prob": 0.4}, 2, seed=5, n_epochs=3)
    by_number = outs(aug @ 0.4, 2, seed=5, n_epochs=3)
    on_processes = outs(
        aug @ C("aug_prob") << {"aug_prob": 0.4}, 2, seed=5, n_epochs=3, executor=ProcessExecutor(1)
    )
    assert on_processes == by_config
    assert by_config == by_number and {0.0} < {v for b in by_config for v in b}
    assert outs(aug @ C("p") << {"p": 0.0}) == [[0.0] * 4] * 2
    assert (aug @ C("p")).steps == (Maybe(aug.steps, C("p")),)


def test_times_a_config_count_repeats_the_steps():
    p = Pipeline().scale(2) * C("repeats")
    assert [b.images[0, 1] for b in (p << {"repeats": 3} << DS).gen_batch(4)] == [8.0, 104.0]
    assert [b.images[0, 1] for b in (p << {"repeats": 0} << DS).gen_batch(4)] == [1.0, 13.0]
    assert C("repeats") * Pipeline().scale(2) == p
    assert p.steps == (Repeat(Pipeline().scale(2).steps, C("repeats")),)
    with_var = Pipeline().init_variable("n", 0).update_variable("n", V("n") + 1) * C("r")
    assert (with_var << {"r": 4} << DS).run(4).get_variable("n") == 8
    # the declarations inside are the pipeline's, as inside `@ prob`
    assert with_var.get_variable("n") == 0 and with_var.set_variable("n", 5).get_variable("n") == 5
    assert not with_var.del_variable("n").has_variable("n")
    assert (with_var.set_variable("n", 5) << {"r": 1} << DS).run(4).get_variable("n") == 7


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Pipeline().fill(1) @ V("p"),
            "`pipeline @ V('p')`: `@` takes a probability in [0, 1] or an expression of the "
            "pipeline's config such as C('key'), read when the run starts; V('p') is not the "
            "config",
        ),
        (
            lambda: Pipeline().fill(1) * (C("n") + I("epoch")),
            "`pipeline * C('n') + I('epoch')`: `*` takes a whole number or an expression of the "
            "pipeline's config such as C('key'), read when the run starts; I('epoch') is not "
            "the config",
        ),
        (
            lambda: Pipeline().fill(1).rebatch(2) * C("n"),
            "`pipeline * C('n')`: a pipeline with rebatch(...) (rebatch(2)) cannot be repeated a "
            "number of times the config gives; repeat it a fixed number of times (`pipeline * "
            "3`) or move the step out of the repeated part",
        ),
        (
            lambda: (Pipeline().merge(DS) @ 0.5) * C("n"),
            "`pipeline * C('n')`: a pipeline with merge(...) (merge(1 source)) cannot be repeated",
        ),
    ],
)
def test_at_and_times_take_only_config_expressions(make, message):
    with pytest.raises(PipelineDefinitionError, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    ("pipeline", "config", "message"),
    [
        (
            Pipeline().fill(1) @ C("aug_prob"),
            {"aug_prob": "0.5"},
            "step 0 `(fill(1)) @ C('aug_prob')` failed on batch #0 (epoch 0, 4 items: 0, 1, 2, "
            "3): PipelineDefinitionError: `pipeline @ C('aug_prob')`: the config gives '0.5' "
            "(str), not a probability in [0, 1]",
        ),
        (
            Pipeline().fill(1) @ C("aug_prob"),
            {"aug_prob": 1.5},
            "`pipeline @ C('aug_prob')`: the config gives 1.5 (float), not a probability in [0, 1]",
        ),
        (
            Pipeline().fill(1) * C("repeats"),
            {"repeats": 2.5},
            "step 0 `(fill(1)) * C('repeats')` failed on batch #0 (epoch 0, 4 items: 0, 1, 2, "
            "3): PipelineDefinitionError: `pipeline * C('repeats')`: the config gives 2.5 "
            "(float), not a whole number of repetitions >= 0",
        ),
        (
            Pipeline().fill(1) * C("repeats"),
            {"repeats": True},
            "`pipeline * C('repeats')`: the config gives True (bool), not a whole number",
        ),
    ],
)
def test_a_config_value_of_the_wrong_type_is_refused_naming_the_step(pipeline, config, message):
    with pytest.raises(ActionError, match=re.escape(message)):
        outs(pipeline << config)


# -- errors while resolving ----------------------------------------------------------------------
def test_a_missing_config_key_names_the_step_and_the_expression():
    message = (
        "step 0 `scale(k=C('lr'))` failed on batch #0 (epoch 0, 4 items: 0, 1, 2, 3): "
        "PipelineDefinitionError: C('lr'): the pipeline's config has no key 'lr'. Did you mean "
        "'lr_'? Its keys: ['lr_']. Give it with `pipeline << {'lr': ...}` or Pipeline(config)."
    )
    with pytest.raises(ActionError, match=re.escape(message)):
        run_one(Pipeline().scale(k=C("lr")), ctx_for({"lr_": 1}))


def test_a_missing_or_non_dict_nested_config_key_says_where():
    message = (
        "C('model/lr'): the pipeline's config['model'] has no key 'lr'. Did you mean 'lr_'? "
        "Its keys: ['lr_']. Give it with `pipeline << {'model': {'lr': ...}}` or Pipeline(config)."
    )
    with pytest.raises(ActionError, match=re.escape(message)):
        run_one(Pipeline().scale(C("model/lr")), ctx_for({"model": {"lr_": 1}}))
    message = "C('model/lr'): the pipeline's config['model'] is 3 (int), not a dict, so it has no key 'lr'"
    with pytest.raises(ActionError, match=re.escape(message)):
        run_one(Pipeline().scale(C("model/lr")), ctx_for({"model": 3}))


def test_a_missing_variable_names_the_expression():
    message = (
        "step 0 `scale(V('n'))` failed on batch #0 (epoch 0, 4 items: 0, 1, 2, 3): "
        "UnknownVariableError: V('n'): the run has no variable 'n' (its variables: ['m']). "
        "Declare it with .init_variable('n', default)."
    )
    with pytest.raises(ActionError, match=re.escape(message)) as info:
        run_one(Pipeline().scale(V("n")), ctx_for(variables={"m": 1}))
    assert isinstance(info.value.__cause__, UnknownVariableError)


def test_an_expression_that_fails_to_compute_names_the_argument_and_chains_the_cause():
    p = Pipeline().init_variable("n", 0).fill_kw(value=V("n") + "a") << DS
    message = (
        "step 1 `fill_kw(value=V('n') + 'a')` failed on batch #0 (epoch 0, 4 items: 0, 1, 2, 3): "
        "FpipeError: value= V('n') + 'a' could not be resolved: TypeError: unsupported operand "
        "type(s) for +: 'int' and 'str'"
    )
    with pytest.raises(ActionError, match=re.escape(message)) as info:
        p.next_batch(4)
    assert isinstance(info.value.__cause__, FpipeError)
    assert isinstance(info.value.__cause__.__cause__, TypeError)
    message = "FpipeError: argument 0 B('images')['x'] could not be resolved: IndexError"
    with pytest.raises(ActionError, match=re.escape(message)):
        outs(Pipeline().fill(B("images")["x"]))
    message = "FpipeError: the value V('n') + 'a' could not be resolved: TypeError"
    with pytest.raises(ActionError, match=re.escape(message)):
        (Pipeline().init_variable("n", 0).update_variable("n", V("n") + "a") << DS).run(4)


def test_an_unknown_component_fails_when_the_step_is_compiled():
    message = (
        "step 0 `fill(B('imgs'))`: B('imgs'): Pics has no component 'imgs'. Did you mean "
        "'images'? Its components: ['images', 'labels', 'out']; declare it in `components` to "
        "add it."
    )
    with pytest.raises(PipelineDefinitionError, match=re.escape(message)):
        compile_program(Pipeline().fill(B("imgs")).steps, Pics)


def test_a_mode_on_a_variable_that_is_read_is_refused():
    message = (
        "step 1 `fill(V('n', mode='a'))`: V('n', mode='a') reads variable 'n', and a mode only "
        "means something where a result is stored: write V('n') to read it, or "
        "save_to=V('n', mode='a') to store an action's result in it."
    )
    p = Pipeline().init_variable("n", 0).fill(V("n", mode="a")) << DS
    with pytest.raises(PipelineDefinitionError, match=re.escape(message)):
        p.next_batch(4)


def test_apply_refuses_an_expression_for_a_function():
    with pytest.raises(TypeError, match="apply\\(\\) takes a function batch -> batch, not Attr"):
        Pipeline().apply(B("images").mean)


# -- speed: a step without expressions compiles exactly as before ---------------------------------
def test_a_step_without_expressions_keeps_the_plain_call():
    plain = compile_step(ActionStep("total"), Pics, (0,))
    assert plain.fn is Pics.total.fn  # no wrapper at all
    with_expr = compile_step(ActionStep("fill", (C("k"),)), Pics, (0,))
    assert with_expr.fn is not Pics.fill.fn
