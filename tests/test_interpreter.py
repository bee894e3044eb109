"""The interpreter: compiling steps into stages and running one batch through them."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from fpipe import (
    ActionError,
    Batch,
    Dataset,
    Pipeline,
    PipelineDefinitionError,
    SkipBatch,
    UndeclaredEffectError,
    action,
)
from fpipe.env import Environment
from fpipe.interpreter import (
    CompiledStep,
    Program,
    compile_program,
    compile_step,
    compile_steps,
    run_compiled,
    step_error,
)
from fpipe.runstate import BatchContext, PureView, RunState
from fpipe.steps import ActionStep, ApplyStep, InitVariable, Maybe, UpdateVariable

LOG: list[tuple[str, object]] = []


class InterpNums(Batch):
    @action
    def ip_inc(self, k=1):
        return self.replace(data=self.data + k)

    @action
    def ip_times(self, k):
        return self.replace(data=self.data * k)

    @action
    def ip_log(self, tag):
        LOG.append((tag, self.data.tolist()))
        return self

    @action
    def ip_where(self):
        LOG.append(("where", self.pipeline.path))
        return self

    @action(effects=True)
    def ip_declared(self):
        LOG.append(("declared", self.data.tolist()))
        return self.replace(data=self.data + 1000)

    @action(use_lock="ip_lock")
    def ip_locked(self):
        return self.replace(data=self.data + 100)

    @action
    def ip_fail(self):
        raise ValueError("ip_fail always fails")

    @action
    def ip_none(self):
        return None

    @action
    def ip_write(self):
        self.data[0] = 7
        return self

    @action
    def ip_skip(self):
        raise SkipBatch

    @action
    def ip_interrupt(self):
        raise KeyboardInterrupt

    @action
    def ip_exit(self):
        raise SystemExit(3)

    @action
    def ip_set(self, name):
        self.pipeline.set_variable(name, self.data.tolist())
        return self

    @action
    def ip_fresh(self):
        """Return a brand-new batch, without the run's context."""
        return InterpNums(self.indices, preloaded=self.data * 10)

    @action
    def ip_other_class(self):
        return InterpOther(self.indices, preloaded=self.data)

    @action
    def ip_add_joined(self, other):
        return self.replace(data=self.data + other.data)

    @action
    def ip_add_two_joined(self, first, second):
        return self.replace(data=self.data + first.data + second.data)

    @action
    def ip_sneaky(self):
        """Reaches the environment through a helper fpipe cannot see: classified pure."""
        LOG.append(("sneaky", self.data.tolist()))
        return _ip_sneak(self)


def _ip_sneak(b):
    b.pipeline.set_variable("snuck", 1)  # a pure step: batch.pipeline is a PureView
    return b


class InterpOther(Batch):
    pass


@pytest.fixture(autouse=True)
def _clear_log():
    LOG.clear()
    yield
    LOG.clear()


def program(pipeline):
    return compile_program(pipeline.steps, InterpNums)


def context(iteration=0, epoch=0, env=None, seed=1):
    run = RunState(seed=seed, env=env or Environment(), batch_class=InterpNums, config={})
    return BatchContext(run, epoch, iteration)


def batch(values, ctx=None, ids=None):
    values = np.asarray(values)
    ids = np.arange(len(values)) if ids is None else ids
    b = InterpNums(ids, preloaded=values)
    return b._with_ctx(ctx) if ctx is not None else b


def run(pipeline, values, iteration=0, **kwargs):
    ctx = context(iteration)
    return run_compiled(program(pipeline).stages[0], batch(values, ctx), ctx, **kwargs)


# -- compiling -------------------------------------------------------------------------


def test_pipeline_without_rebatch_is_one_stage():
    prog = program(Pipeline().ip_inc().ip_times(2).ip_log("a"))
    assert isinstance(prog, Program)
    assert len(prog.stages) == 1
    assert [s.label for s in prog.stages[0]] == ["ip_inc()", "ip_times(2)", "ip_log('a')"]
    assert [s.path for s in prog.stages[0]] == [(0,), (1,), (2,)]
    assert prog.rebatches == ()


