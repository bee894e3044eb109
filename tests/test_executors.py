"""Executors: threads, processes and Dask give the sequential run's results, bit for bit."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fpipe import (
    ActionError,
    Batch,
    Dataset,
    FpipeError,
    Pipeline,
    PipelineDefinitionError,
    ProcessExecutor,
    ThreadExecutor,
    action,
    executors,
    model,
)
from fpipe.executors import Job, resolve_executor
from fpipe.interpreter import compile_program

N_ITEMS, BATCH = 23, 4
DRIVER_PID = os.getpid()


class ExecNums(Batch):
    components = ("x", "y", "pid", "thread", "dpid", "dthread")

    @action
    def noisy_square(self):
        """Pure: uses only the batch's own random stream."""
        return self.replace(y=self.x**2 + self.random.normal(size=len(self)))

    @action
    def mark_worker(self):
        """Pure: records where it ran."""
        n = len(self)
        name = threading.current_thread().name
        return self.replace(pid=np.full(n, os.getpid()), thread=np.array([name] * n))

    @action(use_lock="exec_lock")
    def record_driver(self):
        """Needs the environment (a lock and a variable): runs on the driver."""
        n = len(self)
        self.pipeline.update_variable("seen", self.indices.tolist(), mode="e")
        self.pipeline.update_variable("total", self.pipeline.get_variable("total") + self.y.sum())
        name = threading.current_thread().name
        return self.replace(dpid=np.full(n, os.getpid()), dthread=np.array([name] * n))


def exec_scale(batch, k):
    """A plain module-level function: pure, picklable."""
    return batch.replace(x=batch.x * k)


def exec_reads_variable(batch):
    """A plain function that reads a variable: its code says so, so it is effectful."""
    k = batch.pipeline.get_variable("k")
    n = len(batch)
    name = threading.current_thread().name
    return batch.replace(x=batch.x + k, dpid=np.full(n, os.getpid()), dthread=np.array([name] * n))


def exec_die_once(batch, marker, index):
    """Kill this worker process the first time batch ``index`` passes."""
    if int(batch.indices[0]) == index and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return batch


def exec_fail_on(batch, index):
    if index in batch.indices:
        raise ValueError(f"cannot take item {index}")
    return batch


FAIL = (
    r"step 5 `apply\(exec_fail_on, 11\)` failed on batch #\d+ \(epoch 0, \d items: .*11.*\): "
    r"ValueError: cannot take item 11"
)


def exec_dataset() -> Dataset:
    x = np.arange(N_ITEMS, dtype=np.float64)
    return Dataset(N_ITEMS, ExecNums, preloaded={"x": x})


def exec_pipeline(*extra: Pipeline) -> Pipeline:
    p = (
        Pipeline()
        .init_variable("seen", [])
        .init_variable("total", 0.0)
        .apply(exec_scale, 3.0)
        .noisy_square()
        .mark_worker()
    )
    for e in extra:
        p = p + e
    return (p.record_driver()) << exec_dataset()


RUN = {"shuffle": True, "n_epochs": 2, "seed": 7}


def collect(pipeline: Pipeline, **kwargs):
    with pipeline.iterate(BATCH, **{**RUN, **kwargs}) as it:
        batches = list(it)
        env = it.env
    return batches, env


def assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.indices, e.indices)
        assert g.x.tobytes() == e.x.tobytes()
        assert g.y.tobytes() == e.y.tobytes()


@pytest.fixture(scope="module")
def sequential():
    return collect(exec_pipeline(), prefetch=0)


def test_resolve_executor_turns_names_and_prefetch_into_executors():
    assert resolve_executor(None, prefetch=0) is None
    assert resolve_executor("sequential", prefetch=3) is None
    threads = resolve_executor("threads", prefetch=3)
    assert isinstance(threads, ThreadExecutor) and threads.window == 3
    procs = resolve_executor("processes", prefetch=0)
    assert isinstance(procs, ProcessExecutor) and procs.workers == 2
    mine = ProcessExecutor(1)
    assert resolve_executor(mine, prefetch=5) is mine


def test_resolve_executor_rejects_unknown_names_and_bad_prefetch():
    with pytest.raises(ValueError, match=r"unknown executor 'gpu'; use one of 'threads'"):
        resolve_executor("gpu")
    with pytest.raises(ValueError, match=r"prefetch must be an int >= 0, got -1"):
        resolve_executor(None, prefetch=-1)
    with pytest.raises(ValueError, match=r"prefetch must be an int >= 0, got True"):
        resolve_executor(None, prefetch=True)
    with pytest.raises(ValueError, match=r"ThreadExecutor needs at least one worker, got 0"):
        ThreadExecutor(0)
    with pytest.raises(ValueError, match=r"ProcessExecutor needs at least one worker, got 0"):
        ProcessExecutor(0)


