"""PipelineIterator: get_state()/state= resumption, refused states, close() and result()."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fpipe import (
    Batch,
    Dataset,
    FpipeError,
    IterState,
    Pipeline,
    ResumeError,
    SkipBatch,
    ThreadExecutor,
    action,
)
from fpipe.testing import assert_batches_equal, assert_resumable

N = 10
HERE = os.path.dirname(os.path.abspath(__file__))


class ItrItems(Batch):
    components = ("x", "noise")

    @action
    def jitter(self, scale=1.0):
        return self.replace(noise=self.random.normal(scale=scale, size=len(self)))

    @action
    def double(self):
        return self.replace(x=self.x * 2)

    @action
    def skip_odd_first(self):
        if int(self.indices[0]) % 2:
            raise SkipBatch
        return self

    @action
    def total(self):
        self.pipeline.update_variable("sum", float(self.x.sum()), mode="a")
        return self


def dataset(n=N):
    return Dataset(n, ItrItems, preloaded={"x": np.arange(n, dtype=np.float64)})


def pipeline():
    """The pipeline the subprocess test rebuilds in a fresh interpreter."""
    return dataset().p.double().jitter(0.5)


def fingerprints(batches):
    return [
        (b.indices.tolist(), b.x.tolist(), None if b.noise is None else b.noise.tolist())
        for b in batches
    ]


def take(it, k):
    return [next(it) for _ in range(k)]


# -- resuming in-process ---------------------------------------------------------------------


def test_get_state_before_any_batch_is_the_initial_state():
    it = pipeline().iterate(3, seed=4)
    st = it.get_state()
    assert (st.seed, st.epoch, st.batch_in_epoch, st.iteration) == (4, 0, 0, 0)
    it.close()


def test_state_counts_the_batches_handed_out():
    with pipeline().iterate(3, n_epochs=2, seed=4) as it:
        take(it, 5)
        st = it.get_state()
    assert (st.epoch, st.batch_in_epoch, st.iteration) == (1, 1, 5)


def test_resuming_yields_exactly_the_batches_that_came_next():
    p = pipeline()
    with p.iterate(3, shuffle=True, n_epochs=2, seed=9) as it:
        take(it, 3)
        state = it.get_state()
        rest = list(it)
    with p.iterate(3, shuffle=True, n_epochs=2, seed=9, state=state) as again:
        resumed = list(again)
    assert len(rest) == 5
    for want, got in zip(rest, resumed, strict=True):
        assert_batches_equal(want, got)


def test_resuming_from_a_dict_state_works_like_the_state():
    p = pipeline()
    with p.iterate(4, seed=2) as it:
        next(it)
        state = it.get_state()
        rest = fingerprints(it)
    with p.iterate(4, seed=2, state=json.loads(json.dumps(state.to_dict()))) as again:
        assert fingerprints(again) == rest


def test_the_state_seed_wins_over_a_seed_given_again():
    p = pipeline()
    with p.iterate(4, shuffle=True, n_epochs=2, seed=2) as it:
        next(it)
        state = it.get_state()
        rest = fingerprints(it)
    for other in (None, 77):
        with p.iterate(4, shuffle=True, n_epochs=2, seed=other, state=state) as again:
            assert again.seed == 2
            assert fingerprints(again) == rest


def test_resuming_at_an_epoch_boundary_starts_the_next_epoch():
    p = pipeline()
    with p.iterate(5, shuffle=True, n_epochs=3, seed=1) as it:
        take(it, 2)
        state = it.get_state()
        rest = list(it)
    assert (state.epoch, state.batch_in_epoch) == (0, 2)
    with p.iterate(5, shuffle=True, n_epochs=3, seed=1, state=state) as again:
        first = next(again)
        assert again.get_state().epoch == 1
        assert_batches_equal(rest[0], first)
        assert fingerprints(again) == fingerprints(rest[1:])


def test_a_state_after_the_last_batch_resumes_to_nothing():
    p = pipeline()
    with p.iterate(4, seed=3) as it:
        list(it)
        state = it.get_state()
    with p.iterate(4, seed=3, state=state) as again:
        assert list(again) == []


def test_resuming_with_n_iters_stops_at_the_same_total():
    p = pipeline()
    with p.iterate(4, n_iters=7, shuffle=True, seed=3) as it:
        take(it, 4)
        state = it.get_state()
    with p.iterate(4, n_iters=7, shuffle=True, seed=3, state=state) as again:
        assert len(list(again)) == 3
        assert again.get_state().iteration == 7


@pytest.mark.parametrize("prefetch", [1, 3, 8])
def test_prefetch_gives_the_same_states_as_a_sequential_run(prefetch):
    p = pipeline()
    kwargs = {"shuffle": True, "n_epochs": 2, "seed": 5}
    with p.iterate(3, **kwargs) as seq, p.iterate(3, prefetch=prefetch, **kwargs) as pre:
        for _ in range(8):
            assert_batches_equal(next(seq), next(pre))
            assert pre.get_state() == seq.get_state()


def test_a_state_from_a_prefetching_run_resumes_a_sequential_one():
    p = pipeline()
    with p.iterate(3, prefetch=4, n_epochs=2, seed=6) as it:
        take(it, 3)
        state = it.get_state()
        rest = fingerprints(it)
    with p.iterate(3, n_epochs=2, seed=6, state=state) as again:
        assert fingerprints(again) == rest


def test_a_resumed_run_with_skipped_batches_continues_after_the_skips():
    p = dataset().p.skip_odd_first().double()
    with p.iterate(3, n_epochs=2, seed=1) as it:
        got = fingerprints(it)
    assert [ids[0] % 2 for ids, *_ in got] == [0] * len(got)
    assert assert_resumable(p, 3, n_epochs=2, seed=1) == len(got)


# -- assert_resumable over typical pipelines -------------------------------------------------


def test_a_plain_pipeline_is_resumable_at_every_position():
    assert assert_resumable(dataset().p.double(), 3) == 4


def test_a_shuffled_multi_epoch_random_pipeline_is_resumable():
    assert assert_resumable(pipeline(), 4, shuffle=True, n_epochs=3, seed=8) == 9


def test_a_drop_last_pipeline_is_resumable():
    assert assert_resumable(pipeline(), 4, shuffle=3, n_epochs=2, drop_last=True) == 4


def test_an_n_iters_pipeline_is_resumable():
    assert assert_resumable(pipeline(), 3, shuffle=True, n_iters=6, seed=2) == 6


def test_a_prefetching_pipeline_with_a_maybe_step_is_resumable():
    p = dataset().p.double() + (Pipeline().jitter() @ 0.5)
    assert assert_resumable(p, 2, shuffle=True, n_epochs=2, seed=4, prefetch=2) == 10


def test_a_pipeline_on_a_thread_executor_is_resumable():
    assert assert_resumable(pipeline(), 3, n_epochs=2, seed=4, executor=ThreadExecutor(2)) == 8


@pytest.mark.parametrize(
    "regroup",
    [
        lambda p: p.rebatch(4),
        lambda p: p.rebatch(5).jitter(),
        lambda p: p.rebatch(7).jitter().rebatch(2),
        lambda p: p.skip_odd_first().rebatch(4).jitter(),
    ],
    ids=["rebatch", "rebatch then a random step", "two rebatches", "skips before rebatch"],
)
@pytest.mark.parametrize("prefetch", [0, 3])
def test_a_rebatch_pipeline_is_resumable_at_every_position(regroup, prefetch):
    p = regroup(pipeline())
    assert assert_resumable(p, 3, shuffle=True, n_epochs=2, seed=6, prefetch=prefetch) > 0


def test_a_rebatch_state_carries_the_held_items_and_stays_json_able():
    with pipeline().rebatch(4).iterate(3, seed=1) as it:
        first = next(it)  # 4 items out of two input batches of 3: 2 items are held
        state = it.get_state()
        second = next(it)
    ((held, produced),) = state.carry
    assert produced == 1 and sum(len(b) for b in held) == 2
    assert [b._ctx for b in held] == [None] * len(held)  # no run context in a state
    copy = IterState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert copy == state
    with pipeline().rebatch(4).iterate(3, seed=1, state=copy) as resumed:
        again = next(resumed)
    assert_batches_equal(second, again)
    assert first.indices.tolist() == [0, 1, 2, 3] and again.indices.tolist() == [4, 5, 6, 7]


def test_a_state_with_held_items_is_refused_by_another_pipeline():
    with pipeline().rebatch(4).iterate(3, seed=1) as it:
        next(it)
        state = it.get_state()
    with pytest.raises(ResumeError, match="belongs to another pipeline"):
        pipeline().rebatch(5).iterate(3, seed=1, state=state)


# -- refused states --------------------------------------------------------------------------


def saved_state():
    with pipeline().iterate(3, seed=1) as it:
        next(it)
        return it.get_state()


ANOTHER_RUN = "this iteration state belongs to another pipeline, dataset or batching plan"


@pytest.mark.parametrize(
    "other",
    [
        lambda: pipeline().iterate(4, seed=1, state=saved_state()),  # batch_size
        lambda: pipeline().iterate(3, shuffle=True, seed=1, state=saved_state()),  # shuffle
        lambda: pipeline().iterate(3, n_epochs=2, seed=1, state=saved_state()),  # epochs
        lambda: pipeline().double().iterate(3, seed=1, state=saved_state()),  # steps
        lambda: dataset().p.double().jitter(0.7).iterate(3, seed=1, state=saved_state()),  # args
        lambda: dataset(11).p.double().jitter(0.5).iterate(3, seed=1, state=saved_state()),
        lambda: (
            Dataset(np.arange(1, 11), ItrItems, preloaded={"x": np.zeros(N)})
            .p.double()
            .jitter(0.5)
            .iterate(3, seed=1, state=saved_state())
        ),  # other item ids
    ],
    ids=["batch_size", "shuffle", "n_epochs", "steps", "arguments", "size", "ids"],
)
def test_a_state_from_another_run_is_refused(other):
    with pytest.raises(ResumeError, match=ANOTHER_RUN):
        other()


def test_the_refusal_says_what_must_match():
    with pytest.raises(ResumeError, match="batch_size, shuffle kind, drop_last, n_epochs"):
        pipeline().iterate(5, seed=1, state=saved_state())


def test_a_state_of_the_wrong_type_is_refused():
    with pytest.raises(ResumeError, match="state must be an IterState or its dict, not"):
        pipeline().iterate(3, state=[0, 0, 0])


def test_a_malformed_state_dict_is_refused():
    d = saved_state().to_dict()
    d["epoch"] = -1
    with pytest.raises(ValueError, match="IterState 'epoch' must be a non-negative int"):
        pipeline().iterate(3, state=d)
    d = saved_state().to_dict()
    d["epok"] = d.pop("epoch")
    with pytest.raises(ValueError, match=r"unknown IterState key.*Did you mean 'epoch'"):
        pipeline().iterate(3, state=d)


def test_a_state_past_the_end_of_an_epoch_is_refused():
    st = saved_state()
    bad = IterState(st.seed, 0, 99, 99, st.fingerprint)
    with pytest.raises(ResumeError, match="is inconsistent with this plan"):
        list(pipeline().iterate(3, seed=1, state=bad))


# -- a new process ---------------------------------------------------------------------------

CHILD = """
import json, pickle, sys
import numpy as np
sys.path.insert(0, {here!r})
from test_iterator import pipeline
from fpipe import IterState
path, how, out = sys.argv[1:]
if how == "pickle":
    with open(path, "rb") as f:
        state = pickle.load(f)