def test_empty_pipeline_is_one_empty_stage():
    prog = program(Pipeline())
    assert prog.stages == ((),)
    assert prog.start_steps == ()
    assert prog.pure_prefix == 0


def test_rebatch_splits_the_program_into_stages():
    p = Pipeline().ip_inc().rebatch(3).ip_inc().ip_locked().rebatch(2).ip_times(2)
    prog = program(p)
    assert len(prog.stages) == 3
    assert [[s.label for s in stage] for stage in prog.stages] == [
        ["ip_inc()"],
        ["ip_inc()", "ip_locked()"],
        ["ip_times(2)"],
    ]
    assert [r.batch_size for r in prog.rebatches] == [3, 2]


def test_steps_keep_their_position_in_the_whole_pipeline():
    p = Pipeline().ip_inc().rebatch(3).ip_inc().ip_locked().rebatch(2).ip_times(2)
    prog = program(p)
    assert [[s.path for s in stage] for stage in prog.stages] == [[(0,)], [(2,), (3,)], [(5,)]]
    assert repr(prog.stages[1][1]) == "<effectful step 3 ip_locked()>"
    assert repr(prog.stages[2][0]) == "<pure step 5 ip_times(2)>"


def test_rebatch_at_either_end_gives_empty_stages():
    prog = program(Pipeline().rebatch(2).ip_inc().rebatch(4))
    assert [len(stage) for stage in prog.stages] == [0, 1, 0]


def test_per_run_steps_are_start_steps_not_stage_steps():
    p = Pipeline().init_variable("a", 1).ip_inc().rebatch(2).init_variable("b", [])
    prog = program(p)
    assert [s.label for s in prog.start_steps] == [
        "init_variable('a', 1)",
        "init_variable('b', [])",
    ]
    assert [[s.path for s in stage] for stage in prog.stages] == [[(1,)], []]


def test_start_env_applies_the_start_steps():
    prog = program(Pipeline().init_variable("a", 1).init_variable("b", [2]))
    env = prog.start_env()
    assert dict(env.variables) == {"a": 1, "b": [2]}
    assert env.variables["b"] is not prog.start_env().variables["b"]


def test_start_env_carries_variables_from_a_previous_run():
    prog = program(
        Pipeline().init_variable("kept", 0).init_variable("fresh", 0, init_on_each_run=True)
    )
    previous = Environment().set_variable("kept", 5).set_variable("fresh", 6)
    assert dict(prog.start_env(previous=previous).variables) == {"kept": 5, "fresh": 0}
    assert dict(prog.start_env().variables) == {"kept": 0, "fresh": 0}


def test_start_steps_inside_maybe_are_found():
    prog = program(Pipeline().ip_inc() + (Pipeline().init_variable("m", 3).ip_inc() @ 0.5))
    assert [s.label for s in prog.start_steps] == ["init_variable('m', 3)"]
    assert dict(prog.start_env().variables) == {"m": 3}


def test_pure_prefix_stops_at_the_first_effectful_step():
    assert program(Pipeline().ip_inc().ip_times(2)).pure_prefix == 2
    assert program(Pipeline().ip_inc().ip_locked().ip_inc()).pure_prefix == 1
    assert program(Pipeline().update_variable("v", 1).ip_inc()).pure_prefix == 0
    assert program(Pipeline().ip_inc() + (Pipeline().ip_locked() @ 0.5)).pure_prefix == 1
    assert program(Pipeline().ip_inc().ip_set("v").ip_inc()).pure_prefix == 1  # code: pipeline
    assert program(Pipeline().ip_inc().ip_declared()).pure_prefix == 1  # effects=True
    assert program(Pipeline().ip_inc() + (Pipeline().ip_inc() @ 0.5)).pure_prefix == 2