def test_sequential_run_does_everything_on_the_driver_thread(sequential):
    batches, env = sequential
    assert len(batches) == 2 * -(-N_ITEMS // BATCH)
    main = threading.main_thread().name
    for b in batches:
        assert set(b.pid.tolist()) == {DRIVER_PID} and set(b.thread.tolist()) == {main}
    seen = env.variables["seen"]
    assert sorted(seen) == sorted(list(range(N_ITEMS)) * 2)


@pytest.mark.parametrize(
    "executor, prefetch",
    [(None, 2), ("threads", 3), (ThreadExecutor(1), 0), (ThreadExecutor(4), 0)],
    ids=["default-prefetch2", "threads-prefetch3", "ThreadExecutor1", "ThreadExecutor4"],
)
@pytest.mark.timeout(60)
def test_threads_give_the_sequential_results_and_run_the_pure_prefix_on_worker_threads(
    sequential, executor, prefetch
):
    expected, env0 = sequential
    got, env = collect(exec_pipeline(), prefetch=prefetch, executor=executor)
    assert_same_batches(got, expected)
    assert env.variables["seen"] == env0.variables["seen"]  # appended in batch order
    assert env.variables["total"] == env0.variables["total"]
    main = threading.main_thread().name
    for b in got:
        (thread,) = set(b.thread.tolist())
        assert thread.startswith("fpipe-prefetch")  # the pure prefix ran on a worker thread
        assert set(b.dthread.tolist()) == {main}  # the locked, variable-writing step did not


@pytest.mark.timeout(60)
def test_run_with_processes_gives_the_sequential_results_and_pure_steps_run_in_workers(
    sequential,
):
    expected, env0 = sequential
    got, env = collect(exec_pipeline(), executor=ProcessExecutor(2))
    assert_same_batches(got, expected)
    assert env.variables["seen"] == env0.variables["seen"]
    assert env.variables["total"] == env0.variables["total"]
    worker_pids = {p for b in got for p in b.pid.tolist()}
    assert DRIVER_PID not in worker_pids and 1 <= len(worker_pids) <= 2
    assert {p for b in got for p in b.dpid.tolist()} == {DRIVER_PID}


@pytest.mark.timeout(60)
def test_run_and_gen_batch_take_an_executor_and_end_with_the_sequential_variables(sequential):
    expected, env0 = sequential
    p = exec_pipeline()
    done = p.run(BATCH, executor=ProcessExecutor(2), **RUN)
    assert done.get_variable("seen") == env0.variables["seen"]
    assert done.get_variable("total") == env0.variables["total"]
    got = list(p.gen_batch(BATCH, prefetch=2, **RUN))
    assert_same_batches(got, expected)


@pytest.mark.timeout(60)
def test_a_plain_function_that_reads_a_variable_runs_on_the_driver_and_the_prefix_on_workers():
    # exec_reads_variable mentions `pipeline`: it is effectful before anything runs, so the
    # workers stop before it and the driver runs it (and the rest), once per batch.
    p = (
        Pipeline()
        .init_variable("k", 100.0)
        .init_variable("seen", [])
        .init_variable("total", 0.0)
        .noisy_square()
        .mark_worker()
        .apply(exec_reads_variable)
        .record_driver()
    ) << exec_dataset()
    prog = compile_program(p.steps, ExecNums)
    assert [s.effectful for s in prog.stages[0]] == [False, False, True, True]
    assert prog.pure_prefix == 2
    job = Job(p.steps, ExecNums, p.dataset, 0)
    assert job.for_workers().steps == p.steps[:5]  # up to mark_worker
    expected, env0 = collect(p)
    for executor in ("threads", ProcessExecutor(1)):
        got, env = collect(p, prefetch=2, executor=executor)
        assert_same_batches(got, expected)
        assert env.variables["seen"] == env0.variables["seen"]
        for b in got:
            assert b.x.tolist() == (b.indices + 100.0).tolist()
            assert set(b.dpid.tolist()) == {DRIVER_PID}
            assert set(b.dthread.tolist()) == {threading.main_thread().name}
            if executor == "threads":
                assert set(b.thread.tolist()) != {threading.main_thread().name}
            else:
                assert DRIVER_PID not in set(b.pid.tolist())


@pytest.mark.timeout(60)
def test_processes_only_receive_the_pure_prefix_so_driver_steps_may_hold_lambdas(sequential):
    expected, _ = sequential
    p = exec_pipeline(
        Pipeline().init_variable("sizes", []).update_variable("sizes", lambda b: len(b), mode="a")
    )
    p = p.rebatch(6).apply(lambda b: b.replace(x=b.x + 1))
    got, env = collect(p, executor=ProcessExecutor(1))
    again, env0 = collect(p)
    assert env.variables["sizes"] == env0.variables["sizes"] == [len(b) for b in expected]
    assert [b.indices.tolist() for b in got] == [b.indices.tolist() for b in again]
    assert all(g.x.tobytes() == a.x.tobytes() for g, a in zip(got, again, strict=True))
    assert {p for b in got for p in b.pid.tolist()} - {DRIVER_PID}


def test_a_lambda_in_a_pure_step_cannot_be_sent_to_processes():
    p = exec_pipeline(Pipeline().apply(lambda b: b))
    with pytest.raises(
        PipelineDefinitionError,
        match=r"step 5 `apply\(<lambda>\)` cannot be sent to worker processes "
        r"\((PicklingError|AttributeError): Can't pickle .*<lambda>.*use module-level functions and batch classes \(no lambdas or local classes\)",
    ):
        collect(p, executor=ProcessExecutor(1))


def test_a_local_class_in_a_pure_step_or_as_the_batch_class_cannot_be_sent_to_processes():
    class Factor:
        def __rmul__(self, other):
            return other

    p = exec_pipeline(Pipeline().apply(exec_scale, Factor()))
    with pytest.raises(
        PipelineDefinitionError,
        match=r"step 5 `apply\(exec_scale, <test_executors\..*\)` cannot be sent to worker "
        r"processes \((PicklingError|AttributeError): Can't pickle local object .*Factor'",
    ):
        collect(p, executor=ProcessExecutor(1))

    class ExecLocalBatch(Batch):
        components = ("x",)

    ds = Dataset(4, ExecLocalBatch, preloaded={"x": np.arange(4.0)})
    with pytest.raises(
        PipelineDefinitionError,
        match=r"the batch class .*ExecLocalBatch cannot be sent to worker processes",
    ):
        list(ds.p.apply(exec_scale, 2.0).iterate(2, executor=ProcessExecutor(1)))


def dask_worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


@pytest.mark.dask
@pytest.mark.timeout(120)
def test_a_dask_client_gives_the_sequential_results_and_runs_the_pure_prefix_on_its_workers(
    sequential, dask_client
):
    from fpipe import DaskExecutor

    expected, env0 = sequential
    workers = dask_worker_pids(dask_client)
    assert len(workers) == 2 and DRIVER_PID not in workers
    for executor in (dask_client, DaskExecutor(dask_client, window=3)):
        got, env = collect(exec_pipeline(), executor=executor)
        assert_same_batches(got, expected)
        assert env.variables["seen"] == env0.variables["seen"]
        assert env.variables["total"] == env0.variables["total"]
        assert {p for b in got for p in b.pid.tolist()} <= workers
        assert {p for b in got for p in b.dpid.tolist()} == {DRIVER_PID}
    done = exec_pipeline().run(BATCH, executor=dask_client, **RUN)
    assert done.get_variable("seen") == env0.variables["seen"]
    with pytest.raises(ActionError, match=FAIL) as info:
        collect(exec_pipeline(Pipeline().apply(exec_fail_on, 11)), executor=dask_client)
    assert type(info.value.__cause__) is ValueError


@pytest.mark.dask
@pytest.mark.timeout(120)
def test_a_dask_worker_killed_mid_run_is_survived_with_every_batch_once(
    sequential, dask_client, tmp_path
):
    expected, env0 = sequential
    marker = tmp_path / "died"
    victim = int(expected[3].indices[0])  # the 4th batch kills its worker the first time
    p = exec_pipeline(Pipeline().apply(exec_die_once, str(marker), victim))
    before = dask_worker_pids(dask_client)
    got, env = collect(p, executor=dask_client)
    assert marker.exists()  # a worker did die
    assert_same_batches(got, expected)
    assert env.variables["seen"] == env0.variables["seen"]  # nothing lost or duplicated
    assert env.variables["total"] == env0.variables["total"]
    assert dask_worker_pids(dask_client) != before  # the nanny started a new worker


@pytest.mark.dask
@pytest.mark.timeout(60)
def test_a_batch_class_from_a_script_runs_on_dask_workers(dask_client, monkeypatch):
    """Dask copies a class defined in ``__main__`` by value; its actions must come along."""
    import sys

    class ExecMainBatch(Batch):
        components = ("x",)

        @action
        def double(self):
            return self.replace(x=self.x * 2)

    # as if defined in the script being run: Dask workers cannot import it
    ExecMainBatch.__module__ = "__main__"
    ExecMainBatch.__qualname__ = "ExecMainBatch"
    monkeypatch.setattr(sys.modules["__main__"], "ExecMainBatch", ExecMainBatch, raising=False)
    ds = Dataset(4, ExecMainBatch, preloaded={"x": np.arange(4.0)})
    got = [b.x.tolist() for b in ds.p.double().iterate(2, executor=dask_client)]
    assert got == [[0.0, 2.0], [4.0, 6.0]]


@pytest.mark.timeout(60)
def test_an_error_in_a_pure_step_on_a_worker_is_reported_as_in_a_sequential_run():
    p = exec_pipeline(Pipeline().apply(exec_fail_on, 11))
    with pytest.raises(ActionError, match=FAIL) as sequential_error:
        collect(p)
    cause = sequential_error.value.__cause__
    assert type(cause) is ValueError and str(cause) == "cannot take item 11"
    for executor in ("threads", ProcessExecutor(1)):
        with pytest.raises(ActionError, match=FAIL) as info:
            collect(p, prefetch=2, executor=executor)
        assert str(info.value) == str(sequential_error.value)
        assert info.value.step == "apply(exec_fail_on, 11)"
        assert 11 in info.value.batch_indices.tolist()
        # the action's own exception, not a stand-in for a worker process's traceback
        assert type(info.value.__cause__) is ValueError
        assert str(info.value.__cause__) == "cannot take item 11"
        if executor != "threads":  # the worker's traceback comes along, as a note
            (note,) = info.value.__notes__
            assert "exec_fail_on" in note and "ValueError: cannot take item 11" in note


def test_workers_receive_only_the_steps_up_to_the_first_driver_step_in_place():
    with_driver = exec_pipeline()
    job = Job(with_driver.steps, ExecNums, with_driver.dataset, 0)
    sent = job.for_workers()
    assert sent.steps == with_driver.steps[:5]  # record_driver (step 5) stays on the driver
    assert sent.token == job.token and sent.dataset is job.dataset
    pure = Pipeline().apply(exec_scale, 2.0).noisy_square()
    rebatched = pure.rebatch(3).mark_worker()
    job = Job(rebatched.steps, ExecNums, None, 0)
    assert job.for_workers().steps == pure.steps  # stops at the rebatch barrier
    job = Job(pure.steps, ExecNums, None, 0)
    assert job.for_workers() is job


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_worker_process_killed_mid_run_is_survived_with_every_batch_once(sequential, tmp_path):
    expected, env0 = sequential
    marker = tmp_path / "died"
    victim = int(expected[3].indices[0])  # the 4th batch kills its worker the first time
    p = exec_pipeline(Pipeline().apply(exec_die_once, str(marker), victim))
    got, env = collect(p, executor=ProcessExecutor(2))
    assert marker.exists()  # a worker did die
    assert_same_batches(got, expected)
    assert env.variables["seen"] == env0.variables["seen"]  # nothing lost or duplicated
    assert env.variables["total"] == env0.variables["total"]


def exec_die_always(batch, index):
    if int(batch.indices[0]) == index:
        os._exit(1)
    return batch


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_batch_that_always_kills_its_worker_fails_the_run_with_a_clear_error(sequential):
    expected, _ = sequential
    victim = int(expected[2].indices[0])
    p = exec_pipeline(Pipeline().apply(exec_die_always, victim))
    with pytest.raises(FpipeError, match=r"a worker process died 2 times in this run") as info:
        collect(p, executor=ProcessExecutor(2, max_restarts=1))
    assert "executor='threads'" in str(info.value)


# -- an effectful step: once per batch, in batch order, one batch at a time ---------------------
# token -> what the steps of one run saw; the effectful step (and all after it) run on the
# driver, so module-level state is enough even when the pure prefix runs in other processes.
TRAIN_CALLS: dict[str, dict] = {}
TRAIN_ITEMS, TRAIN_BATCH = 22, 4


class ExecNet:
    """A stand-in for a Keras model: ``train_on_batch`` returns the batch's loss."""

    def train_on_batch(self, x, y):
        return float(np.mean((x - y) ** 2))


class ExecTrain(Batch):
    components = ("x", "y", "wpid", "wthread", "athread")

    @model
    def exec_net():
        return ExecNet()

    @action
    def exec_prepare(self):
        """Pure: a noisy target from the batch's own stream, and where it ran."""
        n = len(self)
        name = threading.current_thread().name
        return self.replace(
            y=self.x * 0.5 + self.random.normal(size=n),
            wpid=np.full(n, os.getpid()),
            wthread=np.array([name] * n),
        )

    @action
    def exec_train(self, token):
        """The seed's training pattern, without any declaration: inferred effectful."""
        calls = TRAIN_CALLS[token]
        with calls["lock"]:  # first of all: a call that goes no further is counted too
            calls["train"].append(tuple(self.indices.tolist()))
            calls["now"] += 1
            calls["max"] = max(calls["max"], calls["now"])
        try:
            time.sleep(0.002)  # widen the window in which a second call would overlap
            net = self.get_model_by_name("exec_net")
            loss = net.train_on_batch(self.x, self.y)
            self.pipeline.update_variable("loss", loss, mode="a")
            calls["iterations"].append(self.pipeline.iteration)
        finally:
            with calls["lock"]:
                calls["now"] -= 1
        return self

    @action
    def exec_after(self, token):
        """Pure, but after the effectful step: it runs on the driver."""
        TRAIN_CALLS[token]["after"].append(tuple(self.indices.tolist()))
        name = threading.current_thread().name
        return self.replace(athread=np.array([name] * len(self)), x=self.x + 1)


def train_run(executor, prefetch):
    kind = executor if executor is None or isinstance(executor, str) else type(executor).__name__
    token = f"{kind}-{prefetch}-{len(TRAIN_CALLS)}"
    TRAIN_CALLS[token] = {
        "lock": threading.Lock(),
        "train": [],
        "iterations": [],
        "after": [],
        "now": 0,
        "max": 0,
    }
    ds = Dataset(TRAIN_ITEMS, ExecTrain, preloaded={"x": np.arange(TRAIN_ITEMS, dtype=float)})
    p = ds.p.init_variable("loss", []).exec_prepare().exec_train(token).exec_after(token)
    kwargs = {"shuffle": True, "n_epochs": 2, "seed": 11, "prefetch": prefetch}
    with p.iterate(TRAIN_BATCH, executor=executor, **kwargs) as it:
        batches = list(it)
        loss = it.get_variable("loss")
    return batches, loss, TRAIN_CALLS.pop(token)


@pytest.fixture(scope="module")
def train_sequential():
    return train_run(None, 0)


def assert_trained_once_per_batch_in_order(got, expected):
    batches, loss, calls = got
    expected_batches, expected_loss, _ = expected
    n = 2 * -(-TRAIN_ITEMS // TRAIN_BATCH)
    ids = [tuple(b.indices.tolist()) for b in batches]
    assert len(batches) == n and ids == [tuple(b.indices.tolist()) for b in expected_batches]
    assert len(set(ids)) == n  # each batch id names one batch of the run
    assert Counter(calls["train"]) == dict.fromkeys(ids, 1)  # called once per batch
    assert calls["train"] == ids  # in batch order
    assert calls["iterations"] == list(range(n))  # ...on the driver, one batch after another
    assert calls["max"] == 1 and calls["now"] == 0  # never two at once
    assert calls["after"] == ids  # the pure step after it: once per batch, in order
    assert loss == expected_loss and len(loss) == n  # the variable, as in a sequential run
    for b, e in zip(batches, expected_batches, strict=True):
        assert b.y.tobytes() == e.y.tobytes() and b.x.tobytes() == e.x.tobytes()
        assert set(b.athread.tolist()) == {threading.main_thread().name}


def test_the_training_step_is_known_effectful_before_the_run():
    steps = Pipeline().exec_prepare().exec_train("t").exec_after("t").steps
    prog = compile_program(steps, ExecTrain)
    assert [s.effectful for s in prog.stages[0]] == [False, True, False]
    assert prog.pure_prefix == 1
    assert Job(steps, ExecTrain, None, 0).for_workers().steps == steps[:1]


@pytest.mark.parametrize("prefetch", [0, 2, 4, 8])
@pytest.mark.timeout(60)
def test_an_effectful_step_runs_once_per_batch_in_order_under_thread_prefetch(
    train_sequential, prefetch
):
    got = train_run("threads", prefetch)
    assert_trained_once_per_batch_in_order(got, train_sequential)
    main = threading.main_thread().name
    for b in got[0]:
        (thread,) = set(b.wthread.tolist())
        # the pure step before it ran on a worker thread (on the driver without prefetch)
        assert thread.startswith("fpipe-prefetch") if prefetch else thread == main


@pytest.mark.timeout(60)
def test_an_effectful_step_runs_once_per_batch_in_order_with_processes(train_sequential):
    got = train_run("processes", 3)
    assert_trained_once_per_batch_in_order(got, train_sequential)
    assert DRIVER_PID not in {p for b in got[0] for p in b.wpid.tolist()}


@pytest.mark.dask
@pytest.mark.timeout(120)
def test_an_effectful_step_runs_once_per_batch_in_order_with_dask(train_sequential, dask_client):
    got = train_run(dask_client, 0)
    assert_trained_once_per_batch_in_order(got, train_sequential)
    assert {p for b in got[0] for p in b.wpid.tolist()} <= dask_worker_pids(dask_client)


# -- one executor, many runs: per-run state lives in the run --------------------------------
def fpipe_worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("fpipe")}


def no_worker_thread_left(before: set[threading.Thread], within: float = 10.0) -> bool:
    """Whether every fpipe thread started since ``before`` has gone (they may still be
    finishing a batch: a generous bound, not a timing test)."""
    deadline = time.monotonic() + within
    while fpipe_worker_threads() - before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def shifted_pipeline(offset: float) -> Pipeline:
    x = np.arange(N_ITEMS, dtype=np.float64) + offset
    ds = Dataset(N_ITEMS, ExecNums, preloaded={"x": x})
    return ds.p.apply(exec_scale, 3.0).noisy_square().mark_worker()


@pytest.mark.timeout(60)
def test_one_thread_executor_serves_two_concurrent_runs_each_with_its_own_batches():
    shared = ThreadExecutor(2)
    pipelines = {"a": shifted_pipeline(0.0), "b": shifted_pipeline(1000.0)}
    expected = {k: collect(p)[0] for k, p in pipelines.items()}
    both_open = threading.Barrier(2, timeout=20)
    got: dict[str, object] = {}

    def consume(key: str) -> None:
        try:
            with pipelines[key].iterate(BATCH, executor=shared, **RUN) as it:
                first = next(it)  # this run's workers are started
                both_open.wait()  # ...and so are the other run's
                got[key] = [first, *it]
        except BaseException as exc:  # reported below, in the test's thread
            got[key] = exc

    runners = [threading.Thread(target=consume, args=(k,)) for k in pipelines]
    for t in runners:
        t.start()
    for t in runners:
        t.join(30)
    for key in pipelines:
        result = got[key]
        assert isinstance(result, list), f"run {key!r} failed: {result!r}"
        assert_same_batches(result, expected[key])


SHARED_THREADS = ThreadExecutor(2)


def exec_inner_total(batch, executor):
    """Runs a whole pipeline on ``executor`` for every batch: a run nested in a run."""
    inner = Dataset(6, ExecNums, preloaded={"x": np.arange(6.0)}).p.apply(exec_scale, 2.0)
    total = sum(float(b.x.sum()) for b in inner.gen_batch(2, executor=executor))
    return batch.replace(y=np.full(len(batch), total))


@pytest.mark.parametrize("where", ["worker", "driver"])
@pytest.mark.timeout(60)
def test_a_run_nested_in_a_step_may_use_the_executor_of_the_outer_run(where):
    step = exec_inner_total if where == "worker" else action(effects=True)(exec_inner_total)
    p = exec_dataset().p.apply(exec_scale, 3.0).apply(step, SHARED_THREADS)
    with p.iterate(BATCH, executor=SHARED_THREADS, **RUN) as it:
        got = list(it)
    expected, _ = collect(p)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.indices, e.indices)
        assert g.x.tobytes() == e.x.tobytes()
        assert g.y.tolist() == [30.0] * len(g)  # 2 * (0 + 1 + ... + 5), from the inner run


