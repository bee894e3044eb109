"""Environment: an immutable value of variables, models and lock names; model resolution."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from pyrsistent import pmap

from fpipe import Batch, Environment, model
from fpipe.env import _MISSING, lookup_model, resolve_model
from fpipe.errors import ModelError

BUILT: list[tuple[str, dict]] = []


class EnvModels(Batch):
    @model
    def env_global():
        return {"kind": "global"}

    @model(mode="dynamic")
    def env_dynamic(batch, config):
        BUILT.append(("env_dynamic", dict(config)))
        return {"kind": "dynamic", "n": len(batch)}

    @model(mode="static")
    def env_static(pipeline, config):
        return {"kind": "static"}


def no_config(name, own):
    return dict(own or {})


def a_batch(n=3):
    return EnvModels(np.arange(n), preloaded=np.arange(n))


# -- an immutable value -------------------------------------------------------------------
def test_set_variable_returns_a_new_environment_and_keeps_the_old_one():
    env = Environment().set_variable("loss", 1.0)
    new = env.set_variable("loss", 0.5)
    assert new is not env
    assert new.variables["loss"] == 0.5 and env.variables["loss"] == 1.0
    assert Environment().variables == {}


def test_environment_fields_cannot_be_assigned():
    env = Environment()
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'variables'"):
        env.variables = pmap({"a": 1})


def test_update_variable_writes_appends_and_extends_without_touching_the_old_value():
    env = Environment().set_variable("v", [1])
    appended = env.update_variable("v", 2, "a")
    extended = appended.update_variable("v", [3, 4], "extend")
    written = extended.update_variable("v", "x", "w")
    assert env.variables["v"] == [1]
    assert appended.variables["v"] == [1, 2]
    assert extended.variables["v"] == [1, 2, 3, 4]
    assert written.variables["v"] == "x"
    assert env.update_variable("v", 7, "write").variables["v"] == 7
    assert env.update_variable("v", 7, "append").variables["v"] == [1, 7]


def test_update_variable_appends_to_a_missing_or_none_variable_as_to_an_empty_list():
    assert Environment().update_variable("new", 1, "a").variables["new"] == [1]
    assert Environment().set_variable("n", None).update_variable("n", (1, 2), "e").variables[
        "n"
    ] == [1, 2]


def test_update_variable_rejects_an_unknown_mode():
    with pytest.raises(
        ValueError,
        match=r"unknown update mode 'x'; use 'w' \(write\), 'a' \(append\) or 'e' \(extend\)",
    ):
        Environment().update_variable("v", 1, "x")


def test_get_variable_returns_a_default_or_lists_known_names():
    env = Environment().set_variable("loss", 1).set_variable("acc", 2)
    assert env.get_variable("loss") == 1
    assert env.get_variable("los", None) is None
    with pytest.raises(
        KeyError, match=r"no variable 'los' in this pipeline; known variables: \['acc', 'loss'\]"
    ):
        env.get_variable("los")
    with pytest.raises(KeyError, match="Did you mean 'loss'"):
        env.get_variable("los")


def test_with_lock_adds_a_name_once_in_a_new_environment():
    env = Environment()
    locked = env.with_lock("io")
    assert locked.locks == frozenset({"io"}) and env.locks == frozenset()
    assert locked.with_lock("io") is locked


def test_equal_environments_compare_equal():
    a = Environment().set_variable("x", 1).with_lock("l")
    b = Environment().set_variable("x", 1).with_lock("l")
    assert a == b
    assert a != b.set_variable("x", 2)


def test_models_merges_tables_with_imported_names_winning():
    env = Environment(
        dynamic=pmap({"m": "dyn", "d": 1}),
        static=pmap({"m": "static", "s": 2}),
        imported=pmap({"m": "imp", "i": 3}),
    )
    assert env.models == {"m": "imp", "d": 1, "s": 2, "i": 3}
    env2 = Environment(dynamic=pmap({"m": "dyn"}), static=pmap({"m": "static"}))
    assert env2.models == {"m": "static"}


def test_pickle_keeps_variables_and_models_but_not_declarations_or_locks():
    env = (
        Environment(
            static=pmap({"s": {"w": 1}}),
            declared=pmap({"env_dynamic": (EnvModels.env_dynamic, {})}),
        )
        .set_variable("v", [1, 2])
        .with_lock("l")
    )
    back = pickle.loads(pickle.dumps(env))
    assert back.variables == {"v": [1, 2]} and back.static == {"s": {"w": 1}}
    assert back.declared == pmap() and back.locks == frozenset()
    assert back.set_variable("v", 3).variables["v"] == 3


# -- lookup_model ------------------------------------------------------------------------------
def test_lookup_model_prefers_imported_then_static_then_dynamic_then_global():
    name = "env_global"
    full = Environment(
        imported=pmap({name: "imported"}),
        static=pmap({name: "static"}),
        dynamic=pmap({name: "dynamic"}),
    )
    assert lookup_model(full, name, EnvModels) == "imported"
    no_import = dataclasses.replace(full, imported=pmap())
    assert lookup_model(no_import, name, EnvModels) == "static"
    only_dynamic = dataclasses.replace(no_import, static=pmap())
    assert lookup_model(only_dynamic, name, EnvModels) == "dynamic"
    assert lookup_model(Environment(), name, EnvModels) == {"kind": "global"}
    assert lookup_model(Environment(), name, EnvModels) is EnvModels.env_global.descriptor


def test_lookup_model_reports_missing_models():
    assert lookup_model(Environment(), "env_global", None) is _MISSING
    assert lookup_model(Environment(), "env_dynamic", EnvModels) is _MISSING
    assert lookup_model(Environment(), "nothing", EnvModels) is _MISSING


def test_lookup_model_lets_a_declared_dynamic_model_shadow_a_global_one():
    env = Environment(declared=pmap({"env_global": (EnvModels.env_dynamic, {})}))
    assert lookup_model(env, "env_global", EnvModels) is _MISSING


# -- resolve_model -----------------------------------------------------------------------------
def test_resolve_model_returns_a_known_model_and_says_it_built_nothing():
    env = Environment(static=pmap({"env_static": "S"}))
    found, built = resolve_model(env, "env_static", a_batch(), EnvModels, no_config)
    assert found == "S" and built is False


def test_resolve_model_builds_a_dynamic_model_and_leaves_adding_it_to_the_caller():
    BUILT.clear()
    env = Environment()
    found, built = resolve_model(env, "env_dynamic", a_batch(4), EnvModels, no_config)
    assert found == {"kind": "dynamic", "n": 4} and built is True
    assert "env_dynamic" not in env.dynamic  # the environment is a value: unchanged
    after = dataclasses.replace(env, dynamic=env.dynamic.set("env_dynamic", found))
    again, built_again = resolve_model(after, "env_dynamic", a_batch(9), EnvModels, no_config)
    assert again is found and built_again is False
    assert BUILT == [("env_dynamic", {})]


def test_resolve_model_builds_a_declared_dynamic_model_with_its_config():
    BUILT.clear()
    seen = []

    def config_for(name, own):
        seen.append((name, dict(own)))
        return {**own, "from": "pipeline"}

    env = Environment(declared=pmap({"env_dynamic": (EnvModels.env_dynamic, {"units": 8})}))
    found, built = resolve_model(env, "env_dynamic", a_batch(2), None, config_for)
    assert found == {"kind": "dynamic", "n": 2} and built is True
    assert seen == [("env_dynamic", {"units": 8})]
    assert BUILT == [("env_dynamic", {"units": 8, "from": "pipeline"})]


def test_resolve_model_finds_global_models():
    found, built = resolve_model(Environment(), "env_global", a_batch(), EnvModels, no_config)
    assert found == {"kind": "global"} and built is False


def test_resolve_model_of_an_uninitialised_static_model_says_to_init_it():
    with pytest.raises(
        ModelError, match=r"static model EnvModels.env_static is used but was never initialised"
    ):
        resolve_model(Environment(), "env_static", a_batch(), EnvModels, no_config)


def test_resolve_model_of_an_unknown_name_lists_known_models():
    env = Environment(imported=pmap({"imp": 1}))
    with pytest.raises(
        ModelError,
        match=r"no model named 'env_dynamc' in this run; known models: "
        r"\['env_dynamic', 'env_global', 'env_static', 'imp'\]\. Did you mean 'env_dynamic'",
    ):
        resolve_model(env, "env_dynamc", a_batch(), EnvModels, no_config)
    with pytest.raises(ModelError, match=r"known models: \['imp'\].*@model on the batch class"):
        resolve_model(env, "zzz", None, None, no_config)
