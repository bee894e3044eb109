"""A stateful machine that builds pipelines and checks them against a list-of-steps model."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from fpipe import Batch, Dataset, Pipeline, action
from fpipe.errors import (
    ActionError,
    PipelineCheckError,
    PipelineDefinitionError,
    UnknownVariableError,
)
from fpipe.steps import ActionStep, InitVariable, Maybe, UpdateVariable


class MachineNums(Batch):
    """One float component, ``data``."""

    @action
    def add(self, k):
        return self.replace(data=self.data + k)

    @action
    def mul(self, k):
        return self.replace(data=self.data * k)

    @action
    def record(self, name):
        self.pipeline.update_variable(name, float(self.data.sum()), mode="a")
        return self


DATASETS = [
    Dataset(1, MachineNums, preloaded=np.array([3.0])),
    Dataset(5, MachineNums, preloaded=np.arange(5, dtype=float) - 2),
    Dataset(12, MachineNums, preloaded=np.arange(12, dtype=float) * 3),
]
VARS = ("va", "vb")
MAX_STEPS = 24  # keeps repeated mul(2) exact in float64 and runs fast


class Entry:
    """A pipeline, its reference list of steps, its dataset, and what it was when made."""

    def __init__(self, pipeline, ref, dataset, carry=None):
        self.pipeline = pipeline
        self.ref = list(ref)
        self.dataset = dataset
        self.carry = carry  # final variables of the run that returned this pipeline
        self.snapshot = pickle.dumps(pipeline)
        self.twin = pickle.loads(self.snapshot)
        self.repr = repr(pipeline)

    def __repr__(self):
        return f"Entry({self.ref!r}, dataset={self.dataset!r})"


def as_reference(steps):
    """The pipeline's steps written as the reference's plain tuples."""
    out = []
    for s in steps:
        if isinstance(s, ActionStep):
            assert not s.kwargs
            out.append((s.name, *s.args))
        elif isinstance(s, InitVariable):
            assert s.init is None and not s.init_on_each_run
            out.append(("init_variable", s.name, s.default))
        elif isinstance(s, UpdateVariable):
            out.append(("update_variable", s.name, s.value, s.mode))
        elif isinstance(s, Maybe):
            out.append(("maybe", s.prob, as_reference(s.steps)))
        else:
            raise AssertionError(f"unexpected step {s!r}")
    return out


def start_variables(ref, carry, out=None):
    """What a run starts from: each declared variable's default (the last one wins),
    or its value carried over from the run that returned the pipeline."""
    out = {} if out is None else out
    for step in ref:
        if step[0] == "init_variable":
            name = step[1]
            out[name] = list(carry[name]) if carry and name in carry else list(step[2])
        elif step[0] == "maybe":
            start_variables(step[2], carry, out)
    return out


def apply_by_hand(ref, data, variables):
    """Run the reference steps on one batch's data in plain numpy."""
    for step in ref:
        kind = step[0]
        if kind == "add":
            data = data + step[1]
        elif kind == "mul":
            data = data * step[1]
        elif kind == "record":
            variables[step[1]] = [*variables.get(step[1], []), float(data.sum())]
        elif kind == "update_variable":
            _, name, value, mode = step
            if mode == "a":
                variables[name] = [*variables.get(name, []), value]
            else:
                variables[name] = value
        elif kind == "maybe" and step[1] == 1.0:
            data = apply_by_hand(step[2], data, variables)
    return data


def reached_updates(ref):
    """The variables a run of ``ref`` writes to (steps under ``@ 0.0`` never run)."""
    names = set()
    for step in ref:
        if step[0] in ("record", "update_variable"):
            names.add(step[1])
        elif step[0] == "maybe" and step[1] == 1.0:
            names |= reached_updates(step[2])
    return names


def update_steps(ref):
    """The variables the ``update_variable`` steps of ``ref`` name, wherever they are
    (the check before a run reads them all, also under ``@ 0.0``)."""
    names = set()
    for step in ref:
        if step[0] == "update_variable":
            names.add(step[1])
        elif step[0] == "maybe":
            names |= update_steps(step[2])
    return names


def edit_inits(ref, name, value=None, drop=False):
    """The reference with every declaration of ``name`` (also inside "maybe") changed."""
    out, hits = [], 0
    for step in ref:
        if step[0] == "init_variable" and step[1] == name:
            hits += 1
            if not drop:
                out.append(("init_variable", name, value))
        elif step[0] == "maybe":
            inner, n = edit_inits(step[2], name, value, drop)
            hits += n
            out.append(("maybe", step[1], inner))
        else:
            out.append(step)
    return out, hits


def size(ref):
    return sum(size(s[2]) if s[0] == "maybe" else 1 for s in ref)


