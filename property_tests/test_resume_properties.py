"""Resume anywhere: a run resumed from any state makes exactly the batches that came next.

Random pipelines combine a random step, ``SkipBatch``, ``rebatch`` (up to two, with
and without a merge_fn), ``join`` with a dataset and ``merge`` with a pipeline, under
any prefetch before and after the state was taken. The state goes through JSON on the
way, as a saved one would. With the environment restored (as a ``Checkpoint`` does),
the resumed run also ends with the uninterrupted run's variables: effects on batches
a rebatch held are not applied twice.

Marked ``slow``: CI runs it in its second pass with 300 examples (scripts/test.sh).
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_lose_nothing import budget

from fpipe import Batch, Dataset, SkipBatch, action


class Hop(Batch):
    components = ("x", "noise", "extra")

    @action
    def jitter(self):
        return self.replace(noise=self.random.normal(size=len(self)))

    @action
    def skip_if_first_in(self, ids):
        if int(self.indices[0]) in ids:
            raise SkipBatch
        return self

    @action
    def absorb(self, other):
        return self.replace(extra=other.x * 10)

    @action
    def count(self):
        self.pipeline.update_variable("seen", self.indices.tolist(), mode="e")
        return self


def hops(ids):
    ids = np.asarray(ids, dtype=np.int64)
    return Dataset(ids, Hop, preloaded={"x": ids * 1.5})


def concat(parts):
    return functools.reduce(lambda a, b: Hop.merge([a, b]), parts)


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 24))
    ds = hops(np.arange(n))
    p = ds.p.init_variable("seen", [])
    jittered, joined = draw(st.booleans()), draw(st.booleans())
    if jittered:
        p = p.jitter()
    if draw(st.booleans()):
        p = p.skip_if_first_in(tuple(draw(st.sets(st.integers(0, n - 1), max_size=3))))
    if joined:
        p = p.join(hops(np.arange(n))).absorb()
    if draw(st.booleans()):
        p = p.count()
    if draw(st.booleans()):
        # the merged batches must have the components the pipeline's batches have
        m = draw(st.integers(n, n + 9))  # a merge source streams batches of the same size
        source = hops(100 + np.arange(m)).p
        if jittered:
            source = source.jitter()
        if joined:
            source = source.join(hops(100 + np.arange(m))).absorb()
        p = p.merge(source)
    for _ in range(draw(st.integers(0, 2))):
        p = p.rebatch(draw(st.integers(1, 7)), merge_fn=draw(st.sampled_from([None, concat])))
        if draw(st.booleans()):
            p = p.jitter()
        if draw(st.booleans()):
            p = p.count()
    bs = draw(st.integers(1, n))
    kwargs = {
        "shuffle": draw(st.booleans()),
        "n_epochs": draw(st.integers(1, 2)),
        "drop_last": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32)),
    }
    before, after = draw(st.sampled_from([0, 2])), draw(st.sampled_from([0, 3]))
    return p, bs, kwargs, before, after


def snapshot(batch):
    return (batch.indices.tolist(), batch.x.tolist(), np.asarray(batch.noise).tolist())


@pytest.mark.slow
@budget(300, quick=30)
@given(scenarios(), st.data())
def test_resuming_at_any_position_gives_the_uninterrupted_run(scenario, data):
    p, bs, kwargs, before, after = scenario
    with p.iterate(bs, **kwargs) as it:
        whole = [snapshot(b) for b in it]
        final = it.get_variable("seen")
    n = len(whole)
    positions = (
        range(n + 1)
        if n <= 8
        else sorted(data.draw(st.sets(st.integers(0, n), min_size=3, max_size=3)))
    )
    for k in positions:
        with p.iterate(bs, prefetch=before, **kwargs) as it:
            for _ in range(k):
                next(it)
            state = json.loads(json.dumps(it.get_state().to_dict()))
            env = it.env
        params = p._run_args((bs,), {**kwargs, "prefetch": after})
        params["seed"] = None  # the state brings its seed
        with p._iterator(params, state=state, restore=env) as again:
            rest = [snapshot(b) for b in again]
            assert rest == whole[k:], f"resumed after {k} of {n} batches"
            assert again.get_variable("seen") == final
