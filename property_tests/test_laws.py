"""The pipeline algebra laws of docs/laws.md, structurally and when run.

The strategies reach the awkward corners: array arguments and array variable defaults
(made read-only when generated, so that any write to an input fails loudly), keyword
arguments, a static model shared from one template, linked pipelines, stored run
arguments and ``next_batch`` iterations beside a pipeline. The laws that are checked by
running both sides go through fpipe.testing's public ``assert_laws``, the checker users
run on their own pipelines.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpipe import Batch, Dataset, Pipeline, action, model
from fpipe.errors import PipelineDefinitionError
from fpipe.testing import assert_laws


class LawNums(Batch):
    """One float component, ``data``."""

    @model(mode="static")
    def law_weights(pipeline, config):
        return np.full(1, float(config.get("w", 2.0)))

    @action
    def add(self, k):
        return self.replace(data=self.data + k)

    @action(model="law_weights")
    def weigh(self, weights):
        return self.replace(data=self.data * weights[0])

    @action
    def shift(self, *, by):
        return self.replace(data=self.data + by.sum())

    @action
    def mul(self, k):
        return self.replace(data=self.data * k)

    @action
    def noise(self, scale):
        return self.replace(data=self.data + scale * self.random.normal(size=len(self)))

    @action
    def record(self, name):
        self.pipeline.update_variable(name, float(self.data.sum()), mode="a")
        return self


DS = Dataset(12, LawNums, preloaded=np.arange(12, dtype=float))
OTHER_DS = Dataset(7, LawNums, preloaded=np.linspace(0, 1, 7))

VARS = ("va", "vb")
smallints = st.integers(-3, 3)
# One static model, built once: every pipeline that adds this template shares it.
WEIGHTS = Pipeline().init_model(LawNums.law_weights, {"w": 3.0})


def _frozen(values):
    arr = np.array(values, dtype=float)
    arr.setflags(write=False)  # an action or fpipe writing to an input fails loudly
    return arr


arrays = st.lists(st.integers(-3, 3), min_size=1, max_size=3).map(_frozen)


def leaf_steps():
    return st.one_of(
        st.tuples(st.just("add"), smallints),
        st.tuples(st.just("mul"), smallints),
        st.tuples(st.just("noise"), st.sampled_from([0.5, 1.0, 2.0])),
        st.tuples(st.just("record"), st.sampled_from(VARS)),
        st.tuples(st.just("update"), st.sampled_from(VARS), smallints),
        st.tuples(st.just("init"), st.sampled_from(VARS), smallints),
        st.tuples(st.just("init_array"), st.sampled_from(VARS), arrays),
        st.tuples(st.just("shift"), arrays),
        st.tuples(st.just("weigh")),
    )


step_specs = st.recursive(
    leaf_steps(),
    lambda inner: st.tuples(
        st.just("maybe"), st.lists(inner, max_size=3), st.sampled_from([0.0, 0.3, 0.5, 1.0])
    ),
    max_leaves=6,
)


@st.composite
def specs(draw, linked=None, lazy=False):
    """A description of a pipeline: (config, linked?, steps, stored batch size)."""
    config = draw(st.one_of(st.none(), st.fixed_dictionaries({"c": smallints})))
    link = draw(st.booleans()) if linked is None else linked
    stored = draw(st.one_of(st.none(), st.integers(1, 6))) if lazy and link else None
    return config, link, tuple(draw(st.lists(step_specs, max_size=5))), stored


def add_steps(p, steps):
    for step in steps:
        kind = step[0]
        if kind == "add":
            p = p.add(step[1])
        elif kind == "mul":
            p = p.mul(step[1])
        elif kind == "noise":
            p = p.noise(scale=step[1])
        elif kind == "record":
            p = p.record(step[1])
        elif kind == "update":
            p = p.update_variable(step[1], step[2], mode="a")
        elif kind == "init":
            p = p.init_variable(step[1], [step[2]])
        elif kind == "init_array":
            p = p.init_variable(step[1], step[2])  # an array default, appended to as a list
        elif kind == "shift":
            p = p.shift(by=step[1])
        elif kind == "weigh":
            p = p + WEIGHTS + Pipeline().weigh()
        else:
            p = p + add_steps(Pipeline(), step[1]) @ step[2]
    return p


def build(spec):
    config, link, steps, stored = spec
    p = add_steps(Pipeline(config), steps)
    p = p << DS if link else p
    return p.run(stored, lazy=True) if stored is not None else p


def pipelines(linked=None, lazy=False):
    """Pipelines; with ``lazy``, linked ones may store run arguments (``+`` refuses two
    pipelines with different stored arguments, so only single-operand laws use it)."""
    return specs(linked, lazy=lazy).map(build)


# declares every variable a pipeline may touch
START = Pipeline().init_variable(VARS[0], []).init_variable(VARS[1], [])


def linked(p):
    """``p`` ready to run: linked to DS, with every variable it may touch declared."""
    return (START + p) << DS


def outputs(p, seed, batch_size=5):
    """Every batch's (indices, data) and the final variables of a seeded run."""
    r = linked(p)
    with r.iterate(batch_size, shuffle=True, seed=seed) as it:
        batches = [(b.indices.tolist(), b.data.tobytes()) for b in it]
        final = values_of(it.result().variables)
    return batches, final


