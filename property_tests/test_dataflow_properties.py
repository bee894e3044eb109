"""Rebatch, randomness, prefetch and resuming: runs see every item and repeat exactly.

Whether batching, rebatch, join and merge lose or duplicate anything is asked, with far
more examples, by test_lose_nothing.py.
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpipe import Batch, Dataset, DatasetIndex, Pipeline, action
from fpipe.errors import FpipeError


class FlowItems(Batch):
    """Two components, both a function of the item id, so misaligned rows show."""

    components = ("values", "labels")

    @action
    def add(self, k):
        return self.replace(values=self.values + k)

    @action
    def noise(self, scale):
        return self.replace(values=self.values + scale * self.random.normal(size=len(self)))

    @action
    def jitter_items(self):
        draws = [float(self.random_for(i).uniform()) for i in range(len(self))]
        return self.replace(labels=self.labels + np.array(draws))

    @action
    def shuffle_rows(self):
        order = self.random.permutation(len(self))
        return self.select(order)

    @action
    def record(self):
        self.pipeline.update_variable("sums", float(self.values.sum()), mode="a")
        return self


def values_of(ids):
    return np.asarray(ids, dtype=float) * 2 + 1


def labels_of(ids):
    return np.asarray(ids, dtype=float) * -3


def dataset(ids):
    ids = np.asarray(ids, dtype=np.int64)
    return Dataset(
        DatasetIndex(ids), FlowItems, preloaded={"values": values_of(ids), "labels": labels_of(ids)}
    )


@st.composite
def datasets(draw, min_size=1, max_size=40):
    n = draw(st.integers(min_size, max_size))
    if draw(st.booleans()):
        return dataset(np.arange(n))
    ids = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    return dataset(ids)


def check_rows(batch):
    """Every row's components still belong to its item id."""
    assert batch.values.tolist() == values_of(batch.indices).tolist()
    assert batch.labels.tolist() == labels_of(batch.indices).tolist()


def snapshot(batches):
    return [(b.indices.tobytes(), b.values.tobytes(), b.labels.tobytes()) for b in batches]


SEEDS = st.integers(0, 2**63 - 1)
shuffles = st.one_of(st.just(False), st.just(True), SEEDS)


@settings(max_examples=40, deadline=None)
@given(datasets(max_size=30), st.data(), st.integers(1, 3), st.integers(0, 2))
def test_rebatch_between_actions_sees_every_item_once(ds, data, n_epochs, pf):
    n = len(ds)
    bs = data.draw(st.integers(1, n), label="batch_size")
    size = data.draw(st.integers(1, n + 3), label="rebatch_size")
    p = Pipeline().init_variable("sums", []).add(1).rebatch(size).record().add(-1) << ds
    with p.iterate(bs, n_epochs=n_epochs, shuffle=True, seed=7, prefetch=pf) as it:
        out = list(it)
        sums = it.result().get_variable("sums")
    assert len(sums) == len(out)
    assert sums == [float(b.values.sum() + len(b)) for b in out]
    ids = np.concatenate([b.indices for b in out])
    assert Counter(ids.tolist()) == Counter(ds.indices.tolist() * n_epochs)
    for b in out:
        check_rows(b)


# -- randomness and prefetch -----------------------------------------------------------------

random_steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(-3, 3)),
        st.tuples(st.just("noise"), st.sampled_from([0.1, 1.0])),
        st.tuples(st.just("jitter_items")),
        st.tuples(st.just("shuffle_rows")),
        st.tuples(st.just("record")),
        st.tuples(st.just("maybe"), st.sampled_from([0.3, 0.5, 0.8])),
        st.tuples(st.just("rebatch"), st.integers(1, 7)),
    ),
    min_size=1,
    max_size=6,
)


def build(steps):
    p = Pipeline().init_variable("sums", [])
    for step in steps:
        kind = step[0]
        if kind == "maybe":
            p = p + (Pipeline().noise(1.0).add(1) @ step[1])
        elif kind == "rebatch":
            p = p.rebatch(step[1])
        else:
            p = p.action(kind, *step[1:])
    return p