else:
    with open(path) as f:
        state = IterState.from_dict(json.load(f))
with pipeline().iterate(3, shuffle=True, n_epochs=2, state=state) as it:
    batches = list(it)
np.savez(out, **{{f"{{k}}_{{i}}": getattr(b, k) for i, b in enumerate(batches)
                  for k in ("indices", "x", "noise")}}, n=len(batches))
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["pickle", "json"])
def test_a_state_resumes_in_a_new_process(tmp_path, how):
    with pipeline().iterate(3, shuffle=True, n_epochs=2) as it:  # unseeded: the state has it
        take(it, 2)
        state = it.get_state()
        rest = list(it)
    path = tmp_path / "state"
    if how == "pickle":
        path.write_bytes(pickle.dumps(state))
    else:
        path.write_text(json.dumps(state.to_dict()))
    out = tmp_path / "out.npz"
    script = CHILD.format(here=HERE)
    subprocess.run([sys.executable, "-c", script, str(path), how, str(out)], check=True)
    got = np.load(out)
    assert int(got["n"]) == len(rest) == 6
    for i, b in enumerate(rest):
        for k in ("indices", "x", "noise"):
            np.testing.assert_array_equal(got[f"{k}_{i}"], getattr(b, k), strict=True)


# -- close() and result() --------------------------------------------------------------------


