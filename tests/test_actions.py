"""Actions: @action forms, result checks, errors naming the step, locks and apply()."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from fpipe import (
    ActionError,
    Batch,
    Dataset,
    FpipeError,
    Pipeline,
    SkipBatch,
    UndeclaredEffectError,
    action,
    inbatch_parallel,
    model,
)
from fpipe.actions import ActionDefinition, mentions_env
from fpipe.interpreter import compile_program

ACTIVE = {"now": 0, "max": 0}
ACTIVE_LOCK = threading.Lock()
# batch id -> how many times the body of ActNums.sneaky ran for it
SNEAKY_CALLS: dict[int, int] = {}
SNEAKY_LOCK = threading.Lock()


class ActNums(Batch):
    @model
    def ta_model():
        return {"w": 3.0}

    @action
    def double(self):
        return self.replace(data=self.data * 2)

    @action()
    def add(self, k, times=1):
        return self.replace(data=self.data + k * times)

    @action
    def bad(self):
        self.replace(data=self.data * 2)  # forgot return

    @action
    def bad_value(self):
        return float(self.data.sum())

    @action
    def fail(self):
        raise KeyError("missing thing")

    @action(use_lock="ta_lock")
    def locked_ok(self):
        self.pipeline.update_variable("held", self.pipeline.run.lock_is_held("ta_lock"), "a")
        return self

    @action(use_lock="ta_lock")
    def locked_fail(self):
        raise RuntimeError("locked kaboom")

    @action(use_lock="ta_lock")
    def locked_skip_odd(self):
        if int(self.indices[0]) % 2:
            raise SkipBatch
        return self

    @action(use_lock="ta_lock")
    def locked_fail_on_first(self):
        if int(self.indices[0]) == 0:
            raise RuntimeError("first batch fails")
        return self

    @action(use_lock="ta_count")
    def locked_count(self):
        with ACTIVE_LOCK:
            ACTIVE["now"] += 1
            ACTIVE["max"] = max(ACTIVE["max"], ACTIVE["now"])
        total = float(np.sin(np.arange(20000.0)).sum())  # a little work while holding the lock
        with ACTIVE_LOCK:
            ACTIVE["now"] -= 1
        return self.replace(data=self.data + 0 * total)

    @action
    def recover_then_lock(self):
        try:
            self.locked_fail()
        except RuntimeError:
            pass
        held_after = self.pipeline.run.lock_is_held("ta_lock")
        self.pipeline.set_variable("held_after_fail", held_after)
        return self.locked_ok()

    @action(use_lock="ta_lock")
    def locked_calls_locked(self):
        return self.locked_ok().double()

    @action(model="ta_model")
    def use_model(self, m, k):
        return self.replace(data=self.data * m["w"] + k)

    # -- effect classification ------------------------------------------------------------
    @action
    def reads_variable(self):
        return self.replace(data=self.data + self.pipeline.get_variable("k"))

    @action
    def finds_model(self):
        m = self.get_model_by_name("ta_model")
        return self.replace(data=self.data * m["w"])

    @action
    def nested_reach(self):
        def total():
            return sum(self.pipeline.get_variable("log"))

        return self.replace(data=self.data + total())

    @action
    def nested_pure(self):
        def twice(x):
            return x * 2

        return self.replace(data=twice(self.data))

    @action(effects=True)
    def declared_effectful(self):
        return self

    @action(effects=False)
    def declared_pure(self):
        if False:  # only mentions the name: declared pure wins
            self.pipeline.get_variable("k")
        return self

    @action(use_lock="ta_lock")
    def lock_only(self):
        return self

    @action
    @inbatch_parallel(init="indices", post="_log_results", target="threads")
    def parallel_post_reaches(self, item_id):
        return item_id * 2

    @action
    @inbatch_parallel(init="_ids_from_env", post="_plain_post", target="for")
    def parallel_init_reaches(self, item_id):
        return item_id

    @action
    @inbatch_parallel(init="indices", post="_plain_post", target="threads")
    def parallel_pure(self, item_id):
        return item_id + 1

    @action
    @inbatch_parallel(init="indices", post="_plain_post", target="threads")
    def parallel_item_reaches(self, item_id):
        with self.pipeline.lock("ta_items"):
            return item_id

    def _log_results(self, results):
        self.pipeline.update_variable("log", results, mode="e")
        return self.replace(data=np.array(results, dtype=float))

    def _ids_from_env(self):
        return self.pipeline.get_variable("ids")

    def _plain_post(self, results):
        return self.replace(data=np.array(results, dtype=float))

    @action
    def sneaky(self):
        """Reaches the variables only through a helper: fpipe classifies it pure."""
        key = int(self.indices[0])
        with SNEAKY_LOCK:
            SNEAKY_CALLS[key] = SNEAKY_CALLS.get(key, 0) + 1
        return _ta_count_hit(self)


def _ta_count_hit(batch):
    batch.pipeline.update_variable("hits", int(batch.indices[0]), mode="a")
    return batch


def ds(n=4):
    return Dataset(n, ActNums, preloaded=np.arange(float(n)))


def batch(n=3):
    return ActNums(np.arange(n), preloaded=np.arange(float(n)))


def out(p, size=2):
    return [b.data.tolist() for b in p.gen_batch(size)]


# -- the decorator's forms ---------------------------------------------------------------------
def test_action_forms_make_action_definitions():
    assert isinstance(ActNums.__dict__["double"], ActionDefinition)
    assert isinstance(ActNums.__dict__["add"], ActionDefinition)
    locked = ActNums.__dict__["locked_ok"]
    assert locked.use_lock == "ta_lock" and locked.model is None and locked.effectful
    modelled = ActNums.__dict__["use_model"]
    assert modelled.model == "ta_model" and modelled.use_lock is None and modelled.effectful
    assert not ActNums.__dict__["double"].effectful
    assert ActNums.__dict__["double"].qualname == "ActNums.double"
    assert ActNums.__dict__["double"].effects is None  # not declared: inferred


def test_action_repr_shows_its_options():
    assert repr(ActNums.__dict__["double"]) == "<action ActNums.double>"
    assert repr(ActNums.__dict__["locked_ok"]) == "<action ActNums.locked_ok, use_lock='ta_lock'>"
    assert repr(ActNums.__dict__["use_model"]) == "<action ActNums.use_model, model='ta_model'>"


def test_action_keeps_the_function_name_and_doc():
    def f(batch):
        """Doc of f."""
        return batch

    a = action(f)
    assert a.__name__ == "f" and a.__doc__ == "Doc of f."


def test_action_model_may_be_given_by_an_object_with_a_name():
    class Named:
        name = "ta_other"

    assert action(model=Named())(lambda b, m: b).model == "ta_other"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: action(3), "@action decorates a function, not int"),
        (lambda: action(use_lock=3)(lambda b: b), r"use_lock=\.\.\.\) takes a lock name"),
        (lambda: action(model=3)(lambda b: b), r"model=\.\.\.\) takes the model's name"),
        (lambda: action(effects="yes")(lambda b: b), r"effects=\.\.\.\) takes True or False"),
        (lambda: action(effects=1)(lambda b: b), r"effects=\.\.\.\) takes True or False"),
    ],
)
def test_bad_action_arguments_are_errors(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_actions_run_as_pipeline_steps_with_args_and_kwargs():
    p = Pipeline().double().add(1, times=3) << ds()
    assert out(p) == [[3.0, 5.0], [7.0, 9.0]]


def test_model_action_gets_the_model_descriptor_first():
    p = Pipeline().use_model(1.0) << ds()
    assert out(p) == [[1.0, 4.0], [7.0, 10.0]]


def test_actions_pickle_by_reference():
    d = ActNums.__dict__["locked_ok"]
    assert pickle.loads(pickle.dumps(d)) is d


# -- called by hand ---------------------------------------------------------------------------
def test_action_called_directly_on_a_batch_is_a_pure_function():
    b = batch()
    c = b.add(10, times=2)
    assert c.data.tolist() == [20.0, 21.0, 22.0]
    assert b.data.tolist() == [0.0, 1.0, 2.0]
    assert type(c) is ActNums


def test_locked_action_called_by_hand_runs_without_a_lock():
    b = batch()
    with pytest.raises(FpipeError, match=r"batch\.pipeline is only available"):
        b.locked_ok()  # it reads batch.pipeline; the lock is no obstacle
    assert b.locked_skip_odd() is b


def test_model_action_called_by_hand_needs_a_run():
    with pytest.raises(FpipeError, match=r"batch\.pipeline is only available"):
        batch().use_model(1.0)


def test_action_returning_none_by_hand_is_an_error_naming_it():
    with pytest.raises(TypeError, match=r"action 'ActNums\.bad' returned NoneType.*return self"):
        batch().bad()


# -- result checks in a pipeline -----------------------------------------------------------
def test_action_returning_none_fails_with_an_error_naming_it():
    with pytest.raises(ActionError, match=r"`bad\(\)`.*returned NoneType, not a batch") as info:
        (Pipeline().bad() << ds()).run(2)
    err = info.value
    assert isinstance(err.__cause__, TypeError)
    assert "forget `return self`" in str(err)
    assert err.step == "bad()"


def test_action_returning_a_non_batch_fails_with_an_error_naming_it():
    with pytest.raises(ActionError, match=r"`bad_value\(\)`.*returned float, not a batch"):
        (Pipeline().double().bad_value() << ds()).run(2)


def test_failing_action_error_carries_step_position_batch_and_cause():
    p = Pipeline().double().fail() << ds(6)
    with pytest.raises(ActionError, match=r"step 1 `fail\(\)` failed on batch #0") as info:
        p.run(2)
    err = info.value
    assert err.step == "fail()"
    assert err.position == 1
    assert err.batch_position == 0
    assert err.batch_indices.tolist() == [0, 1]
    assert isinstance(err.__cause__, KeyError)
    assert "missing thing" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert (back.step, back.position, back.batch_position) == ("fail()", 1, 0)
    assert back.batch_indices.tolist() == [0, 1]
    assert str(back) == str(err)


def test_failing_action_reports_the_later_batch_it_failed_on():
    def fail_late(b):
        if int(b.indices[0]) >= 4:
            raise ValueError("late failure")
        return b

    with pytest.raises(ActionError, match=r"failed on batch #2 .*4, 5.*late failure") as info:
        (Pipeline().apply(fail_late) << ds(6)).run(2)
    assert info.value.batch_position == 2
    assert info.value.batch_indices.tolist() == [4, 5]


def test_failing_action_under_prefetch_reaches_the_caller():
    with pytest.raises(ActionError, match=r"`fail\(\)` failed on batch #0") as info:
        (Pipeline().fail() << ds(8)).run(2, prefetch=2)
    assert isinstance(info.value.__cause__, KeyError)


# -- locks ----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_lock_is_held_during_a_locked_action():
    res = (Pipeline().init_variable("held", []).locked_ok() << ds()).run(2)
    assert res.get_variable("held") == [True, True]


@pytest.mark.timeout(60)
def test_lock_is_released_after_a_locked_action_raises():
    p = Pipeline().init_variable("held", []).init_variable("held_after_fail", None)
    res = (p.recover_then_lock() << ds()).run(2)
    assert res.get_variable("held_after_fail") is False
    assert res.get_variable("held") == [True, True]


@pytest.mark.timeout(60)
def test_locked_action_may_call_an_action_with_the_same_lock():
    res = (Pipeline().init_variable("held", []).locked_calls_locked() << ds()).run(2)
    assert res.get_variable("held") == [True, True]
    assert res.get_variable("held") is not None


@pytest.mark.timeout(60)
def test_lock_is_released_when_a_run_fails_and_a_later_run_takes_it():
    p = Pipeline().init_variable("held", []).locked_fail_on_first().locked_ok() << ds()
    with pytest.raises(ActionError, match="first batch fails"):
        p.run(2)
    ok = (Pipeline().init_variable("held", []).locked_skip_odd().locked_ok() << ds(6)).run(1)
    assert ok.get_variable("held") == [True] * 3


@pytest.mark.timeout(60)
def test_lock_is_released_after_skip_batch_with_prefetch():
    p = Pipeline().init_variable("held", []).locked_skip_odd().locked_ok() << ds(8)
    got = [b.indices.tolist() for b in p.gen_batch(1, prefetch=3)]
    assert got == [[0], [2], [4], [6]]


@pytest.mark.timeout(60)
def test_locked_action_runs_one_batch_at_a_time_under_prefetch():
    ACTIVE.update(now=0, max=0)
    p = Pipeline().double().locked_count().double() << ds(16)
    assert np.concatenate(out(p)).tolist() == [4.0 * i for i in range(16)]
    got = [b.data.tolist() for b in p.gen_batch(2, prefetch=4)]
    assert np.concatenate(got).tolist() == [4.0 * i for i in range(16)]
    assert ACTIVE["max"] == 1
    assert ACTIVE["now"] == 0


# -- plain functions as steps -----------------------------------------------------------------
def test_apply_runs_a_plain_function_with_args_and_kwargs():
    def affine(b, k, shift=0.0):
        return b.replace(data=b.data * k + shift)

    p = Pipeline().apply(affine, 2.0, shift=1.0).double() << ds()
    assert out(p) == [[2.0, 6.0], [10.0, 14.0]]


def test_apply_with_an_action_function_uses_its_lock():
    @action(use_lock="ta_apply_lock")
    def check_lock(b):
        b.pipeline.update_variable("held", b.pipeline.run.lock_is_held("ta_apply_lock"), "a")
        return b

    res = (Pipeline().init_variable("held", []).apply(check_lock) << ds()).run(2)
    assert res.get_variable("held") == [True, True]


def test_apply_function_returning_a_non_batch_is_an_error_naming_it():
    def summarise(b):
        return b.data.sum()

    with pytest.raises(ActionError, match=r"`apply\(summarise\)`.*not a batch"):
        (Pipeline().apply(summarise) << ds()).run(2)


def test_apply_of_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="apply\\(\\) takes a function batch -> batch, not int"):
        Pipeline().apply(3)


def test_apply_leaves_the_pipeline_unchanged():
    p = Pipeline().double()
    q = p.apply(lambda b: b)
    assert len(p.steps) == 1
    assert len(q.steps) == 2


@pytest.mark.timeout(60)
def test_failing_action_under_prefetch_names_the_right_batch():
    def fail_at_six(b):
        if 6 in b.indices.tolist():
            raise LookupError("six is unlucky")
        return b

    p = Pipeline().double().apply(fail_at_six) << ds(10)
    with pytest.raises(ActionError, match=r"`apply\(fail_at_six\)` failed on batch #3") as info:
        p.run(2, prefetch=3)
    assert info.value.batch_position == 3
    assert info.value.batch_indices.tolist() == [6, 7]
    assert isinstance(info.value.__cause__, LookupError)


# -- effects: declared or inferred, known before anything runs ---------------------------------
def _plain(b):
    return b


def _reaches(b):
    b.pipeline.update_variable("log", 1, mode="a")
    return b


def test_declared_effects_win_over_inference():
    assert action(effects=True)(_plain).effectful
    assert not action(effects=False)(_reaches).effectful
    assert not action(_plain).effectful and action(_reaches).effectful  # inferred
    assert ActNums.declared_effectful.effectful and ActNums.declared_effectful.effects is True
    assert not ActNums.declared_pure.effectful and ActNums.declared_pure.effects is False


def test_model_or_lock_makes_an_action_effectful_whatever_its_code():
    assert action(model="ta_model")(lambda b, m: b).effectful
    assert action(use_lock="l")(_plain).effectful
    assert action(effects=True, use_lock="l")(_plain).effectful
    assert ActNums.lock_only.effectful and ActNums.use_model.effectful


@pytest.mark.parametrize(
    "options",
    [{"model": "ta_model"}, {"use_lock": "ta_lock"}, {"model": "ta_model", "use_lock": "l"}],
)
def test_effects_false_with_a_model_or_a_lock_is_a_contradiction(options):
    with pytest.raises(
        TypeError, match=r"effects=False\) on '_plain' contradicts model=/use_lock="
    ):
        action(effects=False, **options)(_plain)


@pytest.mark.parametrize(
    ("name", "effectful"),
    [
        ("double", False),
        ("add", False),
        ("reads_variable", True),  # self.pipeline...
        ("finds_model", True),  # self.get_model_by_name(...)
        ("nested_reach", True),  # inside a nested function
        ("nested_pure", False),
        ("locked_ok", True),
        ("recover_then_lock", True),
        ("parallel_post_reaches", True),  # its post method, named by a string
        ("parallel_init_reaches", True),  # its init method, named by a string
        ("parallel_item_reaches", True),  # the per-item method it wraps
        ("parallel_pure", False),  # wrapper, method and post: none reaches the environment
        ("sneaky", False),  # the helper it calls is out of sight
    ],
)
def test_effects_are_inferred_from_the_code(name, effectful):
    definition = ActNums.__dict__[name]
    assert definition.effects is None
    assert definition.effectful is effectful
    prog = compile_program(getattr(Pipeline(), name)().steps, ActNums)
    assert prog.stages[0][0].effectful is effectful
    assert prog.pure_prefix == (0 if effectful else 1)


def test_mentions_env_reads_nested_code_wrapped_functions_and_partials():
    import functools

    def outer(b):
        return (lambda: b.pipeline)()

    def uses_model(b):
        return b.get_model_by_name("m")

    @functools.wraps(_reaches)
    def wrapper(b):
        return b

    assert mentions_env(outer) and mentions_env(uses_model) and mentions_env(wrapper)
    assert mentions_env(functools.partial(_reaches, k=1)) is True
    assert not mentions_env(_plain) and not mentions_env(functools.partial(_plain))


def test_a_pickled_action_keeps_its_declared_effects():
    back = pickle.loads(pickle.dumps(action(effects=True)(_plain)))
    assert back.effects is True and back.effectful
    back = pickle.loads(pickle.dumps(action(effects=False)(_reaches)))
    assert back.effects is False and not back.effectful


def test_an_inferred_effectful_action_runs_on_the_driver_with_prefetch():
    p = Pipeline().init_variable("k", 10.0).double().reads_variable() << ds(6)
    assert [b.data.tolist() for b in p.gen_batch(2, prefetch=3)] == out(p)
    assert out(p) == [[10.0, 12.0], [14.0, 16.0], [18.0, 20.0]]


@pytest.mark.parametrize("prefetch", [0, 8])
@pytest.mark.timeout(60)
def test_an_action_reaching_variables_through_a_hidden_helper_is_stopped_once(prefetch):
    SNEAKY_CALLS.clear()
    p = Pipeline().init_variable("hits", []).double().sneaky().double() << ds(16)
    with p.iterate(2, prefetch=prefetch) as it:
        with pytest.raises(ActionError, match=r"^step 2 `sneaky\(\)` failed on batch #0") as info:
            list(it)
        assert it.get_variable("hits") == []  # it reached nothing
    cause = info.value.__cause__
    assert isinstance(cause, UndeclaredEffectError)
    msg = str(cause)
    assert "`sneaky()` is pure" in msg and "batch.pipeline.update_variable" in msg
    assert "declare it with `@action(effects=True)` above `def sneaky(self, ...)`" in msg
    assert SNEAKY_CALLS[0] == 1  # the failing batch ran it once, never again on the driver
    assert set(SNEAKY_CALLS.values()) == {1}  # batches prepared ahead: once each too
    assert prefetch or set(SNEAKY_CALLS) == {0}  # sequential: it stopped at the first batch


def test_an_effects_false_action_that_reaches_variables_is_stopped():
    @action(effects=False)
    def liar(b):
        return _reaches(b)

    with pytest.raises(ActionError, match=r"apply\(liar\)") as info:
        (Pipeline().init_variable("log", []).apply(liar) << ds()).run(2)
    assert isinstance(info.value.__cause__, UndeclaredEffectError)
    assert "action(effects=True)(fn)" in str(info.value.__cause__)
