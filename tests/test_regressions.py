"""Regression tests: one per BatchFlow bug that fpipe must not have."""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from fpipe import ActionError, Batch, Dataset, Pipeline, SkipBatch, action

N_ITEMS = 40


class RegNums(Batch):
    @action
    def reg_fail_on(self, item):
        if item in self.indices.tolist():
            raise ValueError(f"cannot take item {item}")
        return self

    @action(use_lock="reg_lock")
    def reg_locked_fail_on(self, item):
        if item in self.indices.tolist():
            raise ValueError(f"locked step cannot take item {item}")
        return self

    @action(use_lock="reg_lock")
    def reg_locked_skip(self, items):
        if set(self.indices.tolist()) & set(items):
            raise SkipBatch
        return self

    @action
    def reg_skip(self, items):
        if set(self.indices.tolist()) & set(items):
            raise SkipBatch
        return self

    @action(effects=True)  # it calls a locked action by hand: it reaches the run's locks
    def reg_guarded(self, item):
        """Call the locked action by hand and handle its failure."""
        try:
            return self.reg_locked_fail_on(item)
        except ValueError:
            self.pipeline.update_variable("handled", self.indices.tolist(), mode="a")
            return self

    @action
    def reg_mark(self, name):
        self.pipeline.update_variable(name, self.indices.tolist(), mode="a")
        return self

    @action
    def reg_set(self, name):
        self.pipeline.set_variable(name, len(self))
        return self

    @action
    def reg_inc(self):
        return self.replace(data=self.data + 1)


def numbers(n=N_ITEMS):
    return Dataset(n, RegNums, preloaded=np.arange(n))


def prefetch_thread_names():
    return [t.name for t in threading.enumerate() if t.name.startswith("fpipe-prefetch")]


@pytest.fixture
def new_workers():
    """A function that polls for a short while until no fpipe worker thread started by
    this test is alive, and returns the survivors."""
    before = set(threading.enumerate())

    def survivors(collect=False, patience=5.0):
        deadline = time.monotonic() + patience
        while True:
            if collect:
                gc.collect()
            alive = [
                t.name
                for t in threading.enumerate()
                if t.name.startswith("fpipe-") and t not in before
            ]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.01)

    return survivors


def planned(n, batch_size):
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


# -- 1. an error under prefetch does not deadlock --------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefetch", [0, 4])
def test_failing_action_reaches_the_caller_and_leaves_no_workers(prefetch, new_workers):
    """BatchFlow bug: an exception in an action under prefetch deadlocked the run."""
    with pytest.raises(ActionError, match=r"`reg_fail_on\(13\)` failed on batch #3") as info:
        numbers().p.reg_inc().reg_fail_on(13).run(4, prefetch=prefetch)
    err = info.value
    assert err.step == "reg_fail_on(13)"
    assert err.position == 1
    assert err.batch_position == 3
    assert err.batch_indices.tolist() == [12, 13, 14, 15]
    assert isinstance(err.__cause__, ValueError)
    assert str(err.__cause__) == "cannot take item 13"
    assert "ValueError: cannot take item 13" in str(err)
    assert new_workers() == []


@pytest.mark.timeout(30)
def test_failing_action_under_prefetch_stops_gen_batch(new_workers):
    """BatchFlow bug: a failing batch under prefetch hung the consuming loop."""
    seen, workers = [], set()
    with pytest.raises(ActionError, match=r"failed on batch #5 \(epoch 0") as info:
        for batch in numbers().p.reg_fail_on(21).gen_batch(4, prefetch=4):
            seen.append(batch.indices.tolist())
            workers.update(prefetch_thread_names())
    assert seen == planned(N_ITEMS, 4)[:5]
    assert workers  # the run did use worker threads
    assert isinstance(info.value.__cause__, ValueError)
    assert new_workers() == []


@pytest.mark.timeout(30)
def test_failing_first_batch_under_prefetch_is_reported(new_workers):
    """BatchFlow bug: a failure on the very first prefetched batch was never raised."""
    with pytest.raises(ActionError, match=r"failed on batch #0 .*items: 0, 1, 2, 3\)") as info:
        numbers().p.reg_fail_on(0).run(4, prefetch=4, n_epochs=None, n_iters=100)
    assert info.value.batch_position == 0
    assert new_workers() == []


