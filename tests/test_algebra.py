"""fpipe.algebra: a pipeline is a value that nothing a caller does later can change,
and whose equality means "runs alike"."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fpipe import Batch, Dataset, Pipeline, UnknownActionError, action
from fpipe.values import FrozenDict, FrozenList


class AlgNums(Batch):
    @action
    def scale(self, k):
        return self.replace(data=self.data * k)

    @action
    def pick(self, rows):
        return self.replace(data=self.data + len(rows))

    @action
    def tally(self):
        self.pipeline.update_variable("seen", 1, mode="a")
        return self


DS = Dataset(4, AlgNums, preloaded=np.ones(4))


def first_data(p):
    return (p << DS).next_batch(4).data.tolist()


def test_an_array_argument_is_taken_over_read_only_when_the_step_is_made():
    a = np.ones(4)
    p = Pipeline().scale(a)
    a[:] = 5  # the caller writes to their array afterwards...
    assert first_data(p) == [1.0] * 4  # ...and the pipeline computes what it did before
    stored = p.steps[0].args[0]
    assert stored is not a and not stored.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        stored[0] = 9
    assert p == Pipeline().scale(np.ones(4)) != Pipeline().scale(a)


def test_keyword_and_container_arguments_cannot_be_edited_through_the_pipeline():
    rows = [1, 2]
    p = Pipeline().scale(k=2).pick(rows=rows)
    with pytest.raises(TypeError):
        p.steps[0].kwargs["k"] = 3  # a persistent map: no item assignment
    rows.append(3)  # the caller's list is not the step's
    frozen = p.steps[1].kwargs["rows"]
    assert isinstance(frozen, FrozenList) and frozen == [1, 2]
    with pytest.raises(TypeError, match="cannot change"):
        frozen.append(4)
    assert first_data(p) == [4.0] * 4  # 1 * 2 + len([1, 2])
    nested = Pipeline().pick(rows={"a": [np.zeros(1)]}).steps[0].kwargs["rows"]
    assert isinstance(nested, FrozenDict) and not nested["a"][0].flags.writeable


def test_a_run_result_is_not_its_definition_because_it_runs_differently():
    t = (Pipeline().init_variable("seen", []).tally()) << Dataset(2, AlgNums)
    r = t.run(1)
    assert r.get_variable("seen") == [1, 1]
    assert r != t  # r's runs continue from its variables, t's start afresh
    assert r.run(1).get_variable("seen") == [1, 1, 1, 1]
    assert t.run(1).get_variable("seen") == [1, 1]
    assert r == t.run(1)  # results of equal pipelines are equal...
    assert pickle.loads(pickle.dumps(r)) == r  # ...and survive pickling
    assert "result_variables=['seen']" in repr(r)


def test_times_zero_keeps_the_dataset_and_config_of_a_linked_pipeline():
    p = (Pipeline({"c": 1}).scale(2) << DS) * 0
    assert p == Pipeline({"c": 1}) << DS
    assert hash(p) == hash(Pipeline({"c": 1}) << DS)
    assert p.steps == ()


def test_a_config_is_frozen_when_given():
    config = {"net": {"units": [8, 8]}}
    p = Pipeline(config)
    config["net"]["units"].append(16)
    assert p.config["net"]["units"] == [8, 8]
    with pytest.raises(TypeError):
        p.config["net"]["units"].append(16)


def test_datasets_and_pipelines_combine_only_with_the_linking_operators():
    both = r"`pipeline << dataset` or `dataset >> pipeline`"
    with pytest.raises(TypeError, match=f"cannot add a dataset and a pipeline with `\\+`.*{both}"):
        Pipeline() + DS
    with pytest.raises(TypeError, match=f"cannot add a dataset and a pipeline.*{both}"):
        DS + Pipeline()
    with pytest.raises(TypeError, match=f"`dataset << pipeline` is the wrong way round.*{both}"):
        DS << Pipeline()
    with pytest.raises(TypeError, match=f"`pipeline >> dataset` is the wrong way round.*{both}"):
        Pipeline() >> DS
    with pytest.raises(TypeError, match=r"`dataset >> x` links a pipeline x.*x is Dataset"):
        DS >> DS
    with pytest.raises(TypeError, match=r"`dataset >> x` links a pipeline x.*x is 3 \(int\)"):
        DS >> 3
    with pytest.raises(TypeError, match="add pipelines with `\\+`"):
        Pipeline() << Pipeline()
    assert DS >> Pipeline().scale(2) == Pipeline().scale(2) << DS


# -- composition is linear: each step is checked once, when it joins a batch class ------------
class AlgOther(Batch):
    @action
    def scale(self, k):
        return self


def count_checks(monkeypatch):
    import fpipe.algebra

    calls: list[str] = []
    check = fpipe.algebra.action_definition

    def counting(batch_class, name):
        calls.append(name)
        return check(batch_class, name)

    monkeypatch.setattr(fpipe.algebra, "action_definition", counting)
    return calls


def test_adding_to_a_linked_pipeline_checks_only_the_new_steps(monkeypatch):
    twin = pickle.loads(pickle.dumps(DS))  # an equal dataset, another object
    p = (Pipeline().scale(2) * 30) << DS
    expected = [(Pipeline().scale(2) * 30).pick([1]) << d for d in (twin, DS)]
    calls = count_checks(monkeypatch)
    assert [p + (Pipeline().pick([1]) << twin), (p + Pipeline().pick([1])) << DS] == expected
    assert calls == ["pick", "pick"]  # not the 30 steps of p each time


def test_folding_a_sum_checks_each_step_once(monkeypatch):
    expected = (Pipeline().scale(2) * 50) << DS
    calls = count_checks(monkeypatch)
    p = Pipeline() << DS
    for _ in range(50):
        p = (p + Pipeline().scale(2)) << DS
    assert len(calls) == 50
    assert p == expected


def test_every_step_is_still_checked_against_a_new_batch_class():
    p = Pipeline().scale(2).pick([1]) << DS
    other = Dataset(4, AlgOther)
    assert ((Pipeline().scale(2) << DS) << other).dataset is other
    with pytest.raises(UnknownActionError, match="AlgOther has no action 'pick'"):
        p << other
    with pytest.raises(UnknownActionError, match="AlgOther has no action 'pick'"):
        Pipeline().pick([1]) + (Pipeline() << other)
    with pytest.raises(UnknownActionError, match="AlgNums has no action 'nope'"):
        p + Pipeline().nope()


def test_adding_pipelines_linked_to_one_dataset_does_not_compare_its_contents(monkeypatch):
    def no_compare(self, other):
        raise AssertionError("compared the dataset with itself")

    p = Pipeline().scale(2) << DS
    monkeypatch.setattr(Dataset, "__eq__", no_compare)
    assert len(p + (Pipeline().scale(3) << DS)) == 2


def test_pipelines_built_any_way_are_the_same_value():
    chained = Pipeline() << DS
    for _ in range(5):
        chained = chained.scale(2)
    folded = Pipeline() << DS
    for _ in range(5):
        folded = folded + Pipeline().scale(2)
    repeated = (Pipeline().scale(2) * 5) << DS
    for p in (folded, repeated, pickle.loads(pickle.dumps(chained))):
        assert p == chained and hash(p) == hash(chained)
        assert type(p.steps) is tuple and p.steps == chained.steps and len(p) == 5
    assert (chained @ 0.5).steps[0].steps == chained.steps  # a tuple inside `@ prob` too