def snapshot(*ps):
    return [(pickle.dumps(p), repr(p), len(p), values_of(p.variables)) for p in ps]


def plain(value):
    """``value`` with arrays as lists, comparable with ``==``."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def values_of(variables):
    return {k: plain(v) for k, v in variables.items()}


def copies(*ps):
    return [pickle.loads(pickle.dumps(p)) for p in ps]


def check_untouched(before, ps, twins):
    assert snapshot(*ps) == before
    for p, twin in zip(ps, twins, strict=True):
        assert p == twin


SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(pipelines(lazy=True))
def test_empty_pipeline_is_identity_of_addition(p):
    before, twins = snapshot(p), copies(p)
    empty = Pipeline()
    assert empty + p == p
    assert p + empty == p
    assert hash(empty + p) == hash(p) == hash(p + empty)
    assert (empty + p).steps == p.steps == (p + empty).steps
    check_untouched(before, [p], twins)
    assert empty == Pipeline()


@SETTINGS
@given(pipelines(), pipelines(), pipelines())
def test_addition_is_associative(a, b, c):
    before, twins = snapshot(a, b, c), copies(a, b, c)
    left, right = (a + b) + c, a + (b + c)
    assert left == right
    assert hash(left) == hash(right)
    assert left.steps == a.steps + b.steps + c.steps
    assert len(left) == len(a) + len(b) + len(c)
    check_untouched(before, [a, b, c], twins)


@SETTINGS
@given(pipelines(lazy=True), st.integers(0, 4), st.integers(0, 4))
def test_repetition_laws(p, m, n):
    before, twins = snapshot(p), copies(p)
    empty_steps = p * 0
    assert empty_steps.steps == ()
    assert p * 1 == p
    assert p * 3 == p + p + p
    assert hash(p * 3) == hash(p + p + p)
    assert p * (m + n) == p * m + p * n
    assert m * p == p * m
    assert (p * m).steps == p.steps * m
    check_untouched(before, [p], twins)


def emptied(p):
    """What the laws say ``p * 0`` is: no steps, p's dataset, config and run arguments."""
    out = Pipeline(p.config)
    if p.dataset is not None:
        out = out << p.dataset
    lazy = p._lazy
    return out.run(lazy["batch_size"], lazy=True) if lazy else out


@SETTINGS
@given(pipelines(lazy=True))
def test_times_zero_keeps_only_dataset_config_and_run_arguments(p):
    assert p * 0 == emptied(p)
    assert hash(p * 0) == hash(emptied(p))
    assert (p * 0).model_env.static == {}
    if p.dataset is None and not p.config:
        assert p * 0 == Pipeline()


