"""RunState: the environment cell of one run, its locks, its pool and the batch contexts."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fpipe import Batch, Dataset, Pipeline, action, model, rng
from fpipe.env import Environment
from fpipe.errors import FpipeError, UndeclaredEffectError
from fpipe.interpreter import CompiledStep
from fpipe.runstate import BatchContext, PureView, RunState


def run_state(**variables):
    env = Environment()
    for name, value in variables.items():
        env = env.set_variable(name, value)
    return RunState(seed=5, env=env, batch_class=None, config={})


class RsNums(Batch):
    components = ("x",)

    @action
    def log_and_peek(self):
        seen = self.pipeline.get_variable("log")
        self.pipeline.update_variable("peeks", list(seen), mode="a")  # a copy of what it saw
        self.pipeline.update_variable("log", int(self.indices[0]), mode="a")
        return self

    @model(mode="dynamic")
    def rs_sized(batch, config):
        # a factory may record what it saw in a (declared) variable of the run
        batch.pipeline.set_variable("built_from", batch.indices.tolist())
        batch.pipeline.update_variable("builds", len(batch), mode="a")
        return {"scale": config.get("scale", 1.0)}

    @action(model="rs_sized")
    def rs_use_sized(self, sized):
        self.pipeline.update_variable("used", sized["scale"], mode="a")
        return self


# -- the environment cell --------------------------------------------------------------------


def test_appends_grow_one_list_while_no_one_outside_the_run_has_seen_it():
    run = run_state(log=[])
    run.update_variable("log", 1, mode="a")
    grown = run._env.variables["log"]
    run.update_variable("log", 2, mode="a")
    run.update_variable("log", [3, 4], mode="e")
    assert run._env.variables["log"] is grown  # in place: n appends cost O(n)
    assert grown == [1, 2, 3, 4]


def test_an_environment_read_from_outside_never_changes_afterwards():
    initial = []
    run = run_state(log=initial)
    run.update_variable("log", 1, mode="a")
    snapshot = run.env
    run.update_variable("log", 2, mode="a")
    run.update_variable("log", [3], mode="extend")
    assert snapshot.variables["log"] == [1]
    assert run.env.variables["log"] == [1, 2, 3]
    assert initial == []  # the starting value is never written to


def test_a_value_an_action_read_is_not_changed_by_later_appends():
    ds = Dataset(6, RsNums, preloaded=(np.zeros(6),))
    p = Pipeline().init_variable("log", []).init_variable("peeks", []).log_and_peek()
    result = (p << ds).run(2)
    assert result.get_variable("log") == [0, 2, 4]
    assert result.get_variable("peeks") == [[], [0], [0, 2]]


def test_write_mode_replaces_and_unknown_modes_are_refused():
    run = run_state(v=[1])
    run.update_variable("v", 5)
    assert run.env.variables["v"] == 5
    msg = r"unknown update mode 'x'; use 'w' \(write\), 'a' \(append\) or 'e' \(extend\)"
    with pytest.raises(ValueError, match=msg):
        run.update_variable("v", 1, mode="x")
    run.update_variable("v", [], mode="write")  # every accepted spelling
    for value, mode in ((1, "append"), (2, "a"), ([3], "extend"), ([4], "e")):
        run.update_variable("v", value, mode=mode)
    assert run.env.variables["v"] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="unknown update mode"):
        run.update_variable("v", 1, mode=None)
    assert run.env.variables["v"] == [1, 2, 3, 4]
    run.update_variable("v", 6, mode="w")
    assert run.env.variables["v"] == 6


def test_concurrent_appends_lose_nothing():
    run = run_state(log=[])

    def add(k):
        for i in range(200):
            run.update_variable("log", (k, i), mode="a")

    threads = [threading.Thread(target=add, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = run.env.variables["log"]
    assert sorted(got) == [(k, i) for k in range(4) for i in range(200)]


def test_swap_is_atomic_and_returns_the_new_environment():
    run = run_state(n=0)
    new = run.swap(lambda env: env.set_variable("n", env.variables["n"] + 1))
    assert new.variables["n"] == 1 and run.env is new


# -- locks and the pool ----------------------------------------------------------------------


def test_a_named_lock_is_made_once_per_run_and_recorded_in_the_environment():
    run = run_state()
    assert run.lock("train") is run.lock("train")
    assert "train" in run.env.locks
    assert not run.lock_is_held("train")
    with run.lock("train"):
        assert run.lock_is_held("train")
        with run.lock("train"):  # reentrant: a locked action may call another by hand
            assert run.lock_is_held("train")
    assert not run.lock_is_held("train")


def test_a_named_lock_held_by_another_thread_is_held_and_excludes_this_one():
    run = run_state()
    taken, release = threading.Event(), threading.Event()

    def hold():
        with run.lock("train"):
            taken.set()
            release.wait(5)

    other = threading.Thread(target=hold)
    other.start()
    try:
        assert taken.wait(5)
        assert run.lock_is_held("train")  # by the other thread
        assert not run.lock("train").acquire(blocking=False)  # and not to be taken here
    finally:
        release.set()
        other.join(5)
    assert not run.lock_is_held("train")


def test_the_pool_is_one_per_run_and_closed_with_the_run():
    run = run_state()
    pool = run.pool()
    assert run.pool() is pool
    assert pool.submit(lambda: 41 + 1).result() == 42
    closed = []
    run.on_close(lambda: closed.append(True))
    run.close()
    assert closed == [True]
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


# -- batch contexts --------------------------------------------------------------------------


def test_a_context_draws_from_seed_epoch_batch_and_step_only():
    run = run_state()
    ctx = BatchContext(run, epoch=1, iteration=3)
    ctx.step = CompiledStep(lambda b: b, (2,), "s", effectful=False)
    want = rng.derive(5, rng.PURPOSE_BATCH, 1, 3, 2).random(4)
    np.testing.assert_array_equal(ctx.random().random(4), want)
    other = BatchContext(run, epoch=1, iteration=3)
    other.step = CompiledStep(lambda b: b, (3,), "s", effectful=False)
    assert not np.array_equal(other.random().random(4), want)  # another step: another stream


def test_a_pure_step_sees_config_and_seed_but_no_environment():
    run = run_state(n=1)
    ctx = BatchContext(run, epoch=0, iteration=0)
    ctx.step = CompiledStep(lambda b: b, (0,), "tally()", effectful=False)
    view = ctx.view()
    assert isinstance(view, PureView) and view.seed == run.seed and view.config == run.config
    for reach in (
        lambda: view.get_variable("n"),
        lambda: view.update_variable("n", 2),
        lambda: view.get_model_by_name("m"),
        lambda: view.lock("l"),
    ):
        with pytest.raises(UndeclaredEffectError, match=r"tally\(\)[\s\S]*@action\(effects=True\)"):
            reach()
    ctx.step = CompiledStep(lambda b: b, (0,), "tally()", effectful=True)
    assert ctx.view().get_variable("n") == 1


def test_setting_or_updating_an_undeclared_variable_is_an_error_with_a_suggestion():
    from fpipe import UnknownVariableError

    run = run_state(loss=[])
    for change in (lambda: run.update_variable("los", 1, "a"), lambda: run.set_variable("los", 1)):
        with pytest.raises(UnknownVariableError, match="Did you mean 'loss'"):
            change()
    assert run.env.variables["loss"] == []


def test_a_dynamic_model_factory_may_set_declared_variables_and_they_are_kept():
    ds = Dataset(6, RsNums, preloaded=(np.zeros(6),))
    p = (
        Pipeline()
        .init_variable("built_from", None)
        .init_variable("builds", [])
        .init_variable("used", [])
        .init_model("rs_sized", {"scale": 2.0})
        .rs_use_sized()
    ) << ds
    for prefetch in (0, 2):
        result = p.run(2, shuffle=True, seed=3, prefetch=prefetch)
        first = next(iter(p.gen_batch(2, shuffle=True, seed=3))).indices.tolist()
        assert result.get_variable("built_from") == first  # set by the factory, once
        assert result.get_variable("builds") == [2]
        assert result.get_variable("used") == [2.0, 2.0, 2.0]
        assert result.get_model_by_name("rs_sized") == {"scale": 2.0}
    assert p.get_variable("built_from") is None  # the definition is untouched


def test_a_dynamic_model_factory_cannot_create_an_undeclared_variable():
    from fpipe import ActionError, UnknownVariableError

    ds = Dataset(4, RsNums, preloaded=(np.zeros(4),))
    p = Pipeline().init_variable("builds", []).init_variable("used", []).rs_use_sized() << ds
    with pytest.raises(ActionError, match="built_from") as info:
        p.run(2)
    causes = []
    err: BaseException | None = info.value
    while err is not None:
        causes.append(err)
        err = err.__cause__
    assert any(isinstance(c, UnknownVariableError) for c in causes)


def test_a_closed_run_starts_no_new_pool():
    """A batch that finishes after its run ended (a stalled worker) leaves no threads."""
    run = run_state()
    run.close()
    with pytest.raises(FpipeError, match="this run has ended"):
        run.pool()


def test_a_replica_shares_resources_but_keeps_its_own_environment():
    run = run_state(n=[])
    run.resources["k"] = "shared"
    twin = run.replica()
    twin.update_variable("n", 1, mode="a")
    assert twin.resources is run.resources and twin.lock("a") is run.lock("a")
    assert twin.env.get_variable("n") == [1] and run.env.get_variable("n") == []
    run.close()
    with pytest.raises(FpipeError, match="this run has ended"):
        twin.pool()
