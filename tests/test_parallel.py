"""@inbatch_parallel: per-item calls on threads, async or a loop, assembled by post."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

from fpipe import ActionError, Batch, Dataset, FpipeError, Pipeline, action, inbatch_parallel
from fpipe.interpreter import compile_program

POOL_BOUND = min(32, (os.cpu_count() or 2) * 2)  # the run pool's documented bound
CALLED: list = []


def _pairs(batch, *args, **kwargs):
    ids = batch.indices.tolist()
    return list(zip(ids[::2], ids[1::2], strict=False))


def _sum_post(batch, results, *args, **kwargs):
    return batch.replace(x=np.array([float(sum(r)) for r in results for _ in range(2)]))


class ParNums(Batch):
    components = ("x", "y")

    @action
    @inbatch_parallel(init="indices", post="_collect", target="threads")
    def square_ids(self, item_id, k=1):
        return item_id * item_id * k

    @action
    @inbatch_parallel(init="indices", post="_collect", target="for")
    def square_ids_for(self, item_id, k=1):
        return item_id * item_id * k

    @action
    @inbatch_parallel(init="indices", post="_collect", target="auto")
    def square_ids_auto(self, item_id, k=1):
        return item_id * item_id * k

    @action
    @inbatch_parallel(init="items", post="_collect", target="threads")
    def twice_items(self, item):
        return item.x * 2

    @action
    @inbatch_parallel(init="items", post="_collect", target="for")
    def twice_items_for(self, item):
        return item.x * 2

    @action
    @inbatch_parallel(init="items", post="_collect", target="async")
    async def twice_items_async(self, item):
        await asyncio.sleep(0)
        return item.x * 2

    @action
    @inbatch_parallel(init="run_once", post="_total")
    def total(self, scale):
        return float(self.x.sum()) * scale

    @action
    @inbatch_parallel(init=_pairs, post=_sum_post, target="threads")
    def pair_sums(self, pair):
        return pair

    @action
    @inbatch_parallel(init="_evens", post="_collect", target="for")
    def negate_evens(self, item_id):
        return -item_id

    @action
    @inbatch_parallel(init="indices", target="threads")
    def no_post(self, item_id):
        CALLED.append(item_id)

    @action
    @inbatch_parallel(init="indices", post="_names", target="threads")
    def thread_of(self, item_id):
        time.sleep(0.002)  # long enough for the pool's threads to take items too
        return threading.current_thread()

    @action
    @inbatch_parallel(init="indices", post="_collect", target="threads")
    def fail_on_two(self, item_id):
        if item_id == 2:
            raise ValueError("item two is broken")
        return item_id

    @action
    @inbatch_parallel(init="indices", post="_collect", target="for")
    def fail_on_two_for(self, item_id):
        CALLED.append(item_id)
        if item_id == 2:
            raise ValueError("item two is broken")
        return item_id

    @action
    @inbatch_parallel(init="indices", post="_collect", target="auto")
    def fail_on_two_auto(self, item_id):
        if item_id == 2:
            raise ValueError("item two is broken")
        return item_id

    @action
    @inbatch_parallel(init="indices", post="_collect", target="async")
    async def fail_on_two_async(self, item_id):
        if item_id == 2:
            raise ValueError("async item two is broken")
        return item_id

    @action
    @inbatch_parallel(init="indices", post="_collect", target="threads")
    def noise(self, item_id, rng):
        return rng.random()

    @action
    @inbatch_parallel(init="indices", post="_collect", target="for")
    def noise_for(self, item_id, rng):
        return rng.random()

    @action
    @inbatch_parallel(init="indices", post="_collect", target="auto")
    def noise_auto(self, item_id, rng):
        return rng.random()

    @action
    @inbatch_parallel(init="indices", post="_collect", target="threads")
    def tally_locked(self, item_id):
        """Items share the run's variables: a read-modify-write under a named lock."""
        with self.pipeline.lock("par_tally"):
            total = self.pipeline.get_variable("total")
            time.sleep(0.0005)  # another item writing now would lose this update
            self.pipeline.set_variable("total", total + item_id)
            self.pipeline.update_variable("log", (int(self.indices[0]), item_id), mode="a")
        return item_id * 2

    @action
    @inbatch_parallel(init="indices", post="_collect", target="threads")
    def interrupt_on_two(self, item_id):
        if item_id == 2:
            raise KeyboardInterrupt
        return item_id

    @action
    @inbatch_parallel(init="indices", post="_collect", target="for")
    def interrupt_on_two_for(self, item_id):
        if item_id == 2:
            raise KeyboardInterrupt
        return item_id

    @action
    @inbatch_parallel(init="indices", post="_collect", target="auto")
    def interrupt_on_two_auto(self, item_id):
        if item_id == 2:
            raise KeyboardInterrupt
        return item_id

    @action
    @inbatch_parallel(init="indices", post="_collect", target="async")
    async def interrupt_on_two_async(self, item_id):
        if item_id == 2:
            raise KeyboardInterrupt
        return item_id

    def _evens(self):
        return [i for i in self.indices.tolist() if i % 2 == 0]

    def _collect(self, results, *args, **kwargs):
        if len(results) != len(self):
            return self.replace(y=np.resize(np.array(results, dtype=float), len(self)))
        return self.replace(x=np.array(results, dtype=float))

    def _total(self, results, scale):
        return self.replace(y=np.full(len(self), results[0]))

    def _names(self, results):
        self.pipeline.update_variable("threads", results, "e")
        return self


