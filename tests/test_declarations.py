"""fpipe.declarations: variables with frozen defaults, and the pipeline's model environment."""

from __future__ import annotations

import numpy as np
import pytest

from fpipe import Batch, Dataset, Pipeline, action, model


class DeclNums(Batch):
    @model(mode="static")
    def decl_linear(pipeline, config):
        rng = np.random.default_rng(config.get("seed", 0))
        return {"w": rng.normal(size=1)}

    @action(model="decl_linear")
    def fit(self, net, lr):
        # one gradient step of y = 3x on the batch, in place: training changes the model
        x = self.data
        grad = float(np.mean(2 * (net["w"][0] * x - 3 * x) * x))
        net["w"][0] -= lr * grad
        self.pipeline.update_variable("loss", float(np.mean((net["w"][0] * x - 3 * x) ** 2)), "a")
        return self

    @action
    def accumulate(self):
        acc = self.pipeline.get_variable("acc")
        acc += len(self)  # in place, on the run's own copy
        return self


DS = Dataset(8, DeclNums, preloaded=np.linspace(0.1, 1.0, 8))


def test_an_array_default_never_drifts_from_run_to_run():
    default = np.zeros(1)
    p = Pipeline().init_variable("acc", default).accumulate() << DS
    default[:] = 100  # the caller's array is not the declaration
    first, second = p.run(4), p.run(4)
    assert first.get_variable("acc").tolist() == [8.0] == second.get_variable("acc").tolist()
    assert p.get_variable("acc").tolist() == [0.0]
    assert not p.steps[0].default.flags.writeable
    p.get_variable("acc")[:] = 7  # a read gives a fresh copy: writing to it changes nothing
    assert p.get_variable("acc").tolist() == [0.0]


def test_static_models_live_in_the_model_environment_shared_by_derived_pipelines():
    t = Pipeline().init_model(DeclNums.decl_linear, {"seed": 1})  # the definition itself
    assert "decl_linear" in t.model_env.static
    assert not any(hasattr(s, "descriptor") for s in t.steps)  # steps are data only
    a, b = (t << DS).init_variable("loss", []), t.fit(0.1) << Dataset(3, DeclNums)
    assert a.get_model_by_name("decl_linear") is b.get_model_by_name("decl_linear")
    assert (t * 2).model_env.static == t.model_env.static


def test_with_fresh_models_repeats_a_training_run_exactly():
    p = Pipeline().init_variable("loss", []).init_model("decl_linear").fit(0.5) << DS
    first = p.run(2, shuffle=True, seed=3).get_variable("loss")
    again = p.run(2, shuffle=True, seed=3).get_variable("loss")
    assert again != first  # the shared model went on training: the run is not repeated
    fresh_a = p.with_fresh_models().run(2, shuffle=True, seed=3).get_variable("loss")
    fresh_b = p.with_fresh_models().run(2, shuffle=True, seed=3).get_variable("loss")
    assert fresh_a == fresh_b == first
    assert p.with_fresh_models() == p.with_fresh_models()  # equal weights: runs alike
    assert p.with_fresh_models() != p  # p's model has been trained since


def test_an_undeclared_variable_cannot_be_updated_and_the_error_suggests_the_name():
    from fpipe import PipelineCheckError, UnknownVariableError

    p = Pipeline().init_variable("loss", []).update_variable("los", 1.0, mode="a") << DS
    with pytest.raises(PipelineCheckError, match="Did you mean 'loss'"):
        p.run(4)  # refused before the first batch
    with pytest.raises(UnknownVariableError, match="Did you mean 'loss'"):
        p.get_variable("los")
