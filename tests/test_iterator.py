"""PipelineIterator: get_state()/state= resumption, refused states, close() and result()."""

from __future__ import annotations

import json
import os
import pickle
import re
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


def test_the_state_seed_is_used_when_no_seed_is_given_again():
    p = pipeline()
    with p.iterate(4, shuffle=True, n_epochs=2, seed=2) as it:
        next(it)
        state = it.get_state()
        rest = fingerprints(it)
    for same in ({}, {"seed": 2}):
        with p.iterate(4, shuffle=True, n_epochs=2, state=state, **same) as again:
            assert again.seed == 2
            assert fingerprints(again) == rest


def test_an_explicit_seed_that_differs_from_the_state_is_refused():
    with pipeline().iterate(4, shuffle=True, seed=2) as it:
        next(it)
        state = it.get_state()
    with pytest.raises(
        ResumeError, match=r"seed=77 was given, but the state was saved with seed=2"
    ):
        pipeline().iterate(4, shuffle=True, seed=77, state=state)


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


def test_a_rebatch_state_is_plain_json_and_holds_no_items():
    with pipeline().rebatch(4).iterate(3, seed=1) as it:
        first = next(it)  # 4 items out of two input batches of 3: 2 items are held
        state = it.get_state()
        second = next(it)
    d = state.to_dict()
    # the held items are not in the state: where they came from is
    assert d["produced"] == [1]
    assert d["position"] == {
        "from": {"epoch": 0, "batch_in_epoch": 1, "iteration": 1},
        "skip": 1,
        "produced": 1,
    }
    assert json.loads(json.dumps(d)) == d
    copy = IterState.from_dict(json.loads(json.dumps(d)))
    assert copy == state
    with pipeline().rebatch(4).iterate(3, seed=1, state=copy) as resumed:
        again = next(resumed)
    assert_batches_equal(second, again)
    assert first.indices.tolist() == [0, 1, 2, 3] and again.indices.tolist() == [4, 5, 6, 7]


def test_a_rebatch_state_is_refused_by_another_pipeline():
    with pipeline().rebatch(4).iterate(3, seed=1) as it:
        next(it)
        state = it.get_state()
    with pytest.raises(ResumeError, match=r"step 2: rebatch\(4\) vs rebatch\(5\)"):
        pipeline().rebatch(5).iterate(3, seed=1, state=state)


def test_effects_before_a_rebatch_are_not_applied_twice_on_resume():
    p = dataset().p.init_variable("sum", []).total().rebatch(4)
    with p.iterate(3, seed=1) as it:
        next(it)
        state, env = it.get_state(), it.env
        rest = [b.indices.tolist() for b in it]
        final = it.get_variable("sum")
    with p._iterator(p._run_args((3,), {"seed": 1}), state=state, restore=env) as again:
        assert [b.indices.tolist() for b in again] == rest
        # the two source batches the rebatch held were made again, with a replica of
        # the run: their sums are counted once
        assert again.get_variable("sum") == final


def test_merge_resumes_where_each_merged_source_stands():
    # the case: resumed batch 2 must be [6,7,8,106,107,108], not [6,7,8,100,...]
    other = Dataset(np.arange(100, 130), ItrItems, preloaded={"x": np.zeros(30)}).p
    p = dataset(12).p.merge(other)
    with p.iterate(3, seed=0) as it:
        next(it), next(it)
        state = it.get_state()
        third = next(it)
    assert third.indices.tolist() == [6, 7, 8, 106, 107, 108]
    with p.iterate(3, seed=0, state=json.loads(json.dumps(state.to_dict()))) as again:
        assert next(again).indices.tolist() == [6, 7, 8, 106, 107, 108]
    assert list(state.position["merges"]) == ["0.0"]


# -- refused states --------------------------------------------------------------------------


def saved_state():
    with pipeline().iterate(3, seed=1) as it:
        next(it)
        return it.get_state()


ANOTHER_RUN = "this state comes from a run that makes different batches"


@pytest.mark.parametrize(
    ("other", "difference"),
    [
        (lambda: pipeline().iterate(4, seed=1, state=saved_state()), "plan batch_size: 3 vs 4"),
        (
            lambda: pipeline().iterate(3, shuffle=True, seed=1, state=saved_state()),
            "plan shuffle: 'ordered' vs 'shuffled'",
        ),
        (
            lambda: pipeline().iterate(3, n_epochs=2, seed=1, state=saved_state()),
            "plan n_epochs: 1 vs 2",
        ),
        (
            lambda: pipeline().double().iterate(3, seed=1, state=saved_state()),
            r"step 2: double\(\) is new",
        ),
        (
            lambda: dataset().p.double().jitter(0.7).iterate(3, seed=1, state=saved_state()),
            r"step 1: jitter\(0.5\) vs jitter\(0.7\)",
        ),
        (
            lambda: dataset(11).p.double().jitter(0.5).iterate(3, seed=1, state=saved_state()),
            "plan n_items: 10 vs 11",
        ),
        (
            lambda: (
                Dataset(np.arange(1, 11), ItrItems, preloaded={"x": np.zeros(N)})
                .p.double()
                .jitter(0.5)
                .iterate(3, seed=1, state=saved_state())
            ),
            "dataset contents differ",
        ),
        (
            lambda: (
                Dataset(N, ItrItems, preloaded={"x": np.arange(N) + 1.0})
                .p.double()
                .jitter(0.5)
                .iterate(3, seed=1, state=saved_state())
            ),
            "dataset contents differ",
        ),
        (
            lambda: (pipeline() << {"lr": 0.2}).iterate(3, seed=1, state=saved_state()),
            "config 'lr': missing vs 0.2",
        ),
    ],
    ids=[
        "batch_size",
        "shuffle",
        "n_epochs",
        "steps",
        "arguments",
        "size",
        "ids",
        "data",
        "config",
    ],
)
def test_a_state_from_another_run_is_refused_saying_what_differs(other, difference):
    with pytest.raises(ResumeError, match=ANOTHER_RUN) as info:
        other()
    assert re.search(difference, str(info.value)), str(info.value)
    assert "start afresh without `state=`" in str(info.value)