@SETTINGS
@given(specs(lazy=True))
def test_equal_descriptions_give_equal_pipelines_with_equal_hashes(spec):
    a, b = build(spec), build(spec)
    assert a is not b
    assert a == b
    assert hash(a) == hash(b)
    assert repr(a) == repr(b)
    assert len({a, b}) == 1


@SETTINGS
@given(pipelines(lazy=True))
def test_pickle_round_trip_is_equal_and_hashes_equal(p):
    q = pickle.loads(pickle.dumps(p))
    assert q == p
    assert hash(q) == hash(p)
    assert repr(q) == repr(p)
    assert q.steps == p.steps


@SETTINGS
@given(pipelines(), pipelines(), st.integers(0, 3), st.sampled_from([0.0, 0.25, 1.0]))
def test_no_operation_mutates_an_operand(a, b, n, prob):
    before, twins = snapshot(a, b), copies(a, b)
    derived = [
        a + b,
        b + a,
        a * n,
        n * b,
        a @ prob,
        a.add(1),
        b.noise(scale=1.0),
        a.init_variable("va", 5),
        a.set_variable("vb", 3),
        a.update_variable("vb", 1),
        a.delete_all_variables(),
        a.with_fresh_models(),
        a << {"extra": n},
        b << OTHER_DS,
        DS >> a,
    ]
    for name in ("va", "vb", "vc"):
        _ = a.has_variable(name), b.get_variable(name, None)
    _ = a.variables, b.variables, dir(a), repr(b), hash(a)
    for v in a.variables.values():  # a variable's value is a fresh copy: writing to it...
        if isinstance(v, list):
            v.append(99)
    assert hasattr(a, "not_an_action") == (a.dataset is None)
    check_untouched(before, [a, b], twins)  # ...changes nothing
    assert all(d is not a and d is not b for d in derived)


@SETTINGS
@given(pipelines(linked=False), st.integers(0, 2**32), st.integers(1, 3))
def test_running_and_next_batch_never_change_the_pipeline(p, seed, steps):
    r = linked(p)
    before, twins = snapshot(r), copies(r)
    result = r.run(4, seed=seed)
    list(r.gen_batch(5, shuffle=True, seed=seed, prefetch=2))
    for _ in range(steps):
        r.next_batch(3, seed=seed, prefetch=2)
    check_untouched(before, [r], twins)
    assert r.iteration() is not None
    r.reset()
    # a result holds what its run produced: it is never equal to its definition...
    assert result != r and result.result_env is not None
    # ...and results of equal pipelines are equal
    assert r.run(4, seed=seed) == twins[0].run(4, seed=seed) == result


@settings(max_examples=30, deadline=None)
@given(specs(linked=False), st.integers(0, 2**32))
def test_equal_pipelines_run_alike(spec, seed):
    a, b = build(spec), pickle.loads(pickle.dumps(build(spec)))
    assert a == b
    assert outputs(a, seed) == outputs(b, seed)
    result = linked(a).run(4, seed=seed)
    # a result runs like every pipeline equal to it (its variables carry over)...
    assert outputs_of(result, seed) == outputs_of(pickle.loads(pickle.dumps(result)), seed)
    # ...and differently from its definition when the run appended to a variable
    if values_of(result.variables) != values_of(linked(a).variables):
        assert outputs_of(result, seed)[1] != outputs_of(linked(a), seed)[1]


def outputs_of(r, seed):
    """Like ``outputs`` for an already linked pipeline (a run's result, say)."""
    with r.iterate(5, shuffle=True, seed=seed) as it:
        batches = [(b.indices.tolist(), b.data.tobytes()) for b in it]
        final = values_of(it.result().variables)
    return batches, final


@settings(max_examples=30, deadline=None)
@given(
    pipelines(linked=False),
    pipelines(linked=False),
    pipelines(linked=False),
    st.integers(0, 2**32),
)
def test_the_laws_hold_when_running(a, b, c, seed):
    """Each runs alike twice and like its pickled copy; identity, associativity, p * 1,
    p * 2, p * 3, p * 0 and p @ 0 run like the other side of their law."""
    assert_laws((a, b, c), DS, setup=START, batch_size=5, seed=seed)