def test_executors_hold_configuration_only_and_compare_by_it():
    import pickle

    assert ThreadExecutor(3) == ThreadExecutor(3) != ThreadExecutor(2)
    assert hash(ProcessExecutor(2)) == hash(ProcessExecutor(2, window=4))
    assert ProcessExecutor(2) != ProcessExecutor(2, max_restarts=0)
    assert repr(ThreadExecutor(3)) == "ThreadExecutor(workers=3)"
    used = ThreadExecutor(2)
    list(exec_dataset().p.apply(exec_scale, 2.0).iterate(BATCH, executor=used))
    assert pickle.loads(pickle.dumps(used)) == used == ThreadExecutor(2)


# -- errors: on time, with their cause, and no worker left behind -------------------------------
def exec_fail_or_stall(batch, fail_at, stall_at, stalled, release):
    """Batch ``stall_at`` waits for ``release``; batch ``fail_at`` fails once it stalls."""
    first = int(batch.indices[0])
    if first == stall_at:
        stalled.set()
        release.wait(30)
    if first == fail_at:
        stalled.wait(10)  # the later batch is in flight, stuck, when this one fails
        raise ValueError("batch five is broken")
    return batch


@pytest.mark.timeout(60)
def test_an_error_reaches_the_caller_when_its_batch_is_due_even_if_a_later_batch_is_stuck(
    monkeypatch,
):
    # one batch per hand-off (cheap batches may otherwise share a chunk, run in turn on
    # one thread): the stuck batch then runs beside the failing one, on 4 threads
    monkeypatch.setattr(executors, "CHUNK_SECONDS", 0.0)
    stalled, release = threading.Event(), threading.Event()
    # batches of 2, in order: batch #5 starts with item 10, batch #7 with item 14
    p = Dataset(40).p.apply(exec_fail_or_stall, 10, 14, stalled, release)
    before = fpipe_worker_threads()
    timer = threading.Timer(20, release.set)  # the stuck batch gives up after 20 s
    timer.start()
    try:
        with pytest.raises(ActionError, match=r"failed on batch #5 .*batch five is broken"):
            p.run(2, executor=ThreadExecutor(4))
        arrived_in_time = not release.is_set()
    finally:
        release.set()
        timer.cancel()
    assert stalled.is_set()
    assert arrived_in_time, "the error waited for the stuck batch #7"
    assert no_worker_thread_left(before)  # the stuck worker goes once its batch ends