def test_compiled_steps_know_whether_they_are_effectful():
    stage = program(
        Pipeline().ip_inc().ip_locked().update_variable("v", 1).ip_where().ip_declared()
    ).stages[0]
    assert [s.effectful for s in stage] == [False, True, True, True, True]
    assert [s.label for s in stage][:2] == ["ip_inc()", "ip_locked()"]


def test_compile_step_classifies_each_kind_of_step_before_it_runs():
    def plain(b):
        return b

    def reads(b):
        return b.replace(data=b.data + b.pipeline.get_variable("k"))

    cases = [
        (ActionStep("ip_inc", (2,)), False),
        (ActionStep("ip_locked"), True),  # use_lock=
        (ActionStep("ip_set", ("v",)), True),  # its code mentions `pipeline`
        (ActionStep("ip_declared"), True),  # effects=True
        (ActionStep("ip_sneaky"), False),  # the helper it calls is out of sight
        (ApplyStep(plain), False),
        (ApplyStep(reads), True),  # a plain function whose code mentions `pipeline`
        (ApplyStep(action(effects=True)(plain)), True),
        (ApplyStep(action(effects=False)(reads)), False),  # declared pure wins over the code
        (ApplyStep(InterpNums.ip_locked), True),
        (UpdateVariable("v", 1), True),
        (Maybe((ActionStep("ip_inc"),), 0.5), False),
        (Maybe((ActionStep("ip_inc"), ActionStep("ip_locked")), 0.5), True),
    ]
    for step, effectful in cases:
        compiled = compile_step(step, InterpNums, (3,))
        assert isinstance(compiled, CompiledStep)
        assert (step.label, compiled.effectful) == (step.label, effectful)
        assert compiled.path == (3,) and compiled.label == step.label


def test_compile_step_makes_a_function_from_batch_to_batch():
    b = batch([1, 2])
    assert compile_step(ActionStep("ip_inc", (5,)), InterpNums, (0,)).fn(b).data.tolist() == [6, 7]
    kw = compile_step(ActionStep("ip_inc", (), {"k": 2}), InterpNums, (0,))
    assert kw.fn(b).data.tolist() == [3, 4]
    times = compile_step(ApplyStep(InterpNums.ip_times, (3,)), InterpNums, (0,))
    assert times.fn(b).data.tolist() == [3, 6]
    assert b.data.tolist() == [1, 2]


def test_compile_step_rejects_a_declaration():
    with pytest.raises(TypeError, match="InitVariable is not a per-batch step"):
        compile_step(InitVariable("v", 0), InterpNums, (0,))


def test_compiled_step_repr_names_its_kind_path_and_label():
    step = CompiledStep(lambda b: b, (2, 1), "ip_inc()", False)
    assert repr(step) == "<pure step 2.1 ip_inc()>"
    assert repr(CompiledStep(lambda b: b, (0,), "ip_locked()", True)) == (
        "<effectful step 0 ip_locked()>"
    )


def test_compile_steps_uses_the_base_path():
    steps = compile_steps(Pipeline().ip_inc().ip_times(3).steps, InterpNums, base=(4,))
    assert [s.path for s in steps] == [(4, 0), (4, 1)]


def test_rebatch_inside_maybe_is_rejected():
    inner = Pipeline().ip_inc().rebatch(2) @ 0.5
    msg = "rebatch cannot be used inside `pipeline @ prob`; put it in the outer pipeline"
    with pytest.raises(PipelineDefinitionError, match=re.escape(msg)):
        program(inner)


def test_compile_steps_rejects_a_rebatch():
    with pytest.raises(PipelineDefinitionError, match="rebatch cannot be used inside"):
        compile_steps(Pipeline().rebatch(2).steps, InterpNums)


