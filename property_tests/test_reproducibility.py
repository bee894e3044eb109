"""Random pipelines of random actions give bit-identical runs for any prefetch or executor.

The pipelines and datasets come from fpipe.testing's public strategies, and every
comparison is its ``assert_deterministic``: the machinery users test their own pipelines
with.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpipe import Batch, ProcessExecutor, SkipBatch, ThreadExecutor, action, inbatch_parallel
from fpipe.testing import assert_deterministic, assert_resumable, datasets, pipelines


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


# every action, with strategies for its arguments
ACTIONS = {
    "noise": {"scale": st.floats(0.1, 3.0)},
    "rescale": {},
    "dropout": {"p": st.floats(0.0, 1.0)},
    "shuffle_items": {},
    "label": {},
    "square": {},
    "maybe_skip": {"p": st.floats(0.0, 0.5)},
    "per_item": {},
    "reduce_sum": {},
    "reduce_draw": {},
}
# 1 to 6 steps, groups of them run `@ prob` (any probability) or `* 0` / `* 1` (at most six
# squares: the values stay finite)
STEPS = pipelines(ReproItems, ACTIONS, max_steps=6, repeats=st.integers(0, 1))


@st.composite
def runs(draw, max_items=24):
    """(pipeline, batch size, run arguments): a random pipeline over a small dataset and a
    seeded plan."""
    sizes = st.integers(2, max_items)
    xs = {"x": ("float64", (), (-12, 12)), "y": None}
    ds = draw(datasets(ReproItems, size=sizes, components=xs))
    p = ds.p.init_variable("sums", []).init_variable("draws", []) + draw(STEPS)
    p = p.reduce_sum()  # always reduce something, after all the random steps
    seed = draw(st.integers(0, 2**63 - 1))
    shuffle = draw(st.sampled_from([False, True, "seed"]))
    kwargs = {
        "n_epochs": draw(st.integers(1, 2)),
        "drop_last": draw(st.booleans()),
        **({"shuffle": seed} if shuffle == "seed" else {"shuffle": shuffle, "seed": seed}),
    }
    return p, draw(st.integers(1, len(ds))), kwargs


def assert_same_runs(run, compared):
    """The runs in ``compared`` ({label: run arguments}) give the batches and variables
    (sums, draws) of the sequential run, bit for bit."""
    pipeline, batch_size, kwargs = run
    assert_deterministic(pipeline, batch_size, runs=compared, **kwargs)


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@pytest.mark.slow
@settings(max_examples=30, **SETTINGS)
@given(runs())
def test_a_seeded_run_is_the_same_for_every_prefetch(run):
    assert_same_runs(run, {f"prefetch={k}": {"prefetch": k} for k in range(1, 9)})


@settings(max_examples=20, **SETTINGS)
@given(runs(), st.integers(1, 4))
def test_a_seeded_run_is_the_same_on_a_thread_executor(run, workers):
    assert_same_runs(run, {f"ThreadExecutor({workers})": {"executor": ThreadExecutor(workers)}})


@settings(max_examples=20, **SETTINGS)
@given(runs())
def test_a_seeded_run_repeats_bit_for_bit(run):
    assert_same_runs(run, {"repeated": {}})


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
    assert_same_runs(run, {"ProcessExecutor(2)": {"executor": ProcessExecutor(2)}})


@pytest.mark.dask
@pytest.mark.slow
@pytest.mark.timeout(300)
@settings(max_examples=6, **SETTINGS)
@given(runs(max_items=16))
def test_a_seeded_run_is_the_same_on_a_dask_cluster(dask_client, run):
    assert_same_runs(run, {"Dask LocalCluster(2 workers)": {"executor": dask_client}})