def exec_fail_after(batch, index):
    """Fails after the rebatch: the first stage is left in the middle of its batches."""
    if index in batch.indices:
        raise ValueError(f"cannot take item {index}")
    return batch


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.timeout(60)
def test_after_an_error_in_a_rebatching_run_no_worker_thread_stays_while_the_error_is_held(where):
    p = Dataset(40).p
    p = p.apply(exec_fail_on, 11).rebatch(3) if where == "before" else p.rebatch(3)
    if where == "after":
        p = p.apply(exec_fail_after, 11)
    before = fpipe_worker_threads()
    gc.disable()  # no help from the garbage collector: nothing may depend on it
    try:
        with pytest.raises(ActionError, match="cannot take item 11") as info:
            for _ in p.gen_batch(2, prefetch=4):
                pass
        held = info.value  # the caller keeps the error, and so its traceback
        assert no_worker_thread_left(before)
        assert "cannot take item 11" in str(held)
    finally:
        gc.enable()


@pytest.mark.timeout(60)
def test_dropping_an_iterator_in_the_middle_stops_its_workers_without_the_gc():
    before = fpipe_worker_threads()
    gc.disable()
    try:
        it = exec_dataset().p.apply(exec_scale, 2.0).rebatch(3).iterate(2, prefetch=4)
        next(it)
        assert fpipe_worker_threads() - before
        del it
        assert not fpipe_worker_threads() - before
    finally:
        gc.enable()