def test_join_as_the_last_step_is_rejected():
    with pytest.raises(PipelineDefinitionError, match=r"join\(\.\.\.\) is the last step"):
        program(Pipeline().ip_inc().join(Dataset(3)))


def test_join_before_a_rebatch_is_rejected():
    with pytest.raises(PipelineDefinitionError, match=r"join\(\.\.\.\) is the last step"):
        program(Pipeline().join(Dataset(3)).rebatch(2).ip_add_joined())


def test_join_must_be_followed_by_an_action():
    msg = "join(...) must be followed by an action that takes the joined batches, not by"
    with pytest.raises(PipelineDefinitionError, match=re.escape(msg)):
        program(Pipeline().join(Dataset(3)).update_variable("v", 1))


def test_join_passes_the_source_batch_to_the_next_action():
    other = Dataset(4, InterpOther, preloaded=np.array([10, 20, 30, 40]))
    prog = program(Pipeline().join(other).ip_add_joined())
    assert len(prog.stages[0]) == 1
    assert prog.stages[0][0].label == "ip_add_joined()"
    assert prog.pure_prefix == 1  # a dataset source needs no run environment
    ctx = context()
    out = run_compiled(prog.stages[0], batch([1, 2], ctx, ids=np.array([3, 1])), ctx)
    assert out.data.tolist() == [41, 22]


def test_consecutive_joins_pass_all_sources():
    first = Dataset(3, InterpOther, preloaded=np.array([10, 20, 30]))
    second = Dataset(3, InterpOther, preloaded=np.array([100, 200, 300]))
    prog = program(Pipeline().join(first).join(second).ip_add_two_joined())
    ctx = context()
    out = run_compiled(prog.stages[0], batch([1, 2, 3], ctx), ctx)
    assert out.data.tolist() == [111, 222, 333]


# -- running ---------------------------------------------------------------------------


def test_steps_run_in_order():
    p = Pipeline().ip_log("first").ip_inc().ip_log("second").ip_times(3).ip_log("third")
    out = run(p, [1, 2])
    assert out.data.tolist() == [6, 9]
    assert LOG == [("first", [1, 2]), ("second", [2, 3]), ("third", [6, 9])]


def test_output_batch_carries_the_context():
    # FPIPE BUG (reported): run_compiled leaves ctx.step set to the last step it ran, so
    # the output batch's `.pipeline` is a PureView when that step was pure (and the full
    # context when it was effectful, or when a prefetching run had nothing left to run on
    # the driver). Fix: reset `ctx.step = None` in run_compiled's `finally`.
    ctx = context()
    out = run_compiled(program(Pipeline().ip_inc()).stages[0], batch([1], ctx), ctx)
    assert out._ctx is ctx
    assert out.pipeline is ctx


def test_an_output_batch_sees_the_run_alike_whatever_the_prefetch():
    # FPIPE BUG (reported), see test_output_batch_carries_the_context: with prefetch=0 the
    # output batch's `.pipeline` is a PureView (the last step ran on the driver and stays
    # current), with prefetch=2 it is the run's context.
    p = Dataset(4, InterpNums, preloaded=np.arange(4)).p.init_variable("n", 5).ip_inc()
    for prefetch in (0, 2):
        out = next(iter(p.gen_batch(2, prefetch=prefetch)))
        assert out.pipeline.get_variable("n") == 5, prefetch


def test_a_new_batch_from_an_action_gets_the_context():
    p = Pipeline().ip_fresh().ip_set("after")
    ctx = context(env=Environment().set_variable("after", None))
    out = run_compiled(program(p).stages[0], batch([1, 2], ctx), ctx)
    assert out.data.tolist() == [10, 20]
    assert out._ctx is ctx
    assert ctx.get_variable("after") == [10, 20]


def test_an_action_may_return_another_batch_class():
    out = run(Pipeline().ip_other_class(), [4, 5])
    assert type(out) is InterpOther
    assert out.data.tolist() == [4, 5]