def fpipe_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fpipe-")]


def wait_for_no_fpipe_threads():
    for _ in range(100):  # a shut-down pool's threads may take a moment to leave enumerate()
        if not fpipe_threads():
            return
        time.sleep(0.01)
    raise AssertionError(f"threads left running: {fpipe_threads()}")


@pytest.mark.timeout(30)
def test_close_stops_the_prefetch_workers():
    wait_for_no_fpipe_threads()
    it = pipeline().iterate(2, n_epochs=50, prefetch=3, seed=1)
    next(it)
    assert any(t.name.startswith("fpipe-prefetch") for t in fpipe_threads())
    it.close()
    wait_for_no_fpipe_threads()
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.timeout(30)
def test_leaving_a_with_block_stops_the_workers():
    wait_for_no_fpipe_threads()
    with pipeline().iterate(2, n_epochs=50, executor=ThreadExecutor(2), seed=1) as it:
        next(it)
    wait_for_no_fpipe_threads()


def test_result_holds_the_variables_of_the_run():
    p = dataset().p.init_variable("sum", []).total()
    with p.iterate(4) as it:
        list(it)
        result = it.result()
    assert result.get_variable("sum") == [6.0, 22.0, 17.0]
    assert p.get_variable("sum") == []  # the template pipeline is untouched


def test_result_midway_holds_the_variables_so_far_and_env_matches():
    p = dataset().p.init_variable("sum", []).total()
    with p.iterate(4) as it:
        next(it)
        assert it.result().get_variable("sum") == [6.0]
        assert it.env.get_variable("sum") == [6.0]


def test_a_pipeline_without_a_dataset_cannot_iterate():
    with pytest.raises(FpipeError, match="this pipeline has no dataset"):
        Pipeline().double().iterate(3)