@pytest.mark.timeout(60)
def test_dropping_a_pipeline_in_the_middle_of_next_batch_stops_its_workers_without_the_gc():
    before = fpipe_worker_threads()
    run = None
    gc.disable()
    try:
        p = exec_dataset().p.apply(exec_scale, 2.0)
        p.next_batch(2, prefetch=4)
        run = p.iteration()
        assert run is not None and fpipe_worker_threads() - before
        del p
        assert not fpipe_worker_threads() - before
    finally:
        gc.enable()
        if run is not None:
            run.close()  # whatever happened: no thread left for the other tests


@pytest.mark.dask
@pytest.mark.timeout(120)
def test_resume_states_do_not_depend_on_the_executor(dask_client):
    """A state taken under any executor equals the sequential one and resumes under any."""
    p = exec_pipeline().rebatch(3)

    def state_after(k, **how):
        with p.iterate(BATCH, **RUN, **how) as it:
            for _ in range(k):
                next(it)
            return it.get_state()

    def rest(state, **how):
        with p.iterate(BATCH, **RUN, state=state.to_dict(), **how) as it:
            return [(b.indices.tolist(), b.y.tolist()) for b in it]

    ways = [
        {},
        {"prefetch": 3},
        {"executor": ThreadExecutor(2)},
        {"executor": ProcessExecutor(2)},
        {"executor": dask_client},
    ]
    expected = state_after(5)
    for how in ways[1:]:
        assert state_after(5, **how) == expected, how
    whole = rest(state_after(0))
    for before, after in zip(ways, [*ways[3:], *ways[:3]], strict=True):
        assert rest(state_after(5, **before), **after) == whole[5:], (before, after)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_worker_that_died_before_the_next_batch_is_sent_is_survived(sequential, tmp_path):
    """The pool may be broken when a batch is submitted, not only when one is collected."""
    expected, env0 = sequential
    marker = tmp_path / "died"
    victim = int(expected[3].indices[0])
    p = exec_pipeline(Pipeline().apply(exec_die_once, str(marker), victim))
    got = []
    with p.iterate(BATCH, executor=ProcessExecutor(2), **RUN) as it:
        for batch in it:
            got.append(batch)
            if len(got) == 2:  # let the victim's worker die while nothing is collected
                deadline = time.monotonic() + 30
                while not marker.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.5)
        env = it.env
    assert marker.exists()
    assert_same_batches(got, expected)
    assert env.variables["seen"] == env0.variables["seen"]