def test_array_arguments_closures_and_config_values_are_told_apart():
    class Scale(Batch):
        components = ("x",)

        @action
        def scale(self, k):
            return self.replace(x=self.x * k)

    ds = Dataset(4, Scale, preloaded={"x": np.ones(4)})

    def refused(a, b):
        with a.iterate(2, seed=0) as it:
            next(it)
            state = it.get_state()
        with pytest.raises(ResumeError) as info:
            b.iterate(2, seed=0, state=state)
        return str(info.value)

    text = refused(ds.p.scale(np.ones(1)), ds.p.scale(np.full(1, 2.0)))
    assert "step 0: scale(<array 1.0>) vs scale(<array 2.0>)" in text
    k = [1.0]
    first = ds.p.apply(lambda b: b.replace(x=b.x * k[0]))
    k2 = [3.0]
    second = ds.p.apply(lambda b: b.replace(x=b.x * k2[0]))
    assert "step 0" in refused(first, second)
    assert "config 'lr': 0.1 vs 0.2" in refused(ds.p << {"lr": 0.1}, ds.p << {"lr": 0.2})


def test_a_state_of_the_wrong_type_is_refused():
    with pytest.raises(ResumeError, match="state must be an IterState or the dict of one"):
        pipeline().iterate(3, state=[0, 0, 0])


def test_a_malformed_state_dict_is_refused():
    d = saved_state().to_dict()
    d["epoch"] = -1
    with pytest.raises(ResumeError, match="IterState 'epoch' must be a non-negative int"):
        pipeline().iterate(3, state=d)
    d = saved_state().to_dict()
    d["epok"] = d.pop("epoch")
    with pytest.raises(ResumeError, match=r"unknown IterState key.*Did you mean 'epoch'"):
        pipeline().iterate(3, state=d)


def _tampered(**change):
    st = saved_state()
    fields = {**st.__dict__, **change}
    return IterState(**fields)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_in_epoch": 99, "iteration": 99}, "position is inconsistent"),
        ({"iteration": 3}, "position is inconsistent"),  # epoch 0, batch 1 is iteration 1
        ({"epoch": 5, "batch_in_epoch": 0, "iteration": 20}, "past the end of this run"),
        ({"produced": (1,)}, "records 1 rebatch stage"),
        ({"fingerprint": "0" * 32}, "makes different batches"),
    ],
    ids=["past an epoch", "iteration", "past the end", "stages", "fingerprint"],
)
def test_a_tampered_state_is_refused(change, message):
    with pytest.raises(ResumeError, match=message):
        pipeline().iterate(3, seed=1, state=_tampered(**change))


def test_a_tampered_rebatch_position_is_refused():
    p = pipeline().rebatch(4)
    with p.iterate(3, seed=1) as it:
        next(it)
        d = it.get_state().to_dict()
    future = json.loads(json.dumps(d))
    future["position"]["from"]["iteration"] = 3
    future["position"]["from"]["batch_in_epoch"] = 3
    with pytest.raises(ResumeError, match="after its present iteration"):
        p.iterate(3, seed=1, state=future)
    skip = json.loads(json.dumps(d))
    skip["position"]["skip"] = 3
    with pytest.raises(ResumeError, match="had handed out 3 items of a batch of 3"):
        next(p.iterate(3, seed=1, state=skip))
    flat = json.loads(json.dumps(d))
    flat["position"] = flat["position"]["from"]
    with pytest.raises(ResumeError, match="wrong number of nested stages"):
        p.iterate(3, seed=1, state=flat)


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


def test_the_dataset_is_hashed_only_when_a_state_is_taken_or_checked(monkeypatch):
    import fpipe.fingerprint

    calls = []
    real = fpipe.fingerprint.dataset_digest
    monkeypatch.setattr(
        fpipe.fingerprint, "dataset_digest", lambda ds: calls.append(ds) or real(ds)
    )
    p = pipeline()
    with p.iterate(3, seed=1) as it:
        list(it)
    assert calls == []
    with p.iterate(3, seed=1) as it:
        next(it)
        state = it.get_state()
        it.get_state()
    assert len(calls) == 1  # once per run, however many states are taken
    p.iterate(3, seed=1, state=state).close()
    assert len(calls) == 2