def make(n=4):
    return ParNums(np.arange(n), preloaded={"x": np.arange(float(n)) + 10})


def ds(n=6):
    return Dataset(n, ParNums, preloaded={"x": np.arange(float(n)) + 10})


def xs(p, size=3, **kw):
    return np.concatenate([b.x for b in p.gen_batch(size, **kw)]).tolist()


def fpipe_threads():
    return {t for t in threading.enumerate() if t.name.startswith("fpipe")}


# -- inits and post --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["square_ids", "square_ids_for", "square_ids_auto"])
def test_indices_init_calls_once_per_item_id_with_args(name):
    b = ParNums(np.array([3, 1, 2]), preloaded={"x": np.zeros(3)})
    c = getattr(b, name)(k=2)
    assert c.x.tolist() == [18.0, 2.0, 8.0]
    assert b.x.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["twice_items", "twice_items_async"])
def test_items_init_passes_item_views(name):
    assert getattr(make(), name)().x.tolist() == [20.0, 22.0, 24.0, 26.0]


def test_run_once_init_calls_the_method_once_without_an_item():
    c = make(3).total(2.0)
    assert c.y.tolist() == [66.0, 66.0, 66.0]


def test_custom_callable_init_and_post_function():
    c = make(4).pair_sums()
    assert c.x.tolist() == [1.0, 1.0, 5.0, 5.0]


def test_init_given_as_a_method_name():
    c = make(5).negate_evens()
    assert c.y.tolist() == [0.0, -2.0, -4.0, 0.0, -2.0]


def test_without_post_the_batch_itself_is_returned():
    CALLED.clear()
    b = make(3)
    assert b.no_post() is b
    assert sorted(CALLED) == [0, 1, 2]


def test_wrapper_records_its_options():
    fn = ParNums.__dict__["square_ids"].fn
    assert fn.inbatch_parallel == ("indices", "_collect", "threads")
    assert fn.__name__ == "square_ids"


def test_parallel_actions_run_in_a_pipeline():
    p = Pipeline().square_ids(k=1).twice_items_async() << ds(6)
    assert xs(p) == [2.0 * i * i for i in range(6)]


def test_threads_target_runs_items_concurrently():
    barrier = threading.Barrier(3, timeout=10)

    class ParBarrier(Batch):
        @inbatch_parallel(init="indices", post=lambda b, r: b.replace(data=np.array(r)))
        def meet(self, item_id):
            return barrier.wait()  # all three items must be running at once

    b = ParBarrier(np.arange(3), preloaded=np.zeros(3))
    assert sorted(b.meet().data.tolist()) == [0, 1, 2]


def test_async_target_runs_items_concurrently():
    class ParGather(Batch):
        @inbatch_parallel(
            init="indices", post=lambda b, r: b.replace(data=np.array(r)), target="async"
        )
        async def meet(self, item_id):
            started.append(item_id)
            while len(started) < 3:  # each item waits until all have started
                await asyncio.sleep(0)
            return item_id * 10

    started: list = []
    b = ParGather(np.arange(3), preloaded=np.zeros(3))
    assert b.meet().data.tolist() == [0, 10, 20]