def test_each_step_sees_its_own_path():
    p = Pipeline().ip_where().ip_inc().ip_where() + (Pipeline().ip_where() @ 1.0)
    run(p, [1])
    assert LOG == [("where", (0,)), ("where", (2,)), ("where", (3, 0))]


def test_run_starts_at_the_given_step():
    stage = program(Pipeline().ip_log("skipped").ip_inc().ip_times(2)).stages[0]
    ctx = context()
    out = run_compiled(stage, batch([1, 2], ctx), ctx, start=1)
    assert out.data.tolist() == [4, 6]
    assert LOG == []


def test_run_stops_before_the_given_step():
    stage = program(Pipeline().ip_inc().ip_times(2).ip_log("stopped")).stages[0]
    ctx = context()
    out = run_compiled(stage, batch([1, 2], ctx), ctx, stop=2)
    assert out.data.tolist() == [4, 6]
    assert LOG == []
    assert run_compiled(stage, batch([1, 2], ctx), ctx, 1, 1).data.tolist() == [1, 2]  # none


def test_a_worker_runs_the_pure_prefix_and_the_driver_the_rest():
    prog = program(Pipeline().ip_inc().ip_locked().ip_inc())
    stage, prefix = prog.stages[0], prog.pure_prefix
    assert prefix == 1
    worker = context()
    out = run_compiled(stage, batch([1, 2], worker), worker, 0, prefix)
    assert out.data.tolist() == [2, 3]
    assert not worker.run.lock_is_held("ip_lock") and "ip_lock" not in worker.run.env.locks
    driver = context()
    final = run_compiled(stage, out._with_ctx(driver), driver, start=prefix)
    assert final.data.tolist() == [103, 104]
    assert "ip_lock" in driver.run.env.locks  # the locked step ran on the driver


def test_a_pure_stage_runs_to_the_end_on_a_worker():
    prog = program(Pipeline().ip_inc().ip_times(5))
    assert prog.pure_prefix == 2
    ctx = context()
    out = run_compiled(prog.stages[0], batch([1], ctx), ctx, 0, prog.pure_prefix)
    assert out.data.tolist() == [10]


def test_a_step_whose_code_touches_variables_is_effectful_and_runs_once_on_the_driver():
    prog = program(Pipeline().ip_inc().ip_set("v").ip_log("after").ip_inc())
    stage = prog.stages[0]
    assert [s.effectful for s in stage] == [False, True, False, False]
    worker = context()
    out = run_compiled(stage, batch([1], worker), worker, 0, prog.pure_prefix)
    assert out.data.tolist() == [2] and LOG == []  # nothing after the pure prefix ran
    driver = context(env=Environment().set_variable("v", None))
    final = run_compiled(stage, out._with_ctx(driver), driver, start=prog.pure_prefix)
    assert final.data.tolist() == [3]
    assert driver.get_variable("v") == [2]
    assert LOG == [("after", [2])]


def test_a_pure_step_that_reaches_the_environment_is_stopped_with_a_named_error():
    prog = program(Pipeline().ip_inc().ip_sneaky().ip_log("never"))
    assert prog.pure_prefix == 3  # ip_sneaky looks pure
    ctx = context(env=Environment().set_variable("snuck", 0))
    with pytest.raises(ActionError, match=r"^step 1 `ip_sneaky\(\)` failed") as info:
        run_compiled(prog.stages[0], batch([1], ctx), ctx)
    cause = info.value.__cause__
    assert isinstance(cause, UndeclaredEffectError)
    assert "batch.pipeline.set_variable" in str(cause)
    assert "@action(effects=True)" in str(cause) and "def ip_sneaky(self" in str(cause)
    assert ctx.get_variable("snuck") == 0  # nothing reached the environment
    assert LOG == [("sneaky", [2])]  # the step ran once, nothing after it