@settings(max_examples=30, deadline=None)
@given(pipelines(linked=False), st.integers(0, 3), st.integers(0, 3), st.integers(0, 2**32))
def test_repetition_laws_hold_when_running(p, m, n, seed):
    assert outputs(p * 3, seed) == outputs(p + p + p, seed)
    assert outputs(p * (m + n), seed) == outputs(p * m + p * n, seed)


@settings(max_examples=30, deadline=None)
@given(pipelines(linked=False), st.integers(0, 2**32))
def test_times_zero_runs_like_the_empty_pipeline(p, seed):
    batches, final = outputs(p * 0, seed)
    assert (batches, final) == outputs(Pipeline(), seed)
    assert final == {"va": [], "vb": []}
    data = np.concatenate([np.frombuffer(d) for _, d in batches])
    ids = np.concatenate([i for i, _ in batches])
    assert data.tolist() == ids.astype(float).tolist()


@SETTINGS
@given(pipelines(), pipelines(), st.integers(0, 3), st.integers(0, 3))
def test_linking_distributes_over_addition_and_relinking_replaces(a, b, m, n):
    before, twins = snapshot(a, b), copies(a, b)
    assert (a + b) << DS == (a << DS) + (b << DS)
    assert DS >> (a + b) == (a + b) << DS
    assert (a << OTHER_DS) << DS == a << DS
    assert ((a << OTHER_DS) << DS).dataset is DS
    assert (a * m) << DS == (a << DS) * m
    assert (a * m) * n == a * (m * n)
    check_untouched(before, [a, b], twins)


@SETTINGS
@given(pipelines(linked=True), pipelines(linked=False))
def test_adding_pipelines_linked_to_different_datasets_fails(a, b):
    other = b << OTHER_DS
    before, twins = snapshot(a, other), copies(a, other)
    with pytest.raises(PipelineDefinitionError, match="linked to different datasets"):
        a + other
    with pytest.raises(PipelineDefinitionError, match="linked to different datasets"):
        other + a
    assert a + (other << DS) == a + (b << DS)
    check_untouched(before, [a, other], twins)


@settings(max_examples=30, deadline=None)
@given(pipelines(linked=False), st.integers(0, 2**32))
def test_probability_zero_runs_no_step(p, seed):
    batches, _ = outputs(p @ 0, seed)
    assert batches == outputs(Pipeline(), seed)[0]
    assert (p @ 0) == (p @ 0.0)
    assert (p @ 0) != (p @ 1)
    assert (p @ 0).steps[0].steps == p.steps


@SETTINGS
@given(pipelines(), st.integers(0, 4))
def test_repetition_takes_numpy_integers_and_refuses_other_counts(p, n):
    before, twins = snapshot(p), copies(p)
    assert p * np.int64(n) == p * n == np.int32(n) * p
    with pytest.raises(ValueError, match="can be repeated n >= 0 times, not -1"):
        p * (n - n - 1)
    with pytest.raises(TypeError, match=r"repeats a whole number of times: .* not \* 1\.5"):
        p * 1.5
    with pytest.raises(TypeError, match="repeats a whole number of times"):
        p * True
    with pytest.raises(ValueError, match=r"takes a probability in \[0, 1\], not 1\.5"):
        p @ 1.5
    check_untouched(before, [p], twins)


@SETTINGS
@given(pipelines(linked=True), st.integers(1, 12), st.integers(1, 12))
def test_stored_run_arguments_are_part_of_the_value(p, bs, other_bs):
    lazy = p.run(bs, lazy=True)
    assert lazy == p.run(bs, lazy=True)
    assert hash(lazy) == hash(p.run(bs, lazy=True))
    assert (lazy == p.run(other_bs, lazy=True)) == (bs == other_bs)
    assert lazy != p
    assert pickle.loads(pickle.dumps(lazy)) == lazy
    assert Pipeline() + lazy == lazy == lazy + Pipeline()