class PipelineMachine(RuleBasedStateMachine):
    pipes = Bundle("pipes")

    def __init__(self):
        super().__init__()
        self.entries: list[Entry] = []

    def keep(self, entry):
        self.entries.append(entry)
        return entry

    @initialize(target=pipes)
    def template(self):
        return self.keep(Entry(Pipeline(), [], None))

    @initialize(target=pipes, ds=st.sampled_from(DATASETS))
    def from_dataset(self, ds):
        return self.keep(Entry(ds.p, [], ds))

    @rule(
        target=pipes,
        e=pipes,
        steps=st.lists(
            st.one_of(
                st.tuples(st.just("add"), st.integers(-3, 3)),
                st.tuples(st.just("mul"), st.integers(-2, 2)),
                st.tuples(st.just("record"), st.sampled_from(VARS)),
            ),
            min_size=1,
            max_size=4,
        ),
    )
    def add_actions(self, e, steps):
        steps = steps[: max(0, MAX_STEPS - size(e.ref))]
        p = e.pipeline
        for step in steps:
            p = getattr(p, step[0])(*step[1:])
        return self.keep(Entry(p, [*e.ref, *steps], e.dataset))

    @rule(
        target=pipes,
        e=pipes,
        name=st.sampled_from(VARS),
        default=st.lists(st.integers(-5, 5), max_size=2),
    )
    def add_variable(self, e, name, default):
        p = e.pipeline.init_variable(name, default)
        return self.keep(Entry(p, [*e.ref, ("init_variable", name, default)], e.dataset))

    @rule(
        target=pipes,
        e=pipes,
        name=st.sampled_from(VARS),
        value=st.integers(-5, 5),
        mode=st.sampled_from(["a", "w"]),
    )
    def update_variable(self, e, name, value, mode):
        if mode == "w":
            value = [value]  # keep every variable a list, so "a" can always append
        p = e.pipeline.update_variable(name, value, mode=mode)
        return self.keep(Entry(p, [*e.ref, ("update_variable", name, value, mode)], e.dataset))

    @rule(
        target=pipes,
        e=pipes,
        name=st.sampled_from(VARS),
        value=st.lists(st.integers(-5, 5), max_size=2),
    )
    def set_variable(self, e, name, value):
        ref, hits = edit_inits(e.ref, name, value)
        if not hits:
            ref.append(("init_variable", name, value))
        p = e.pipeline.set_variable(name, value)
        assert p.get_variable(name) == value
        return self.keep(Entry(p, ref, e.dataset))

    @rule(target=pipes, e=pipes, name=st.sampled_from([*VARS, None]))
    def delete_variables(self, e, name):
        if name is None:
            ref = e.ref
            for n in VARS:
                ref = edit_inits(ref, n, drop=True)[0]
            p = e.pipeline.delete_all_variables()
        else:
            ref, hits = edit_inits(e.ref, name, drop=True)
            if not hits:
                with pytest.raises(KeyError, match=f"has no variable '{name}' to delete"):
                    e.pipeline.del_variable(name)
                return self.keep(e)
            p = e.pipeline.del_variable(name)
        assert not (set(p.variables) & ({name} if name else set(VARS)))
        return self.keep(Entry(p, ref, e.dataset))

    @rule(target=pipes, a=pipes, b=pipes)
    def concatenate(self, a, b):
        if a.dataset is not None and b.dataset is not None and a.dataset != b.dataset:
            with pytest.raises(PipelineDefinitionError, match="different datasets"):
                a.pipeline + b.pipeline
            return self.keep(a)
        if size(a.ref) + size(b.ref) > MAX_STEPS:
            return self.keep(b)
        dataset = b.dataset if b.dataset is not None else a.dataset
        return self.keep(Entry(a.pipeline + b.pipeline, a.ref + b.ref, dataset))

    @rule(target=pipes, e=pipes, n=st.integers(0, 3))
    def repeat(self, e, n):
        if size(e.ref) * n > MAX_STEPS:
            n = 1
        return self.keep(Entry(e.pipeline * n, e.ref * n, e.dataset))

    @rule(target=pipes, e=pipes, prob=st.sampled_from([0.0, 1.0]))
    def maybe(self, e, prob):
        return self.keep(Entry(e.pipeline @ prob, [("maybe", prob, e.ref)], e.dataset))

    @rule(target=pipes, e=pipes, ds=st.sampled_from(DATASETS))
    def link(self, e, ds):
        p = e.pipeline << ds if len(e.ref) % 2 else ds >> e.pipeline
        return self.keep(Entry(p, e.ref, ds))

    @rule(e=pipes)
    def misspelt_action_on_a_linked_pipeline_fails(self, e):
        if e.dataset is None:
            assert e.pipeline.ad(1).steps[-1] == ActionStep("ad", (1,))
            return
        with pytest.raises(
            PipelineDefinitionError, match=r"has no action 'ad'\. Did you mean 'add'"
        ):
            e.pipeline.ad(1)

    @rule(
        target=pipes,
        e=pipes,
        ds=st.sampled_from(DATASETS),
        batch_size=st.integers(1, 12),
        prefetch=st.integers(0, 3),
        shuffle=st.one_of(st.just(False), st.integers(0, 2**32)),
        n_epochs=st.integers(1, 2),
        drop_last=st.booleans(),
    )
    def run(self, e, ds, batch_size, prefetch, shuffle, n_epochs, drop_last):
        p, carry = e.pipeline, e.carry
        if e.dataset is None:
            p, carry = p << ds, None
        else:
            ds = e.dataset
        batch_size = min(batch_size, len(ds))
        variables = start_variables(e.ref, carry)
        if update_steps(e.ref) - set(variables):  # refused before the run starts
            with pytest.raises(PipelineCheckError, match="never declared"):
                p.run(batch_size, prefetch=prefetch)
            return self.keep(e)
        undeclared = reached_updates(e.ref) - set(variables)
        if undeclared:  # an action writing to a variable never declared stops the run
            with pytest.raises(ActionError, match="never declared") as info:
                p.run(batch_size, prefetch=prefetch)
            assert isinstance(info.value.__cause__, UnknownVariableError)
            return self.keep(e)
        data = ds.preloaded["data"]
        seen = []
        with p.iterate(
            batch_size, shuffle=shuffle, n_epochs=n_epochs, drop_last=drop_last, prefetch=prefetch
        ) as it:
            for batch in it:
                ids = batch.indices
                seen.extend(ids.tolist())
                expected = apply_by_hand(e.ref, data[ds.index.get_pos(ids)], variables)
                assert batch.data.dtype == expected.dtype
                assert batch.data.tolist() == expected.tolist()
            result = it.result()
        kept = len(ds) - len(ds) % batch_size if drop_last else len(ds)
        assert len(seen) == kept * n_epochs
        per_epoch = [sorted(seen[k * kept : (k + 1) * kept]) for k in range(n_epochs)]
        assert all(len(set(ids)) == kept for ids in per_epoch)
        assert result.variables == variables
        assert result.steps == p.steps
        if p.result_env is None:
            assert result != p  # a result compares by what it holds: not its definition
        assert as_reference(result.steps) == e.ref
        return self.keep(Entry(result, e.ref, ds, carry=variables))

    @rule(e=pipes, batch_size=st.integers(1, 4), prefetch=st.integers(0, 2))
    def next_batch_leaves_the_pipeline_as_it_was(self, e, batch_size, prefetch):
        if e.dataset is None:
            return
        before = e.pipeline.variables
        try:
            e.pipeline.next_batch(min(batch_size, len(e.dataset)), prefetch=prefetch)
        except (ActionError, PipelineCheckError, StopIteration):
            e.pipeline.reset()
        assert e.pipeline.variables == before  # the invariants below check the rest

    @invariant()
    def steps_match_the_reference(self):
        for e in self.entries:
            assert as_reference(e.pipeline.steps) == e.ref
            assert len(e.pipeline) == len(e.ref)
            assert e.pipeline.dataset is e.dataset or e.pipeline.dataset == e.dataset

    @invariant()
    def variables_are_what_a_run_starts_from(self):
        for e in self.entries:
            if e.carry is None:
                expected = start_variables(e.ref, None)
                assert e.pipeline.variables == expected
                for name in VARS:
                    assert e.pipeline.has_variable(name) == (name in expected)

    @invariant()
    def no_pipeline_was_ever_mutated(self):
        for e in self.entries:
            assert pickle.dumps(e.pipeline) == e.snapshot
            assert e.pipeline == e.twin
            assert hash(e.pipeline) == hash(e.twin)
            assert repr(e.pipeline) == e.repr


PipelineMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=35, deadline=None)
test_pipelines_agree_with_a_list_of_steps_model = PipelineMachine.TestCase


def test_variables_declared_inside_a_probability_step_are_what_runs_start_from():
    ds = DATASETS[1]
    p = Pipeline().init_variable("va", [1]) + (Pipeline().init_variable("va", [2]) @ 0.0)
    assert p.get_variable("va") == [2] == (p << ds).run(5).get_variable("va")
    q = p.set_variable("va", [5])
    assert q.get_variable("va") == [5] == (q << ds).run(5).get_variable("va")
    nested = Pipeline().init_variable("vb", [3]) @ 0.5
    assert nested.has_variable("vb")
    assert not nested.del_variable("vb").has_variable("vb")
    assert nested.delete_all_variables().variables == {}
    with pytest.raises(KeyError, match="has no variable 'vb' to delete"):
        nested.del_variable("vb").del_variable("vb")