@pytest.mark.timeout(30)
def test_failing_locked_action_under_prefetch_is_reported(new_workers):
    """BatchFlow bug: a failure in a driver-side step under prefetch deadlocked the workers."""
    with pytest.raises(ActionError, match=r"`reg_locked_fail_on\(30\)` failed on batch #7"):
        numbers().p.reg_inc().reg_locked_fail_on(30).run(4, prefetch=4)
    assert new_workers() == []


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_failing_action_in_a_worker_process_reaches_the_caller():
    """BatchFlow bug: a failure in a worker process left the run waiting forever."""
    p = numbers().p.reg_inc().reg_fail_on(13)
    with pytest.raises(ActionError, match=r"`reg_fail_on\(13\)` failed on batch #3") as info:
        p.run(4, prefetch=4, executor="processes")
    err = info.value
    assert (err.step, err.position, err.batch_position) == ("reg_fail_on(13)", 1, 3)
    assert err.batch_indices.tolist() == [12, 13, 14, 15]
    assert type(err.__cause__) is ValueError and str(err.__cause__) == "cannot take item 13"


# -- 2. no hang at exit ----------------------------------------------------------------

EXIT_PRELUDE = """
import time
import numpy as np
from fpipe import Batch, Dataset, action

class RegExitNums(Batch):
    @action
    def slow(self):
        time.sleep(0.01)
        return self

ds = Dataset(10_000, RegExitNums, preloaded=np.arange(10_000))
p = ds.p.slow()
"""

EXIT_SCENARIOS = {
    "break": """
for batch in p.gen_batch(4, prefetch=4):
    break
print("done", flush=True)
""",
    "break-keeping-the-iterator": """
it = p.gen_batch(4, prefetch=4)
for batch in it:
    break
print("done", flush=True)
""",
    "closed-generator": """
gen = iter(p.gen_batch(4, prefetch=4))
next(gen)
gen.close()
print("done", flush=True)
""",
    "collected-generator": """
import gc
gen = iter(p.gen_batch(4, prefetch=4))
next(gen)
del gen
gc.collect()
print("done", flush=True)
""",
    "sys-exit-in-loop": """
import sys
for batch in p.gen_batch(4, prefetch=4):
    print("done", flush=True)
    sys.exit(0)
""",
}


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("scenario", sorted(EXIT_SCENARIOS))
def test_interpreter_exits_after_leaving_a_prefetching_loop(scenario):
    """BatchFlow bug: prefetch threads kept the interpreter from exiting after a `break`."""
    script = textwrap.dedent(EXIT_PRELUDE) + textwrap.dedent(EXIT_SCENARIOS[scenario])
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert done.stderr == ""


@pytest.mark.timeout(30)
def test_closing_after_a_break_stops_the_workers(new_workers):
    """BatchFlow bug: leaving a prefetching loop early left its threads blocked."""
    it = numbers().p.reg_inc().iterate(4, prefetch=4)
    first = next(it)
    assert prefetch_thread_names()
    it.close()
    assert first.indices.tolist() == [0, 1, 2, 3]
    assert new_workers() == []
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.timeout(30)
def test_keyboard_interrupt_in_the_loop_body_stops_the_workers(new_workers):
    """BatchFlow bug: Ctrl-C in the training loop left prefetch threads running."""
    ds = numbers()
    with pytest.raises(KeyboardInterrupt), ds.p.reg_inc().iterate(4, prefetch=4) as it:
        for _ in it:
            assert prefetch_thread_names()
            raise KeyboardInterrupt
    assert new_workers() == []


@pytest.mark.timeout(30)
def test_keyboard_interrupt_in_a_bare_loop_stops_the_workers(new_workers):
    """BatchFlow bug: Ctrl-C in a bare `for batch in gen_batch(...)` left threads blocked.

    No garbage collection is needed: the loop held the only reference to the iterator."""
    gc.disable()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in numbers().p.reg_inc().gen_batch(4, prefetch=4):
                assert prefetch_thread_names()
                raise KeyboardInterrupt
        assert new_workers() == []
    finally:
        gc.enable()


@pytest.mark.timeout(30)
def test_break_in_a_bare_loop_stops_the_workers_at_once(new_workers):
    """BatchFlow bug: leaving a prefetching loop early left its workers running."""
    gc.disable()
    try:
        for _ in numbers().p.reg_inc().gen_batch(4, prefetch=4):
            assert prefetch_thread_names()
            break
        assert new_workers() == []
    finally:
        gc.enable()


@pytest.mark.timeout(30)
def test_keyboard_interrupt_is_not_wrapped(new_workers):
    """BatchFlow bug: Ctrl-C inside an action surfaced as an ordinary action error."""

    def interrupt(batch):
        if 9 in batch.indices.tolist():
            raise KeyboardInterrupt
        return batch

    with pytest.raises(KeyboardInterrupt):
        numbers().p.apply(interrupt).run(4, prefetch=4)
    assert new_workers() == []