# -- threads: as many as the cores, batches handed over in chunks when they are cheap ---------
def test_prefetch_keeps_n_batches_ahead_on_at_most_as_many_threads_as_cores(monkeypatch):
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    assert resolve_executor(None, prefetch=4) == ThreadExecutor(2, window=4)
    assert resolve_executor("threads", prefetch=1) == ThreadExecutor(1)
    assert repr(ThreadExecutor(2, window=4)) == "ThreadExecutor(workers=2, window=4)"
    assert ThreadExecutor(2, window=4) != ThreadExecutor(2)
    with pytest.raises(ValueError, match=r"ThreadExecutor needs a window of at least 1, got 0"):
        ThreadExecutor(2, window=0)
    p = exec_dataset().p.apply(exec_slow, 0.002).mark_worker()
    threads = {str(b.thread[0]) for b in p.gen_batch(1, prefetch=4)}
    assert threads <= {"fpipe-prefetch_0", "fpipe-prefetch_1"}, threads


def exec_slow(batch, seconds):
    time.sleep(seconds)  # releases the GIL, as I/O would
    return batch


def record_chunks(monkeypatch) -> list[int]:
    """The number of batches in each hand-off to a worker thread, in order."""
    sizes: list[int] = []
    hand = executors._ThreadSession._hand

    def recording(self, chunk):
        sizes.append(len(chunk.items))
        hand(self, chunk)

    monkeypatch.setattr(executors._ThreadSession, "_hand", recording)
    return sizes