def test_batch_pipeline_is_a_pure_view_in_a_pure_step_and_the_context_in_an_effectful_one():
    seen = []

    def peek(b):
        seen.append(getattr(b, "pipe" + "line"))  # batch.pipeline, out of inference's sight
        return b

    effectful_peek = action(effects=True)(peek)
    stage = compile_steps((ApplyStep(peek), ApplyStep(effectful_peek)), InterpNums)
    assert [s.effectful for s in stage] == [False, True]
    ctx = context()
    run_compiled(stage, batch([1], ctx), ctx)
    assert isinstance(seen[0], PureView) and seen[0].seed == ctx.run.seed
    assert seen[1] is ctx


def test_skip_batch_passes_through_unwrapped():
    with pytest.raises(SkipBatch):
        run(Pipeline().ip_inc().ip_skip().ip_log("never"), [1])
    assert LOG == []


def test_maybe_with_zero_probability_skips_its_steps():
    out = run(Pipeline().ip_inc() + (Pipeline().ip_times(10) @ 0.0), [1])
    assert out.data.tolist() == [2]


def test_maybe_with_probability_one_runs_its_steps():
    out = run(Pipeline().ip_inc() + (Pipeline().ip_times(10) @ 1.0), [1])
    assert out.data.tolist() == [20]


def test_maybe_coin_depends_on_the_batch_not_on_the_call():
    stage = program(Pipeline().ip_inc() @ 0.5).stages[0]
    outcomes = []
    for iteration in range(40):
        ctx = context(iteration, seed=3)
        first = run_compiled(stage, batch([0], ctx), ctx).data.tolist()
        again = run_compiled(stage, batch([0], ctx), ctx).data.tolist()
        assert first == again
        outcomes.append(first[0])
    assert set(outcomes) == {0, 1}


# -- errors ----------------------------------------------------------------------------


def test_failing_step_raises_action_error_with_its_name_and_position():
    with pytest.raises(ActionError, match=r"^step 1 `ip_fail\(\)` failed on batch #7") as info:
        run(Pipeline().ip_inc().ip_fail().ip_inc(), [1, 2, 3], iteration=7)
    err = info.value
    assert err.step == "ip_fail()"
    assert err.position == 1
    assert err.batch_position == 7
    assert err.batch_indices.tolist() == [0, 1, 2]
    assert str(err) == (
        "step 1 `ip_fail()` failed on batch #7 (epoch 0, 3 items: 0, 1, 2): "
        "ValueError: ip_fail always fails"
    )


def test_action_error_chains_the_original_exception():
    with pytest.raises(ActionError, match="ip_fail always fails") as info:
        run(Pipeline().ip_fail(), [1])
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert str(cause) == "ip_fail always fails"


def test_action_error_names_the_epoch_and_previews_many_items():
    stage = program(Pipeline().ip_fail()).stages[0]
    ctx = context(iteration=2, epoch=4)
    msg = "failed on batch #2 (epoch 4, 8 items: 0, 1, 2, 3, 4, ...)"
    with pytest.raises(ActionError, match=re.escape(msg)):
        run_compiled(stage, batch(np.arange(8), ctx), ctx)


def test_error_in_a_later_stage_names_its_whole_pipeline_position():
    p = Dataset(6, InterpNums, preloaded=np.arange(6)).p.ip_inc().rebatch(3).ip_fail()
    with pytest.raises(ActionError, match=r"^step 2 `ip_fail\(\)` failed on batch #0") as info:
        p.run(2)
    assert info.value.position == 2
    assert info.value.batch_indices.tolist() == [0, 1, 2]


def test_apply_step_failure_is_named_after_the_function():
    def explode(b, k):
        raise RuntimeError(f"explode {k}")

    with pytest.raises(ActionError, match=r"step 0 `apply\(explode, 5\)` failed") as info:
        run(Pipeline().apply(explode, 5), [1])
    assert info.value.step == "apply(explode, 5)"
    assert isinstance(info.value.__cause__, RuntimeError)