# -- 3. no stale batch after a skipped one ---------------------------------------------


SKIPPED = [5, 6, 22, 39]


def expected_after_skips(batch_size):
    return [b for b in planned(N_ITEMS, batch_size) if not set(b) & set(SKIPPED)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefetch", [0, 1, 4])
@pytest.mark.parametrize("step", ["reg_skip", "reg_locked_skip"])
def test_batch_after_a_skipped_one_is_the_next_planned(step, prefetch):
    """BatchFlow bug: after a skipped batch the previous output batch was yielded again."""
    p = numbers().p.reg_inc().action(step, SKIPPED).reg_inc()
    batches = list(p.gen_batch(4, prefetch=prefetch))
    got = [b.indices.tolist() for b in batches]
    assert got == expected_after_skips(4)
    assert [b.data.tolist() for b in batches] == [[i + 2 for i in b] for b in got]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefetch", [0, 4])
def test_skipped_batches_never_reach_later_steps_or_variables(prefetch):
    """BatchFlow bug: a skipped batch's stale predecessor was counted twice."""
    p = numbers().p.init_variable("seen", []).reg_skip(SKIPPED).reg_mark("seen")
    result = p.run(4, prefetch=prefetch)
    assert result.get_variable("seen") == expected_after_skips(4)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefetch", [0, 4])
def test_skip_before_a_rebatch_drops_only_the_skipped_items(prefetch):
    """BatchFlow bug: rebatch after a skipped batch regrouped stale items."""
    batches = list(numbers().p.reg_skip(SKIPPED).rebatch(6).gen_batch(4, prefetch=prefetch))
    kept = [i for b in expected_after_skips(4) for i in b]
    assert [b.indices.tolist() for b in batches] == [
        kept[i : i + 6] for i in range(0, len(kept), 6)
    ]


# -- 4. a lock is not leaked when a locked action fails --------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefetch", [0, 4])
def test_next_run_after_a_failed_locked_action_is_not_blocked(prefetch):
    """BatchFlow bug: a locked action that raised never released its lock."""
    failing = numbers().p.reg_locked_fail_on(9)
    with pytest.raises(ActionError, match=r"locked step cannot take item 9"):
        failing.run(4, prefetch=prefetch)
    fine = numbers().p.init_variable("seen", []).reg_locked_fail_on(-1).reg_mark("seen")
    assert fine.run(4, prefetch=prefetch).get_variable("seen") == planned(N_ITEMS, 4)
    with pytest.raises(ActionError, match=r"locked step cannot take item 9"):
        failing.run(4, prefetch=prefetch)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefetch", [0, 4])
def test_handled_failure_inside_a_lock_does_not_block_other_batches(prefetch):
    """BatchFlow bug: one batch failing inside a lock blocked every later batch of the run."""
    p = numbers().p.init_variable("seen", []).init_variable("handled", [])
    p = p.reg_guarded(9).reg_locked_skip([]).reg_mark("seen")
    result = p.run(4, prefetch=prefetch)
    assert result.get_variable("seen") == planned(N_ITEMS, 4)
    assert result.get_variable("handled") == [[8, 9, 10, 11]]  # the locked step did fail


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefetch", [0, 4])
def test_skip_inside_a_lock_releases_it(prefetch):
    """BatchFlow bug: leaving a locked action early kept its lock."""
    p = numbers().p.init_variable("seen", []).reg_locked_skip(SKIPPED).reg_locked_fail_on(-1)
    result = p.reg_mark("seen").run(4, prefetch=prefetch)
    assert result.get_variable("seen") == expected_after_skips(4)


@pytest.mark.timeout(30)
def test_next_batch_after_a_locked_failure_can_start_again():
    """BatchFlow bug: next_batch after a failed locked action waited for the lost lock."""
    p = numbers().p.reg_locked_fail_on(4)
    assert p.next_batch(4).indices.tolist() == [0, 1, 2, 3]
    with pytest.raises(ActionError, match="locked step cannot take item 4"):
        p.next_batch(4)
    p.reset()
    assert p.next_batch(4).indices.tolist() == [0, 1, 2, 3]


# -- 5. `p @ prob` does not mutate p ---------------------------------------------------


def test_matmul_does_not_change_the_pipeline():
    """BatchFlow bug: `p @ 0.5` set the probability on p itself."""
    p = numbers().p.reg_inc().reg_fail_on(-1)
    before = (repr(p), pickle.dumps(p), p.steps, hash(p))
    copy = pickle.loads(pickle.dumps(p))
    maybe = p @ 0.5
    assert p == copy
    assert (repr(p), pickle.dumps(p), p.steps, hash(p)) == before
    assert maybe != p
    assert "@ 0.5" in repr(maybe)
    assert "@" not in repr(p)
    assert [b.data.tolist() for b in p.gen_batch(20)] == [
        list(range(1, 21)),
        list(range(21, 41)),
    ]


def test_template_matmul_does_not_change_the_template():
    """BatchFlow bug: `template @ prob` changed every pipeline built from the template."""
    template = Pipeline().reg_inc()
    before = pickle.dumps(template)
    template @ 0.0
    assert pickle.dumps(template) == before
    linked = numbers(4) >> template
    assert [b.data.tolist() for b in linked.gen_batch(4)] == [[1, 2, 3, 4]]
    never = numbers(4) >> (template @ 0.0)
    assert [b.data.tolist() for b in never.gen_batch(4)] == [[0, 1, 2, 3]]


# -- 6. variables survive rebatch ------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefetch", [0, 4])
def test_variables_updated_before_and_after_rebatch_are_kept(prefetch):
    """BatchFlow bug: variables written before a rebatch were lost after it."""
    p = (
        numbers()
        .p.init_variable("before", [])
        .init_variable("after", [])
        .init_variable("size_before", 0)
        .init_variable("size_after", 0)
        .init_variable("last_before", None)
        .init_variable("last_after", None)
        .reg_mark("before")
        .reg_set("size_before")
        .update_variable("last_before", lambda b: int(b.indices[-1]))
        .rebatch(10)
        .reg_mark("after")
        .reg_set("size_after")
        .update_variable("last_after", lambda b: int(b.indices[-1]))
    )
    result = p.run(4, prefetch=prefetch)
    assert result.get_variable("before") == planned(N_ITEMS, 4)
    assert result.get_variable("after") == planned(N_ITEMS, 10)
    assert result.get_variable("size_before") == 4
    assert result.get_variable("size_after") == 10
    assert result.get_variable("last_before") == 39
    assert result.get_variable("last_after") == 39
    assert p.get_variable("before") == []


# -- 7. a fresh permutation per epoch --------------------------------------------------


def epoch_orders(seed, prefetch=0, n=20):
    ds = Dataset(n)
    batches = [
        b.indices.tolist() for b in ds.p.gen_batch(5, shuffle=seed, n_epochs=3, prefetch=prefetch)
    ]
    per_epoch = n // 5
    return [[i for b in batches[e * per_epoch : (e + 1) * per_epoch] for i in b] for e in range(3)]


@pytest.mark.parametrize("prefetch", [0, 4])
def test_each_epoch_has_its_own_permutation(prefetch):
    """BatchFlow bug: every epoch reused (or re-applied) the first epoch's permutation."""
    orders = epoch_orders(17, prefetch)
    for order in orders:
        assert sorted(order) == list(range(20))
    assert len({tuple(o) for o in orders}) == 3
    first = np.array(orders[0])
    # re-applying the first permutation to the previous order is not a fresh permutation
    assert orders[1] != first[first].tolist()
    assert orders[2] != np.array(orders[1])[first].tolist()
    assert orders[2] != first[first][first].tolist()


def test_epoch_orders_are_reproducible_for_a_seed():
    """BatchFlow bug: a seeded shuffle still changed from one run to the next."""
    assert epoch_orders(17) == epoch_orders(17) == epoch_orders(17, prefetch=4)
    assert epoch_orders(17) != epoch_orders(18)


def test_batches_are_freed_without_the_garbage_collector():
    """A batch and its run context must not form a cycle: else every batch (and its
    arrays) lives until the next garbage collection, and memory churns."""
    import weakref

    for p in (
        numbers().p.reg_skip([]),
        numbers().p.init_variable("m", []).reg_inc().reg_mark("m").reg_inc(),
    ):
        for prefetch in (0, 3):
            gc.collect()
            gc.disable()
            try:
                refs = []
                for b in p.gen_batch(4, seed=1, prefetch=prefetch):
                    refs.append(weakref.ref(b))
                    refs.append(weakref.ref(b.data.base if b.data.base is not None else b.data))
                del b
                assert refs and [r() for r in refs] == [None] * len(refs)
            finally:
                gc.enable()
