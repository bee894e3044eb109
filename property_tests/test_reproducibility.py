"""Random pipelines of random actions give bit-identical runs for any prefetch or executor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpipe import (
    Batch,
    Dataset,
    Pipeline,
    ProcessExecutor,
    SkipBatch,
    ThreadExecutor,
    action,
    inbatch_parallel,
)
from fpipe.testing import assert_batches_equal, assert_resumable


class ReproItems(Batch):
    components = ("x", "y")

    @action
    def noise(self, scale):
        return self.replace(x=self.x + self.random.normal(scale=scale, size=len(self)))

    @action
    def rescale(self):
        return self.replace(x=self.x * self.random.uniform(0.5, 2.0))

    @action
    def dropout(self, p):
        return self.replace(x=np.where(self.random.random(len(self)) < p, 0.0, self.x))

    @action
    def shuffle_items(self):
        return self.select(self.random.permutation(len(self)))

    @action
    def label(self):
        return self.replace(y=self.random.integers(0, 10, size=len(self)))

    @action
    def square(self):
        return self.replace(x=self.x * self.x)

    @action
    def maybe_skip(self, p):
        if self.random.random() < p:
            raise SkipBatch
        return self

    @action
    @inbatch_parallel(init="indices", post="_gather", target="threads")
    def per_item(self, item_id, rng):
        return float(rng.normal()) + item_id

    def _gather(self, results):
        return self.replace(y=np.array(results))

    @action
    def reduce_sum(self):
        """Touches the environment: runs on the driver, in batch order."""
        self.pipeline.update_variable("sums", float(self.x.sum()), mode="a")
        return self

    @action
    def reduce_draw(self):
        self.pipeline.update_variable("draws", float(self.random.random()), mode="a")
        return self


ACTIONS = st.one_of(
    st.tuples(st.just("noise"), st.floats(0.1, 3.0)),
    st.tuples(st.just("rescale")),
    st.tuples(st.just("dropout"), st.floats(0.0, 1.0)),
    st.tuples(st.just("shuffle_items")),
    st.tuples(st.just("label")),
    st.tuples(st.just("square")),
    st.tuples(st.just("maybe_skip"), st.floats(0.0, 0.5)),
    st.tuples(st.just("per_item")),
    st.tuples(st.just("reduce_sum")),
    st.tuples(st.just("reduce_draw")),
)
# a step: an action, optionally wrapped as `Pipeline().action() @ prob`
STEPS = st.tuples(ACTIONS, st.one_of(st.none(), st.floats(0.0, 1.0)))


@st.composite
def runs(draw, max_items=24):
    """(pipeline, run arguments): a random pipeline over a small dataset and a seeded plan."""
    n = draw(st.integers(2, max_items))
    x = np.arange(n, dtype=np.float64) - n / 2
    p = Dataset(n, ReproItems, preloaded={"x": x}).p
    p = p.init_variable("sums", []).init_variable("draws", [])
    for (name, *args), prob in draw(st.lists(STEPS, min_size=1, max_size=6)):
        step = getattr(Pipeline(), name)(*args)
        p = p + (step if prob is None else step @ prob)
    p = p.reduce_sum()  # always reduce something, after all the random steps
    seed = draw(st.integers(0, 2**63 - 1))
    shuffle = draw(st.sampled_from([False, True, "seed"]))
    kwargs = {
        "n_epochs": draw(st.integers(1, 2)),
        "drop_last": draw(st.booleans()),
        **({"shuffle": seed} if shuffle == "seed" else {"shuffle": shuffle, "seed": seed}),
    }
    return p, draw(st.integers(1, n)), kwargs


def outcome(pipeline, batch_size, **kwargs):
    """The output batches and the variables the run reduced, in order."""
    with pipeline.iterate(batch_size, **kwargs) as it:
        batches = list(it)
        result = it.result()
    return batches, result.get_variable("sums"), result.get_variable("draws")


def assert_same_outcome(expected, got, how):
    batches, sums, draws = expected
    assert len(got[0]) == len(batches), f"{how}: {len(got[0])} batches, expected {len(batches)}"
    for k, (want, have) in enumerate(zip(batches, got[0], strict=True)):
        assert_batches_equal(want, have, f"{how}, batch {k}")
    assert got[1] == sums, how
    assert got[2] == draws, how


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@pytest.mark.slow
@settings(max_examples=30, **SETTINGS)
@given(runs())
def test_a_seeded_run_is_the_same_for_every_prefetch(run):
    pipeline, batch_size, kwargs = run
    reference = outcome(pipeline, batch_size, **kwargs)
    for prefetch in range(1, 9):
        got = outcome(pipeline, batch_size, prefetch=prefetch, **kwargs)
        assert_same_outcome(reference, got, f"prefetch={prefetch}")


@settings(max_examples=20, **SETTINGS)
@given(runs(), st.integers(1, 4))
def test_a_seeded_run_is_the_same_on_a_thread_executor(run, workers):
    pipeline, batch_size, kwargs = run
    reference = outcome(pipeline, batch_size, **kwargs)
    got = outcome(pipeline, batch_size, executor=ThreadExecutor(workers), **kwargs)
    assert_same_outcome(reference, got, f"ThreadExecutor({workers})")


@settings(max_examples=20, **SETTINGS)
@given(runs())
def test_a_seeded_run_repeats_bit_for_bit(run):
    pipeline, batch_size, kwargs = run
    reference = outcome(pipeline, batch_size, **kwargs)
    assert_same_outcome(reference, outcome(pipeline, batch_size, **kwargs), "repeated")


@settings(max_examples=10, **SETTINGS)
@given(runs(max_items=10))
def test_a_random_pipeline_resumes_exactly_at_every_position(run):
    pipeline, batch_size, kwargs = run
    assert assert_resumable(pipeline, batch_size, **kwargs) >= 0


@pytest.mark.slow
@pytest.mark.timeout(300)
@settings(max_examples=4, **SETTINGS)
@given(runs(max_items=16))
def test_a_seeded_run_is_the_same_on_a_process_executor(run):
    pipeline, batch_size, kwargs = run
    reference = outcome(pipeline, batch_size, **kwargs)
    got = outcome(pipeline, batch_size, executor=ProcessExecutor(2), **kwargs)
    assert_same_outcome(reference, got, "ProcessExecutor(2)")


@pytest.mark.dask
@pytest.mark.slow
@pytest.mark.timeout(300)
@settings(max_examples=6, **SETTINGS)
@given(runs(max_items=16))
def test_a_seeded_run_is_the_same_on_a_dask_cluster(dask_client, run):
    pipeline, batch_size, kwargs = run
    reference = outcome(pipeline, batch_size, **kwargs)
    got = outcome(pipeline, batch_size, executor=dask_client, **kwargs)
    assert_same_outcome(reference, got, "Dask LocalCluster(2 workers)")