def test_async_target_works_inside_a_running_event_loop():
    async def main():
        return make(3).twice_items_async()

    assert asyncio.run(main()).x.tolist() == [20.0, 22.0, 24.0]


@pytest.mark.parametrize("name", ["twice_items", "twice_items_for"])
def test_items_are_taken_by_position_so_repeated_ids_are_no_trouble(name):
    b = make(2)
    doubled = Batch.merge([b, b.replace(x=np.array([5.0, 6.0]))])
    assert doubled.indices.tolist() == [0, 1, 0, 1]  # no DatasetIndex: ids repeat
    assert getattr(doubled, name)().x.tolist() == [20.0, 22.0, 10.0, 12.0]


@pytest.mark.parametrize("name", ["square_ids", "square_ids_for", "square_ids_auto"])
def test_an_empty_batch_gives_post_no_results(name):
    empty = make(3).select(np.array([], dtype=int))
    assert getattr(empty, name)().x.tolist() == []


class ParReturns(Batch):
    @inbatch_parallel(init="indices", post=lambda b, r: r, target="for")
    def errors_for(self, item_id):
        return ValueError(item_id)

    @inbatch_parallel(init="indices", post=lambda b, r: r, target="threads")
    def errors_threads(self, item_id):
        return ValueError(item_id)


@pytest.mark.parametrize("name", ["errors_for", "errors_threads"])
def test_an_exception_returned_by_an_item_is_a_result_not_a_failure(name):
    results = getattr(ParReturns(np.arange(3), preloaded=np.zeros(3)), name)()
    assert [type(r) for r in results] == [ValueError] * 3
    assert [r.args for r in results] == [(0,), (1,), (2,)]


class ParCost(Batch):
    """Items that hold the GIL (a Python loop) and items that wait (sleep), on target="auto"."""

    components = ("spun", "napped")

    @action
    @inbatch_parallel(init="indices", post="_spun", target="auto")
    def spin(self, item_id):
        deadline = time.perf_counter() + 0.0002
        while time.perf_counter() < deadline:  # Python code: holds the GIL all along
            pass
        return threading.get_ident()

    @action
    @inbatch_parallel(init="indices", post="_napped", target="auto")
    def nap(self, item_id):
        time.sleep(0.02)  # releases the GIL, as I/O would
        return threading.get_ident()

    @action
    @inbatch_parallel(init="indices", post="_napped", target="threads")
    def nap_threads(self, item_id):
        time.sleep(0.03)  # time enough for the calling thread to take one item at least
        return threading.get_ident()

    def _spun(self, results):
        return self.replace(spun=np.array(results))

    def _napped(self, results):
        return self.replace(napped=np.array(results))


def cost_ds(n):
    return Dataset(n, ParCost, preloaded={"spun": np.zeros(n), "napped": np.zeros(n)})


@pytest.mark.timeout(60)
def test_auto_target_keeps_a_loop_for_gil_bound_items_and_the_pool_for_waiting_ones():
    # Each method measures its items in the run's first batches, then keeps the faster
    # target: Python code that holds the GIL gains nothing from threads, sleeping items do.
    *_, last = (Pipeline().spin().nap() << cost_ds(100)).gen_batch(20)
    assert set(last.spun.tolist()) == {threading.get_ident()}  # a loop on the calling thread
    assert len(set(last.napped.tolist())) > 1  # items on the pool's threads too


def test_auto_target_outside_a_run_is_a_plain_loop():
    b = ParCost(np.arange(6), preloaded={"napped": np.zeros(6)})
    assert set(b.nap().napped.tolist()) == {threading.get_ident()}


@pytest.mark.timeout(60)
def test_threads_target_has_the_calling_thread_take_items_too():
    b = ParCost(np.arange(3), preloaded={"napped": np.zeros(3)})
    assert threading.get_ident() in b.nap_threads().napped.tolist()
    (out,) = (Pipeline().nap_threads() << cost_ds(3)).gen_batch(3)
    assert threading.get_ident() in out.napped.tolist()


# -- failures --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["fail_on_two", "fail_on_two_for", "fail_on_two_auto", "fail_on_two_async"]
)
def test_failing_item_raises_in_the_caller_with_the_cause(name):
    with pytest.raises(FpipeError, match=rf"{name} failed for item #2 \(2\) of 4: ValueError") as e:
        getattr(make(4), name)()
    assert isinstance(e.value.__cause__, ValueError)
    assert "item two is broken" in str(e.value)