def chunked_pipeline() -> Pipeline:
    x = np.arange(1000, dtype=np.float64)
    return Dataset(1000, ExecNums, preloaded={"x": x}).p.apply(exec_scale, 3.0).noisy_square()


@pytest.mark.timeout(60)
def test_cheap_batches_travel_in_chunks_that_at_most_double_up_to_max_chunk(monkeypatch):
    expected = list(chunked_pipeline().gen_batch(2, shuffle=True, seed=3))
    monkeypatch.setattr(executors, "CHUNK_SECONDS", 10.0)  # every batch counts as cheap
    sizes = record_chunks(monkeypatch)
    got = list(chunked_pipeline().gen_batch(2, shuffle=True, seed=3, prefetch=2))
    assert_same_batches(got, expected)
    assert sum(sizes) == len(expected) == 500
    assert sizes[:5] == [1, 1, 1, 2, 4]  # one batch each until the first comes back
    assert max(sizes) == executors.MAX_CHUNK
    assert all(n <= 2 * max(sizes[:i]) for i, n in enumerate(sizes) if i)


@pytest.mark.timeout(60)
def test_cheap_batches_share_hand_offs_and_slow_ones_travel_alone(monkeypatch):
    sizes = record_chunks(monkeypatch)
    n = len(list(chunked_pipeline().gen_batch(2, prefetch=2)))  # ~20 us a batch
    assert sum(sizes) == n == 500
    assert len(sizes) <= n // 2, sizes  # far fewer hand-offs than batches
    sizes.clear()
    busy = exec_dataset().p.apply(exec_busy, 0.002)  # more CPU time than CHUNK_SECONDS
    assert len(list(busy.gen_batch(1, n_epochs=2, prefetch=2))) == len(sizes) == 2 * N_ITEMS
    assert set(sizes) == {1}
    sizes.clear()
    waiting = exec_dataset().p.apply(exec_slow, 0.004)  # no CPU time, but wall time
    assert len(list(waiting.gen_batch(1, n_epochs=2, prefetch=2))) == 2 * N_ITEMS
    assert max(sizes) <= executors.CHUNK_WALL_SECONDS / 0.004, sizes