def outputs(p, bs, **kwargs):
    with p.iterate(bs, **kwargs) as it:
        batches = snapshot(it)
        final = it.result().get_variable("sums")
    return batches, final


@settings(max_examples=40, deadline=None)
@given(random_steps, datasets(max_size=25), st.data(), st.integers(1, 4), SEEDS)
def test_prefetch_output_equals_sequential_output(steps, ds, data, prefetch, seed):
    bs = data.draw(st.integers(1, len(ds)), label="batch_size")
    p = build(steps) << ds
    kwargs = dict(shuffle=True, n_epochs=2, seed=seed)
    sequential = outputs(p, bs, prefetch=0, **kwargs)
    assert outputs(p, bs, prefetch=prefetch, **kwargs) == sequential
    if not any(s[0] == "rebatch" for s in steps):  # else records count input batches too
        n_records = sum(s[0] == "record" for s in steps)
        assert len(sequential[1]) == len(sequential[0]) * n_records


@settings(max_examples=40, deadline=None)
@given(random_steps, datasets(max_size=25), st.data(), SEEDS, st.integers(0, 2))
def test_seeded_runs_repeat_exactly(steps, ds, data, seed, prefetch):
    bs = data.draw(st.integers(1, len(ds)), label="batch_size")
    p = build(steps) << ds
    first = outputs(p, bs, shuffle=True, seed=seed, prefetch=prefetch)
    again = outputs(build(steps) << ds, bs, shuffle=True, seed=seed, prefetch=prefetch)
    assert again == first
    as_shuffle = outputs(p, bs, shuffle=seed, prefetch=prefetch)
    assert as_shuffle == first
    assert p.run(bs, shuffle=True, seed=seed).get_variable("sums") == first[1]


@settings(max_examples=40, deadline=None)
@given(datasets(min_size=4, max_size=30), st.data(), SEEDS, SEEDS)
def test_different_seeds_give_different_runs(ds, data, seed_a, seed_b):
    if seed_a == seed_b:
        seed_b = seed_a + 1
    bs = data.draw(st.integers(1, len(ds)), label="batch_size")
    p = ds.p.noise(1.0)
    a = outputs(p.init_variable("sums", []), bs, shuffle=True, seed=seed_a)
    b = outputs(p.init_variable("sums", []), bs, shuffle=True, seed=seed_b)
    assert a != b
    values_a = np.concatenate([np.frombuffer(v) for _, v, _ in a[0]])
    values_b = np.concatenate([np.frombuffer(v) for _, v, _ in b[0]])
    assert not np.array_equal(values_a, values_b)


@settings(max_examples=30, deadline=None)
@given(datasets(min_size=12, max_size=30), SEEDS, SEEDS)
def test_different_seeds_shuffle_large_datasets_differently(ds, seed_a, seed_b):
    if seed_a == seed_b:
        seed_b = seed_a + 1
    order_a = np.concatenate([b.indices for b in ds.p.gen_batch(3, shuffle=seed_a)])
    order_b = np.concatenate([b.indices for b in ds.p.gen_batch(3, shuffle=seed_b)])
    assert sorted(order_a.tolist()) == sorted(order_b.tolist()) == sorted(ds.indices.tolist())
    assert order_a.tolist() != order_b.tolist()


@pytest.mark.parametrize("prefetch", [0, 3])
def test_random_actions_outside_a_run_explain_what_to_do(prefetch):
    batch = dataset(np.arange(3)).create_batch([0, 1])
    with pytest.raises(FpipeError, match=r"batch\.random is only defined while the batch goes"):
        batch.noise(1.0)
    out = list(dataset(np.arange(3)).p.noise(1.0).gen_batch(2, seed=1, prefetch=prefetch))
    assert [b.indices.tolist() for b in out] == [[0, 1], [2]]


@pytest.mark.slow
@pytest.mark.timeout(120)
@settings(max_examples=5, deadline=None)
@given(random_steps, datasets(max_size=20), st.data(), SEEDS)
def test_process_executor_output_equals_sequential_output(steps, ds, data, seed):
    bs = data.draw(st.integers(1, len(ds)), label="batch_size")
    p = build(steps) << ds
    kwargs = dict(shuffle=True, n_epochs=2, seed=seed)
    sequential = outputs(p, bs, prefetch=0, **kwargs)
    assert outputs(p, bs, prefetch=2, executor="processes", **kwargs) == sequential