def test_for_target_stops_at_the_first_failing_item():
    CALLED.clear()
    with pytest.raises(FpipeError, match=r"fail_on_two_for failed for item #2"):
        make(5).fail_on_two_for()
    assert CALLED == [0, 1, 2]


def test_threads_target_starts_no_item_after_one_has_failed():
    class ParFailFirst(Batch):
        @inbatch_parallel(init="indices", target="threads")
        def fail_first(self, item_id):
            CALLED.append(item_id)
            if item_id == 0:
                raise ValueError("item zero is broken")
            time.sleep(0.002)

    CALLED.clear()
    with pytest.raises(FpipeError, match=r"fail_first failed for item #0"):
        ParFailFirst(np.arange(100), preloaded=np.zeros(100)).fail_first()
    assert len(CALLED) < 50  # the threads stopped taking items once item 0 had failed


def test_failing_item_in_a_pipeline_is_an_action_error_chaining_the_original():
    with pytest.raises(ActionError, match=r"`fail_on_two\(\)`.*item #2 \(2\) of 3") as e:
        (Pipeline().fail_on_two() << ds(6)).run(3)
    assert e.value.batch_position == 0
    inner = e.value.__cause__
    assert isinstance(inner, FpipeError)
    assert isinstance(inner.__cause__, ValueError)


def test_failing_item_with_prefetch_reaches_the_caller():
    with pytest.raises(ActionError, match=r"`fail_on_two_async\(\)`.*async item two is broken"):
        (Pipeline().fail_on_two_async() << ds(9)).run(3, prefetch=2)


INTERRUPTING = [
    "interrupt_on_two",
    "interrupt_on_two_for",
    "interrupt_on_two_auto",
    "interrupt_on_two_async",
]


@pytest.mark.parametrize("name", INTERRUPTING)
def test_keyboard_interrupt_in_an_item_propagates_as_itself(name):
    with pytest.raises(KeyboardInterrupt):
        getattr(make(4), name)()


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("name", INTERRUPTING)
@pytest.mark.timeout(60)
def test_keyboard_interrupt_in_an_item_of_a_run_propagates_as_itself(name, prefetch):
    before = set(threading.enumerate())
    p = getattr(Pipeline(), name)() << ds(9)
    with pytest.raises(KeyboardInterrupt):
        p.run(3, prefetch=prefetch)
    deadline = time.monotonic() + 10  # workers finish the batch they hold, then go
    while fpipe_threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not fpipe_threads() - before


# -- bad definitions -------------------------------------------------------------------------
def test_unknown_target_is_an_error():
    with pytest.raises(ValueError, match="unknown inbatch_parallel target 'processes'"):
        inbatch_parallel(init="indices", target="processes")


def test_bad_init_string_is_an_error():
    with pytest.raises(ValueError, match="init must be one of"):
        inbatch_parallel(init="not a name")


def test_async_target_needs_an_async_method():
    def f(self, i):
        return i

    with pytest.raises(TypeError, match=r"target='async' needs an `async def` method; f is not"):
        inbatch_parallel(init="indices", target="async")(f)


def test_async_method_needs_the_async_target():
    async def f(self, i):
        return i

    with pytest.raises(TypeError, match=r"f is `async def`: use target='async'"):
        inbatch_parallel(init="indices", target="threads")(f)


def test_init_returning_none_is_an_error():
    fn = inbatch_parallel(init=lambda b: None, target="for")(lambda self, i: i)
    with pytest.raises(TypeError, match="must return a list of items, got None"):
        fn(make(2))


def test_unknown_post_method_is_an_error():
    fn = inbatch_parallel(init="indices", post="_nope", target="for")(lambda self, i: i)
    with pytest.raises(AttributeError, match="post '_nope' is not a method of ParNums"):
        fn(make(2))


# -- the run's thread pool -------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_run_uses_one_bounded_pool_and_leaves_no_thread_behind():
    before = set(threading.enumerate())
    n_batches = POOL_BOUND + 8  # a pool per call would need at least one thread per batch
    p = Pipeline().init_variable("threads", []).thread_of() << ds(3 * n_batches)
    res = p.run(3)
    used = res.get_variable("threads")
    assert len(used) == 3 * n_batches
    pooled = set(used) - {threading.current_thread()}  # the calling thread takes items too
    assert 1 <= len(pooled) <= POOL_BOUND
    assert all(t.name.startswith("fpipe-inbatch") for t in pooled)
    assert not any(t.is_alive() for t in pooled)
    assert set(threading.enumerate()) <= before