def exec_busy(batch, seconds):
    """Keeps its thread busy (and the GIL held) for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return batch


SEEN: list[int] = []  # first items of the batches exec_fail_counting saw


def exec_fail_counting(batch, index):
    SEEN.append(int(batch.indices[0]))
    return exec_fail_on(batch, index)


@pytest.mark.timeout(60)
def test_an_error_in_a_chunk_comes_after_the_batches_before_it_and_stops_the_chunk(
    monkeypatch,
):
    monkeypatch.setattr(executors, "CHUNK_SECONDS", 10.0)
    sizes = record_chunks(monkeypatch)
    SEEN.clear()
    # batches of 2 in order, chunks of 1, 1, 1, 2, 4: batches #5-#8 (items 10-17) share one
    p = Dataset(40).p.apply(exec_fail_counting, 13)
    got = []
    with pytest.raises(ActionError, match=r"failed on batch #6 .*cannot take item 13"):
        for b in p.gen_batch(2, prefetch=2):
            got.append(int(b.indices[0]))
    assert sizes[:5] == [1, 1, 1, 2, 4]
    assert got == [0, 2, 4, 6, 8, 10]  # every batch before the failing one, in order
    assert 14 not in SEEN and 16 not in SEEN  # the rest of its chunk never ran


GATHERED: list[tuple[bool, str]] = []  # what ExecLazy.note_gathered saw, and where


class ExecLazy(Batch):
    components = ("x", "y")

    @action
    def lazy_pure(self):
        """Pure, reads nothing: a worker has a step to run."""
        return self

    @action(use_lock="exec_lazy_lock")
    def note_gathered(self):
        """On the driver: were the components gathered before the batch came here?"""
        gathered = all(getattr(v, "gathered", True) for v in self._data.values())
        GATHERED.append((gathered, threading.current_thread().name))
        return self


def lazy_notes(p: Pipeline, **run) -> list[tuple[bool, str]]:
    GATHERED.clear()
    before = fpipe_worker_threads()
    with p.iterate(4, **run) as it:
        for _ in it:
            started = bool(fpipe_worker_threads() - before)
    return [(gathered, started) for gathered, _ in GATHERED]


@pytest.mark.timeout(60)
def test_a_prefetched_batch_reaches_the_driver_with_its_components_gathered(monkeypatch):
    data = (np.arange(40.0).reshape(20, 2), np.arange(20))
    p = Dataset(20, ExecLazy, preloaded=data).p
    # a worker runs the pure step, then gathers what it hands over
    assert lazy_notes(p.lazy_pure().note_gathered(), prefetch=2) == [(True, True)] * 5
    # sequentially a component is gathered when a step first reads it
    assert lazy_notes(p.lazy_pure().note_gathered()) == [(False, False)] * 5
    # nothing for a worker to run and a few rows to copy: the driver makes the batches
    # (gathered, two at a time, before their steps run), and no thread starts
    assert lazy_notes(p.note_gathered(), prefetch=2) == [(True, False)] * 5
    assert {name for _, name in GATHERED} == {threading.main_thread().name}
    # ...unless the rows are many bytes: a worker copies them
    monkeypatch.setattr(executors, "INLINE_BYTES", 4 * 24)  # a batch holds 4 * 24 bytes
    assert lazy_notes(p.note_gathered(), prefetch=2) == [(True, True)] * 5


def test_with_nothing_for_a_worker_the_driver_makes_prefetch_batches_ahead_and_runs_them_in_order(
    monkeypatch,
):
    events: list[str] = []
    ds = Dataset(20, ExecLazy, preloaded=(np.arange(40.0).reshape(20, 2), np.arange(20)))
    batch_at, batches_at = Dataset._batch_at, Dataset._batches_at

    def making(self, positions, ctx=None):
        events.append(f"make {positions[0] // 4}")
        return batch_at(self, positions, ctx)

    def making_ahead(self, positions, ctxs):
        events.extend(f"make {rows[0] // 4}" for rows in positions)
        return batches_at(self, positions, ctxs)

    monkeypatch.setattr(Dataset, "_batch_at", making)
    monkeypatch.setattr(Dataset, "_batches_at", making_ahead)

    def step(batch):
        events.append(f"step {batch.indices[0] // 4}")
        return batch

    p = ds.p.init_variable("n", 0).update_variable("n", 1).apply(step)  # driver steps only
    # as many batches at a time as fit in INLINE_BYTES, at most MAX_CHUNK: all five here
    list(p.gen_batch(4, prefetch=2))
    assert events == [*(f"make {k}" for k in range(5)), *(f"step {k}" for k in range(5))]
    events.clear()
    monkeypatch.setattr(executors, "MAX_CHUNK", 2)  # then prefetch=3 makes three at a time
    before = fpipe_worker_threads()
    with p.iterate(4, prefetch=3) as it:
        for k, batch in enumerate(it):
            assert batch.indices.tolist() == list(range(4 * k, 4 * k + 4))
            assert it.get_state().iteration == k + 1  # the position follows the batches out
        assert fpipe_worker_threads() == before
    assert events == [
        *("make 0", "make 1", "make 2", "step 0", "step 1", "step 2"),
        *("make 3", "make 4", "step 3", "step 4"),
    ]
    events.clear()
    list(p.gen_batch(4))  # sequential, a driver step first: made ahead as well
    assert events[:5] == ["make 0", "make 1", "step 0", "step 1", "make 2"]
    events.clear()
    # a pure step first, or rows of more than INLINE_BYTES a batch: each batch is made
    # when it is due
    list(ds.p.apply(step).init_variable("n", 0).update_variable("n", 1).gen_batch(4))
    assert events[:4] == ["make 0", "step 0", "make 1", "step 1"]
    events.clear()
    monkeypatch.setattr(executors, "INLINE_BYTES", 4 * 24)  # a batch holds 4 * 24 bytes
    list(p.gen_batch(4))
    assert events[:4] == ["make 0", "step 0", "make 1", "step 1"]


# -- no batch outlives its use ------------------------------------------------------------
# Weak references to arrays the run has finished with; the probes below look at them from
# inside a later step (a step that runs while the run may still, wrongly, hold them).
OUTPUTS: list = []  # the `x` of each output batch the consumer was given, then dropped
INPUTS: dict = {}  # per batch (its first id): the rows its first step read


class ExecHeld(Batch):
    components = ("x",)

    @action
    def remember_rows(self):
        """Pure: notes the gathered rows it reads, then replaces them."""
        INPUTS[int(self.indices[0])] = weakref.ref(self.x)
        return self.replace(x=self.x + 1.0)

    @action
    def rows_gone(self):
        """Pure: the rows `remember_rows` replaced must be gone by now."""
        alive = INPUTS.pop(int(self.indices[0]))() is not None
        return self.replace(x=np.where(alive, -1.0, self.x))

    @action(use_lock="held_lock")
    def earlier_outputs_gone(self):
        """On the driver: every output batch the consumer dropped must be gone."""
        alive = sum(ref() is not None for ref in OUTPUTS)
        return self.replace(x=np.where(alive, -1.0, self.x))


def _held_dataset():
    return Dataset(24, ExecHeld, preloaded=np.arange(48.0).reshape(24, 2))


@pytest.mark.parametrize(
    ("steps", "prefetch"),
    [
        (("earlier_outputs_gone",), 0),  # sequential
        (("earlier_outputs_gone",), 2),  # nothing for a worker: made ahead on the driver
        (("remember_rows", "earlier_outputs_gone"), 2),  # a worker, then the driver
    ],
)
def test_the_run_keeps_no_output_batch_the_consumer_dropped(steps, prefetch):
    p = _held_dataset().p
    for name in steps:
        p = getattr(p, name)()
    OUTPUTS.clear()
    gc.disable()  # reference counts alone must free them
    try:
        n = 0
        for batch in p.gen_batch(4, prefetch=prefetch):
            assert (batch.x >= 0).all(), f"batch {n}: a batch given out before is still held"
            OUTPUTS.append(weakref.ref(batch.x))
            del batch
            n += 1
    finally:
        gc.enable()
        OUTPUTS.clear()
    assert n == 6


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_rows_a_step_replaced_are_freed_before_the_next_step_runs(prefetch):
    INPUTS.clear()
    gc.disable()
    try:
        out = list(_held_dataset().p.remember_rows().rows_gone().gen_batch(4, prefetch=prefetch))
    finally:
        gc.enable()
    assert len(out) == 6
    assert all((b.x >= 0).all() for b in out), "a batch's replaced rows stayed alive"