no_rebatch_steps = random_steps.map(lambda steps: [s for s in steps if s[0] != "rebatch"])


@settings(max_examples=40, deadline=None)
@given(no_rebatch_steps, datasets(max_size=20), st.data(), SEEDS, st.integers(0, 3))
def test_successive_next_batch_calls_repeat_the_seeded_iteration(steps, ds, data, seed, pf):
    bs = data.draw(st.integers(1, len(ds)), label="batch_size")
    p = build(steps) << ds
    kwargs = dict(shuffle=True, n_epochs=2, seed=seed, prefetch=pf)
    expected = snapshot(p.gen_batch(bs, **kwargs))
    got = [p.next_batch(bs, **kwargs) for _ in expected]
    assert snapshot(got) == expected
    with pytest.raises(StopIteration, match="the iteration is over"):
        p.next_batch(bs, **kwargs)
    p.reset()
    assert snapshot([p.next_batch(bs, **kwargs)]) == expected[:1]
    p.reset()


@settings(max_examples=40, deadline=None)
@given(random_steps, datasets(max_size=20), st.data(), SEEDS, st.integers(0, 3))
def test_resuming_from_any_position_gives_the_remaining_batches(steps, ds, data, seed, pf):
    bs = data.draw(st.integers(1, len(ds)), label="batch_size")
    p = build(steps) << ds
    kwargs = dict(shuffle=True, n_epochs=2, seed=seed)
    expected = snapshot(p.gen_batch(bs, **kwargs))
    k = data.draw(st.integers(0, len(expected)), label="stop_after")
    with p.iterate(
        bs, prefetch=data.draw(st.integers(0, 3), label="first_prefetch"), **kwargs
    ) as it:
        head = [next(it) for _ in range(k)]
        state = it.get_state()
    assert snapshot(head) == expected[:k]
    as_dict = json.loads(json.dumps(state.to_dict()))
    rest = list(p.iterate(bs, prefetch=pf, state=as_dict, **kwargs))
    assert snapshot(rest) == expected[k:]


@settings(max_examples=40, deadline=None)
@given(datasets(max_size=25), st.data(), shuffles, st.booleans(), st.integers(0, 3))
def test_n_iters_takes_the_first_batches_of_the_endless_sequence(ds, data, shuffle, drop_last, pf):
    n = len(ds)
    bs = data.draw(st.integers(1, n), label="batch_size")
    n_iters = data.draw(st.integers(1, 3 * n + 2), label="n_iters")
    seed = data.draw(SEEDS, label="seed") if shuffle is True else None
    kwargs = dict(shuffle=shuffle, drop_last=drop_last, seed=seed)
    got = list(ds.p.gen_batch(bs, n_iters=n_iters, prefetch=pf, **kwargs))
    per_epoch = n // bs if drop_last else -(-n // bs)
    epochs = -(-n_iters // per_epoch)
    full = list(ds.p.gen_batch(bs, n_epochs=epochs, **kwargs))
    assert len(got) == n_iters
    assert snapshot(got) == snapshot(full[:n_iters])
    endless = ds.p.iterate(bs, n_epochs=None, **kwargs)
    assert snapshot(next(endless) for _ in range(n_iters)) == snapshot(got)
    endless.close()


@pytest.mark.timeout(60)
@settings(max_examples=30, deadline=None)
@given(random_steps, datasets(max_size=25), st.data(), st.integers(1, 4))
def test_stopping_early_leaves_no_thread_behind(steps, ds, data, prefetch):
    bs = data.draw(st.integers(1, len(ds)), label="batch_size")
    take = data.draw(st.integers(0, 5), label="take")
    before = threading.active_count()
    p = build(steps) << ds
    with p.iterate(bs, shuffle=True, seed=3, n_epochs=None, prefetch=prefetch) as it:
        for i, _ in enumerate(it):
            if i + 1 >= take:
                break
    gen = p.gen_batch(bs, n_epochs=None, prefetch=prefetch)
    next(gen)
    gen.close()
    assert threading.active_count() == before