@pytest.mark.timeout(60)
def test_two_runs_get_their_own_pools():
    p = Pipeline().init_variable("threads", []).thread_of() << ds(6)
    caller = {threading.current_thread()}
    first = set(p.run(3).get_variable("threads")) - caller
    second = set(p.run(3).get_variable("threads")) - caller
    assert first and second and not first & second


@pytest.mark.timeout(60)
def test_breaking_out_of_gen_batch_stops_the_pool():
    before = set(threading.enumerate())
    gen = (Pipeline().square_ids() << ds(30)).gen_batch(3, prefetch=2)
    first = next(gen)
    assert first.x.tolist() == [0.0, 1.0, 4.0]
    gen.close()
    assert not fpipe_threads() - before
    assert set(threading.enumerate()) <= before


@pytest.mark.timeout(60)
def test_loose_batch_call_leaves_no_thread_behind():
    before = set(threading.enumerate())
    assert make(5).square_ids().x.tolist() == [0.0, 1.0, 4.0, 9.0, 16.0]
    assert set(threading.enumerate()) <= before


# -- per-item randomness ------------------------------------------------------------------
def test_per_item_rng_is_reproducible_and_independent_of_target_and_prefetch():
    p = Pipeline().noise() << ds(9)
    q = Pipeline().noise_for() << ds(9)
    r = Pipeline().noise_auto() << ds(9)
    one = xs(p, seed=5)
    assert one == xs(r, seed=5) == xs(r, seed=5, prefetch=2)
    assert one == xs(p, seed=5)
    assert one == xs(p, seed=5, prefetch=2)
    assert one == xs(q, seed=5)
    assert one != xs(p, seed=6)
    assert len(set(one)) == 9  # every item of every batch has its own stream


def test_per_item_rng_needs_a_run():
    with pytest.raises(FpipeError, match=r"noise failed for item #0.*only defined while the batch"):
        make(2).noise()


class ParNested(Batch):
    @action
    @inbatch_parallel(init="indices", post="_collect")
    def outer(self, item_id):
        return float(self.inner().data.sum()) + item_id

    @inbatch_parallel(init="indices", post="_collect")
    def inner(self, item_id):
        return item_id

    def _collect(self, results):
        return self.replace(data=np.array(results, dtype=float))


@pytest.mark.timeout(60)
def test_nested_parallel_methods_in_a_run_do_not_deadlock_the_bounded_pool():
    n = 2 * POOL_BOUND + 3  # more outer items than pool threads, each waiting on inner items
    ds_nested = Dataset(n, ParNested, preloaded=np.zeros(n))
    (b,) = list((Pipeline().outer() << ds_nested).gen_batch(n))
    inner_sum = n * (n - 1) / 2
    assert b.data.tolist() == [inner_sum + i for i in range(n)]


# -- items that use the run's locks and variables -----------------------------------------
@pytest.mark.timeout(60)
def test_items_using_a_lock_and_variables_work_under_prefetch_as_without():
    p = Pipeline().init_variable("total", 0).init_variable("log", []).tally_locked() << ds(12)
    p = p.square_ids()  # a pure step after it
    stage = compile_program(p.steps, ParNums).stages[0]
    assert [s.effectful for s in stage] == [True, False]  # its per-item method reaches the env
    runs = {}
    for prefetch in (0, 4):
        with p.iterate(3, shuffle=True, seed=2, prefetch=prefetch) as it:
            batches = list(it)
            firsts = [int(b.indices[0]) for b in batches]
            assert np.concatenate([b.x for b in batches]).tolist() == [
                float(i * i) for b in batches for i in b.indices.tolist()
            ]
            runs[prefetch] = (it.get_variable("total"), it.get_variable("log"), firsts)
            assert "par_tally" in it.env.locks
    (total0, log0, firsts0), (total4, log4, firsts4) = runs[0], runs[4]
    assert total0 == total4 == sum(range(12))  # no update lost
    assert firsts0 == firsts4
    assert sorted(log0) == sorted(log4) and len(log4) == 12
    # each batch's items were logged together, batch after batch, in the order of the run
    for log in (log0, log4):
        order = [first for first, _ in log]
        assert order == [f for f in firsts0 for _ in range(3)]
