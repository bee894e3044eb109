"""Step values: structural equality, hashing, labels, pickling and what each step does."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from pyrsistent import pmap

from fpipe import Batch, Dataset, Environment, Pipeline, action, model
from fpipe.errors import ModelError, PipelineDefinitionError
from fpipe.interpreter import compile_step, compile_steps, start_env
from fpipe.steps import (
    ActionStep,
    ApplyStep,
    ImportModel,
    InitModel,
    InitVariable,
    Join,
    Maybe,
    Merge,
    Rebatch,
    UpdateVariable,
    action_definition,
)
from fpipe.values import value_hash as _hash
from fpipe.values import values_equal


class StepsNums(Batch):
    @action
    def inc(self, k=1):
        return self.replace(data=self.data + k)

    @action(use_lock="steps_lock")
    def locked(self):
        return self

    @model(mode="static")
    def steps_static(pipeline, config):
        return {"w": config.get("w", 0)}

    @model(mode="dynamic")
    def steps_dynamic(batch, config):
        return {"n": len(batch)}

    def plain(self):
        return self


def double(batch):
    return batch.replace(data=batch.data * 2)


def make_list():
    return [0]


# -- values_equal / _hash ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1),
        ("x", "x"),
        (np.arange(3), np.arange(3)),
        ((1, np.ones(2)), (1, np.ones(2))),
        ([np.zeros((2, 2)), {"k": np.arange(2)}], [np.zeros((2, 2)), {"k": np.arange(2)}]),
        ({"a": [1, 2], "b": np.array([1.5])}, {"a": [1, 2], "b": np.array([1.5])}),
        (pmap({"a": np.arange(2)}), pmap({"a": np.arange(2)})),
        (double, double),
    ],
)
def test_values_equal_and_hash_agree_on_equal_values(a, b):
    assert values_equal(a, b) and values_equal(b, a)
    assert _hash(a) == _hash(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 2),
        (1, 1.0),
        (1, True),
        ([1, 2], (1, 2)),
        (np.arange(3), np.arange(4)),
        (np.arange(3), np.arange(3.0)),
        (np.arange(4), np.arange(4).reshape(2, 2)),
        (np.array([1, 2]), np.array([1, 3])),
        ({"a": 1}, {"b": 1}),
        ({"a": np.ones(2)}, {"a": np.zeros(2)}),
        ([1, 2], [1, 2, 3]),
        (lambda b: b, lambda b: b),
    ],
)
def test_values_equal_tells_different_values_apart(a, b):
    assert not values_equal(a, b) and not values_equal(b, a)


def test_values_equal_survives_a_comparison_that_raises():
    class Grumpy:
        def __eq__(self, other):
            raise RuntimeError("no")

        __hash__ = object.__hash__

    a, b = Grumpy(), Grumpy()
    assert values_equal(a, a)
    assert not values_equal(a, b)


def test_hash_of_unhashable_values_is_coarse_but_defined():
    assert _hash(np.arange(3)) == _hash(np.arange(3) + 10)  # same shape and dtype
    assert _hash(np.arange(3)) != _hash(np.arange(4))
    assert _hash({"a": [1]}) == _hash({"a": [2]})  # keys only
    assert _hash([1, [2]]) == _hash([1, [2]])
    assert _hash([1, [2]]) != _hash([1, [3]])
    assert not values_equal([1, [2]], (1, [2]))  # equal hashes may still be unequal values
    assert isinstance(_hash(bytearray(b"x")), int)


# -- equality, hash, repr, pickle of each step -----------------------------------------------
def _steps():
    return [
        ActionStep("inc", (np.arange(2),), {"k": 3}),
        ApplyStep(double, (1,), {"x": np.ones(2)}),
        InitVariable("v", [1, 2], None, True),
        InitVariable("w", None, make_list),
        UpdateVariable("v", 5, "a"),
        Maybe((ActionStep("inc"), ActionStep("inc", (2,))), 0.5),
        Rebatch(4),
        Rebatch(4, Batch.merge),
    ]


@pytest.mark.parametrize("i", range(8))
def test_equal_steps_built_twice_are_equal_and_hash_equal(i):
    a, b = _steps()[i], _steps()[i]
    assert a is not b
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1


@pytest.mark.parametrize("i", range(8))
def test_steps_pickle_to_equal_steps(i):
    step = _steps()[i]
    back = pickle.loads(pickle.dumps(step))
    assert back == step and hash(back) == hash(step) and repr(back) == repr(step)


def test_steps_of_different_kinds_or_fields_are_unequal():
    steps = _steps()
    assert len(set(steps)) == len(steps)
    assert ActionStep("inc", (1,)) != ActionStep("inc", (2,))
    assert ActionStep("inc", (1,)) != ActionStep("inc", (), {"k": 1})
    assert ActionStep("inc") != ApplyStep(double)
    assert InitVariable("v", 1) != InitVariable("v", 1, None, True)
    assert UpdateVariable("v", 1, "a") != UpdateVariable("v", 1, "w")
    assert Maybe((ActionStep("inc"),), 0.5) != Maybe((ActionStep("inc"),), 0.25)
    assert Rebatch(3) != Rebatch(4)
    assert ActionStep("inc") != "inc"


def test_steps_are_frozen():
    step = ActionStep("inc", (1,))
    with pytest.raises(AttributeError, match="cannot assign to field 'name'"):
        step.name = "other"


def test_apply_steps_with_distinct_lambdas_are_unequal_and_one_lambda_is_equal_to_itself():
    f = lambda b: b  # noqa: E731
    assert ApplyStep(f) == ApplyStep(f) and hash(ApplyStep(f)) == hash(ApplyStep(f))
    assert ApplyStep(f) != ApplyStep(lambda b: b)


def test_a_step_with_a_lambda_does_not_pickle():
    with pytest.raises((pickle.PicklingError, AttributeError), match="lambda"):
        pickle.dumps(ApplyStep(lambda b: b))


@pytest.mark.parametrize(
    ("step", "label"),
    [
        (ActionStep("inc"), "inc()"),
        (ActionStep("inc", (1, "a"), {"k": None}), "inc(1, 'a', k=None)"),
        (ActionStep("inc", (np.zeros((2, 3), np.float32),)), "inc(<array float32[2, 3]>)"),
        (ActionStep("inc", ("x" * 50,)), "inc('" + "x" * 36 + "...)"),
        (ApplyStep(double, (2,)), "apply(double, 2)"),
        (ApplyStep(double), "apply(double)"),
        (InitVariable("v", [1]), "init_variable('v', [1])"),
        (UpdateVariable("v", 1, "a"), "update_variable('v', 1, mode='a')"),
        (Maybe((ActionStep("inc"), ActionStep("inc", (2,))), 0.5), "(inc() + inc(2)) @ 0.5"),
        (Maybe((), 0.5), "(<empty>) @ 0.5"),
        (Rebatch(3), "rebatch(3)"),
        (Join((Dataset(3),)), "join(1 source)"),
        (Merge((Dataset(3), Dataset(2))), "merge(2 sources)"),
    ],
)
def test_step_repr_is_its_label(step, label):
    assert step.label == label
    assert repr(step) == label


def test_join_and_merge_compare_their_sources():
    ds = Dataset(3)
    assert Join((ds,)) == Join((ds,)) and hash(Join((ds,))) == hash(Join((ds,)))
    assert Join((ds,)) != Join((Dataset(4),))
    assert Merge((ds,)) == Merge((ds,))
    assert Merge((ds,)) != Merge((ds,), Batch.merge)


# -- models -----------------------------------------------------------------------------------
def test_init_model_steps_compare_by_definition_and_config_not_descriptor():
    p = Pipeline().init_model("StepsNums.steps_static", {"w": 1})
    q = Pipeline().init_model("StepsNums.steps_static", {"w": 1})
    (a,), (b,) = p.steps, q.steps
    assert isinstance(a, InitModel) and a.definition is StepsNums.__dict__["steps_static"]
    assert a == b and hash(a) == hash(b)  # a step is data: the descriptor is not in it
    assert a != Pipeline().init_model("StepsNums.steps_static", {"w": 2}).steps[0]
    assert p.model_env.static["steps_static"] == {"w": 1}
    assert p.model_env.static["steps_static"] is not q.model_env.static["steps_static"]
    assert a.label == "init_model('StepsNums.steps_static', config={'w': 1})"
    dyn = Pipeline().init_model(StepsNums.steps_dynamic).steps[0]
    assert dyn == Pipeline().init_model(StepsNums.steps_dynamic).steps[0]
    assert dyn.label == "init_model('StepsNums.steps_dynamic')"
    assert "steps_dynamic" not in Pipeline().init_model(StepsNums.steps_dynamic).model_env.static


def test_init_model_config_is_frozen_when_the_step_is_made():
    config = {"w": [1, 2]}
    (step,) = Pipeline().init_model("StepsNums.steps_static", config).steps
    config["w"].append(3)
    config["z"] = 0
    assert dict(step.config) == {"w": [1, 2]}
    with pytest.raises(TypeError, match="cannot change"):
        step.config["w"].append(4)


def test_start_env_puts_static_descriptors_and_declares_dynamic_ones():
    p = (
        Pipeline()
        .init_model("StepsNums.steps_static", {"w": 2})
        .init_model("StepsNums.steps_dynamic", {"z": 1})
    )
    env = start_env(p.steps, p.model_env, None)
    assert env.static["steps_static"] is p.model_env.static["steps_static"]
    assert env.static["steps_static"] == {"w": 2}
    definition, config = env.declared["steps_dynamic"]
    assert definition.name == "steps_dynamic" and config == {"z": 1}
    assert "steps_dynamic" not in env.dynamic  # built in the run, when first asked for


def test_start_env_without_the_static_descriptor_says_how_to_build_pipelines():
    (static,) = Pipeline().init_model("StepsNums.steps_static").steps
    with pytest.raises(ModelError, match=r"holds no descriptor for it.*init_model\(\)"):
        start_env((static,), Environment(), None)


def test_import_model_step_compares_by_name_and_the_pipeline_holds_the_descriptor():
    source = Pipeline().init_model("StepsNums.steps_static")
    p = Pipeline().import_model("steps_static", source)
    (step,) = p.steps
    assert step == ImportModel("steps_static") and hash(step) == hash(ImportModel("steps_static"))
    assert step != ImportModel("other")
    assert step.label == "import_model('steps_static')"
    env = start_env(p.steps, p.model_env, None)
    assert env.imported["steps_static"] is source.get_model_by_name("steps_static")
    other = Pipeline().import_model("steps_static", Pipeline().init_model("StepsNums.steps_static"))
    assert other.steps == p.steps  # same steps: the model is held by the pipeline
    assert other.model_env.imported["steps_static"] is not env.imported["steps_static"]
    with pytest.raises(ModelError, match=r"import_model\('nope', source\): the source pipeline"):
        Pipeline().import_model("nope", source)
    with pytest.raises(ModelError, match="holds no descriptor"):
        start_env((ImportModel("steps_static"),), Environment(), None)


# -- behaviour of single steps -----------------------------------------------------------------
def test_init_variable_value_is_a_fresh_copy_of_the_default():
    default = [1]
    step = InitVariable("v", default)
    default.append(2)  # frozen when the step was made
    env = start_env((step,), None, None)
    assert env.variables["v"] == [1] and env.variables["v"] is not default
    env.variables["v"].append(5)  # a run's value is its own
    assert step.value() == [1] and step.default == [1]
    assert step.value() is not step.value()


def test_init_variable_value_calls_init():
    assert InitVariable("w", None, make_list).value() == [0]
    assert start_env((InitVariable("w", None, make_list),), None, None).variables["w"] == [0]


def test_start_env_carries_the_previous_value_unless_init_on_each_run():
    previous = Environment().set_variable("v", 9)
    assert start_env((InitVariable("v", 0),), None, previous).variables["v"] == 9
    assert start_env((InitVariable("v", 0, None, True),), None, previous).variables["v"] == 0
    assert start_env((InitVariable("u", 0),), None, previous).variables["u"] == 0


def test_init_variable_is_not_a_per_batch_step():
    assert not InitVariable("v").per_batch
    assert ActionStep("inc").per_batch and UpdateVariable("v", 1).per_batch


def test_steps_are_data_only_the_interpreter_gives_them_meaning():
    for step in _steps():
        assert not hasattr(step, "compile") and not hasattr(step, "needs_env")
        assert not hasattr(step, "start")


def test_action_step_compiles_to_a_call_of_the_action():
    fn = compile_step(ActionStep("inc", (5,)), StepsNums, (0,)).fn
    b = StepsNums(np.arange(3), preloaded=np.arange(3))
    assert fn(b).data.tolist() == [5, 6, 7]
    kw = compile_step(ActionStep("inc", (), {"k": 2}), StepsNums, (0,)).fn
    assert kw(b).data.tolist() == [2, 3, 4]
    assert compile_step(ActionStep("inc"), StepsNums, (0,)).fn(b).data.tolist() == [1, 2, 3]


def test_apply_step_compiles_plain_functions_and_actions():
    b = StepsNums(np.arange(3), preloaded=np.arange(3))
    assert compile_step(ApplyStep(double), StepsNums, (0,)).fn(b).data.tolist() == [0, 2, 4]
    inc = compile_step(ApplyStep(StepsNums.inc, (10,)), StepsNums, (0,))
    assert inc.fn(b).data.tolist() == [10, 11, 12]


def test_effectful_only_for_models_locks_env_steps_and_code_that_reaches_the_env():
    def effectful(step):
        (compiled,) = compile_steps((step,), StepsNums)
        return compiled.effectful

    assert not effectful(ActionStep("inc"))
    assert effectful(ActionStep("locked"))
    assert not effectful(ApplyStep(double))
    assert effectful(ApplyStep(StepsNums.locked))
    assert effectful(UpdateVariable("v", 1))
    assert effectful(Maybe((ActionStep("locked"),), 0.5))
    assert not effectful(Maybe((ActionStep("inc"), InitVariable("v")), 0.5))
    (joined,) = compile_steps((Join((Dataset(3),)), ActionStep("inc")), StepsNums)
    assert not joined.effectful  # a dataset source is read like the batch itself
    source = Dataset(3, StepsNums).p.inc()
    (joined,) = compile_steps((Join((source,)), ActionStep("inc")), StepsNums)
    assert joined.effectful  # a pipeline source runs steps of its own, in order


def test_action_names_include_nested_maybe_steps():
    inner = Maybe((ActionStep("a"), Maybe((ActionStep("b"),), 0.5)), 0.5)
    assert list(inner.action_names()) == ["a", "b"]
    assert list(ActionStep("c").action_names()) == ["c"]
    assert list(ApplyStep(double).action_names()) == []


def test_action_definition_explains_missing_and_undecorated_actions():
    assert action_definition(StepsNums, "inc").name == "inc"
    with pytest.raises(PipelineDefinitionError, match=r"StepsNums has no action 'ink'.*'inc'"):
        action_definition(StepsNums, "ink")
    with pytest.raises(PipelineDefinitionError, match="Its actions are: inc, locked"):
        action_definition(StepsNums, "zzz")
    with pytest.raises(PipelineDefinitionError, match=r"StepsNums.plain is not an action"):
        action_definition(StepsNums, "plain")


def test_a_label_lists_keyword_arguments_by_name_in_every_process():
    import subprocess
    import sys

    code = (
        "from fpipe.steps import ActionStep; "
        "print(ActionStep('blur', (1,), {'sigma': 2, 'alpha': 3, 'mode': 'x', 'k': 4}).label)"
    )
    labels = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed)},
        ).stdout.strip()
        for seed in range(4)
    }
    assert labels == {"blur(1, alpha=3, k=4, mode='x', sigma=2)"}