def test_error_inside_maybe_is_wrapped_once():
    p = Pipeline().ip_inc() + (Pipeline().ip_inc().ip_fail() @ 1.0)
    with pytest.raises(ActionError, match=r"^step 1\.1 `ip_fail\(\)` failed") as info:
        run(p, [1])
    err = info.value
    assert err.step == "ip_fail()"
    assert err.position == 1
    assert isinstance(err.__cause__, ValueError)
    assert not isinstance(err.__cause__, ActionError)
    assert str(err).count("failed on batch") == 1


def test_error_inside_nested_maybe_is_wrapped_once():
    inner = Pipeline().ip_fail() @ 1.0
    p = Pipeline().ip_inc() + ((Pipeline().ip_inc() + inner) @ 1.0)
    with pytest.raises(ActionError, match=r"^step 1\.1\.0 `ip_fail\(\)` failed") as info:
        run(p, [1])
    assert type(info.value.__cause__) is ValueError
    assert str(info.value).count("failed on batch") == 1


def test_action_returning_none_is_an_action_error_with_a_hint():
    msg = "action 'ip_none()' returned NoneType, not a batch. Did you forget `return self`"
    with pytest.raises(ActionError, match=re.escape(msg)) as info:
        run(Pipeline().ip_none(), [1])
    assert isinstance(info.value.__cause__, TypeError)


def test_writing_into_a_batch_is_explained():
    with pytest.raises(ActionError, match="batches are immutable") as info:
        run(Pipeline().ip_write(), [1, 2])
    assert "`ip_write()`" in str(info.value)
    assert "read-only" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_keyboard_interrupt_is_not_wrapped():
    with pytest.raises(KeyboardInterrupt):
        run(Pipeline().ip_inc().ip_interrupt(), [1])


def test_system_exit_is_not_wrapped():
    with pytest.raises(SystemExit) as info:
        run(Pipeline().ip_exit(), [1])
    assert info.value.code == 3


def test_keyboard_interrupt_inside_maybe_is_not_wrapped():
    with pytest.raises(KeyboardInterrupt):
        run(Pipeline().ip_inc() + (Pipeline().ip_interrupt() @ 1.0), [1])


def test_locked_failure_releases_the_lock():
    ctx = context()
    stage = program(Pipeline().ip_locked().ip_fail()).stages[0]
    with pytest.raises(ActionError, match="ip_fail always fails"):
        run_compiled(stage, batch([1], ctx), ctx)
    assert not ctx.run.lock_is_held("ip_lock")


def test_action_error_survives_pickling():
    with pytest.raises(ActionError, match="ip_fail") as info:
        run(Pipeline().ip_inc().ip_fail(), [1, 2], iteration=3)
    back = pickle.loads(pickle.dumps(info.value))
    assert str(back) == str(info.value)
    assert (back.step, back.position, back.batch_position) == ("ip_fail()", 1, 3)
    assert back.batch_indices.tolist() == [0, 1]


def test_step_error_without_a_step_says_so():
    ctx = context(iteration=2)
    err = step_error(None, batch([1, 2]), ctx, RuntimeError("lost"))
    assert str(err) == "step ? `?` failed on batch #2 (epoch 0, 2 items: 0, 1): RuntimeError: lost"
    assert (err.step, err.position, err.batch_position) == ("?", -1, 2)


def test_compiling_formats_no_step_label_until_a_message_needs_one():
    shown = []

    class Loud:
        def __repr__(self):
            shown.append(1)
            return "Loud()"

    program = compile_program(Pipeline().ip_times(Loud()).ip_inc(k=Loud()).steps, InterpNums)
    assert shown == []  # formatting every step's arguments was a third of compiling
    assert [s.label for s in program.stages[0]] == ["ip_times(Loud())", "ip_inc(k=Loud())"]
    assert len(shown) == 2
