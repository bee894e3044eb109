from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpipe import rng
from fpipe.index import DatasetIndex
from fpipe.plan import BatchPlan, IterState

SEEDS = st.integers(0, 2**63 - 1)


@st.composite
def plans(draw, min_items=1):
    n = draw(st.integers(min_items, 200))
    batch_size = draw(st.integers(1, n))
    shuffle = draw(st.one_of(st.just(False), st.just(True), SEEDS))
    seed = None if type(shuffle) is int else draw(SEEDS)
    return BatchPlan.make(
        n,
        batch_size,
        shuffle=shuffle,
        n_epochs=draw(st.integers(1, 3)),
        drop_last=draw(st.booleans()),
        seed=seed,
    )


def same_plan(plan):
    """An equal plan built from scratch (nothing memoized)."""
    shuffle = plan.shuffle
    return BatchPlan.make(
        plan.n_items,
        plan.batch_size,
        shuffle=shuffle,
        n_epochs=plan.n_epochs,
        drop_last=plan.drop_last,
        seed=None if type(shuffle) is int else plan.seed,
    )


def as_lists(pairs):
    return [(state, pos.tolist()) for state, pos in pairs]


@settings(max_examples=150, deadline=None)
@given(plans())
def test_each_epoch_covers_its_order_once(plan):
    got = list(plan.iterate())
    n, bs = plan.n_items, plan.batch_size
    kept = (n // bs) * bs if plan.drop_last else n
    assert len(got) == plan.total_batches == plan.n_epochs * plan.batches_per_epoch
    for epoch in range(plan.n_epochs):
        order = plan.epoch_order(epoch)
        assert sorted(order.tolist()) == list(range(n))
        in_epoch = [pos for state, pos in got if state.epoch == epoch]
        assert len(in_epoch) == plan.batches_per_epoch
        covered = np.concatenate(in_epoch)
        assert covered.tolist() == order[:kept].tolist()
        assert len(set(covered.tolist())) == kept
        assert not set(order[kept:].tolist()) & set(covered.tolist())


@settings(max_examples=150, deadline=None)
@given(plans())
def test_batches_are_slices_of_one_epoch(plan):
    bs = plan.batch_size
    for i, (state, pos) in enumerate(plan.iterate()):
        assert state.iteration == i + 1
        assert 0 <= state.epoch < plan.n_epochs
        assert 1 <= state.batch_in_epoch <= plan.batches_per_epoch
        assert state.iteration == state.epoch * plan.batches_per_epoch + state.batch_in_epoch
        start = (state.batch_in_epoch - 1) * bs
        order = plan.epoch_order(state.epoch)
        assert pos.dtype == np.int64
        assert pos.tolist() == order[start : start + bs].tolist()
        if plan.drop_last or state.batch_in_epoch < plan.batches_per_epoch:
            assert len(pos) == bs


@settings(max_examples=60, deadline=None)
@given(plans(min_items=12), st.integers(0, 2))
def test_shuffled_epochs_are_independent_permutations(plan, epoch):
    if plan.shuffle is False:
        assert plan.epoch_order(epoch).tolist() == list(range(plan.n_items))
        return
    expected = rng.derive(plan.seed, rng.PURPOSE_SHUFFLE, epoch).permutation(plan.n_items)
    # a fresh plan asked for this epoch first: the order cannot depend on earlier epochs
    assert same_plan(plan).epoch_order(epoch).tolist() == expected.tolist()
    assert plan.epoch_order(0).tolist() != plan.epoch_order(1).tolist()
    assert plan.epoch_order(epoch).tolist() == expected.tolist()


@settings(max_examples=60, deadline=None)
@given(plans())
def test_same_seed_same_batches(plan):
    assert as_lists(same_plan(plan).iterate()) == as_lists(plan.iterate())


@settings(max_examples=40, deadline=None)
@given(plans())
def test_resuming_from_every_state_yields_the_suffix(plan):
    full = as_lists(plan.iterate())
    for i, (state, _) in enumerate(full):
        restored = IterState.from_dict(json.loads(json.dumps(state.to_dict())))
        assert restored == state
        fresh = BatchPlan.make(
            plan.n_items,
            plan.batch_size,
            shuffle=plan.shuffle is not False,
            n_epochs=plan.n_epochs,
            drop_last=plan.drop_last,
        ).resume(restored)
        assert as_lists(fresh.iterate(restored)) == full[i + 1 :]


@settings(max_examples=60, deadline=None)
@given(
    SEEDS, st.integers(0, 10**9), st.integers(0, 10**6), st.integers(0, 10**9), st.text(max_size=40)
)
def test_iter_state_json_round_trip(seed, epoch, b, it, fp):
    state = IterState(seed=seed, epoch=epoch, batch_in_epoch=b, iteration=it, fingerprint=fp)
    assert IterState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 200), st.booleans(), SEEDS)
def test_n_iters_runs_across_epochs(n, n_iters, drop_last, seed):
    plan = BatchPlan.make(
        n, max(1, n // 3), shuffle=True, n_iters=n_iters, drop_last=drop_last, seed=seed
    )
    got = list(plan.iterate())
    assert len(got) == n_iters
    assert [s.iteration for s, _ in got] == list(range(1, n_iters + 1))
    for state, pos in got:
        start = (state.batch_in_epoch - 1) * plan.batch_size
        expected = plan.epoch_order(state.epoch)[start : start + plan.batch_size]
        assert pos.tolist() == expected.tolist()


# -- DatasetIndex.split ----------------------------------------------------------------


@st.composite
def share_lists(draw):
    if draw(st.booleans()):
        return draw(st.floats(0.01, 0.99))
    raw = draw(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=4))
    total = 1.0 if draw(st.booleans()) else draw(st.floats(0.05, 0.99))
    return [x * total / math.fsum(raw) for x in raw]


def n_parts(shares):
    fracs = [shares] if isinstance(shares, float) else shares
    return len(fracs) if math.fsum(fracs) >= 1 - 1e-9 else len(fracs) + 1


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 300),
    share_lists(),
    st.one_of(st.just(False), st.just(True), SEEDS),
    SEEDS,
    st.booleans(),
)
def test_split_parts_are_disjoint_cover_and_sized(n, shares, shuffle, seed, string_ids):
    ids = np.array([f"id{i}" for i in range(n)]) if string_ids else np.arange(100, 100 + n)
    idx = DatasetIndex(ids)
    k = n_parts(shares)
    if n < k:
        with pytest.raises(ValueError, match="too few to split"):
            idx.split(shares, shuffle=shuffle, seed=seed)
        return
    parts = idx.split(shares, shuffle=shuffle, seed=None if type(shuffle) is int else seed)
    assert len(parts) == k
    assert idx.indices.tolist() == ids.tolist()
    sizes = [len(p) for p in parts]
    assert sum(sizes) == n
    assert min(sizes) >= 1
    joined = np.concatenate([p.indices for p in parts]).tolist()
    assert sorted(joined) == sorted(ids.tolist())  # disjoint and covering
    if shuffle is False:
        assert joined == ids.tolist()
    fracs = [shares] if isinstance(shares, float) else shares
    floors = [math.floor(f * n + 1e-9) for f in fracs[: k - 1]]
    if min(floors, default=1) >= 1 and n - sum(floors) >= 1:
        assert sizes[:-1] == floors
    else:  # some part was bumped from 0 to 1 item
        assert all(abs(s - f * n) <= k for s, f in zip(sizes, fracs, strict=False))
