from __future__ import annotations

import dataclasses
import itertools
import json
import pickle
import re

import numpy as np
import pytest

from fpipe import rng
from fpipe.errors import ResumeError
from fpipe.plan import BatchPlan, IterState


def reverse(positions, generator):
    return positions[::-1]


def batches(plan, state=None):
    return [(st, pos.tolist()) for st, pos in plan.iterate(state)]


# -- make: validation and seeds --------------------------------------------------------


def test_make_defaults():
    plan = BatchPlan.make(5, 2)
    assert plan.shuffle is False
    assert plan.n_epochs == 1
    assert plan.n_iters is None
    assert plan.drop_last is False
    assert isinstance(plan.seed, int)
    assert plan.batches_per_epoch == 3
    assert plan.total_batches == 3


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be positive, got 0"),
        ({"batch_size": -2}, ValueError, "batch_size must be positive"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be a positive int, got 2.0"),
        ({"batch_size": True}, TypeError, "batch_size must be a positive int"),
        ({"n_items": 0, "batch_size": 1}, ValueError, "n_items must be positive"),
        ({"n_epochs": 0}, ValueError, "n_epochs must be positive"),
        ({"n_epochs": 1.5}, TypeError, "n_epochs must be a positive int or None"),
        ({"n_iters": 0}, ValueError, "n_iters must be positive"),
        ({"n_iters": "3"}, TypeError, "n_iters must be a positive int or None"),
        ({"drop_last": 1}, TypeError, "drop_last must be a bool"),
        ({"shuffle": "yes"}, TypeError, "shuffle must be a bool, an int seed"),
        ({"shuffle": -1}, ValueError, "shuffle must be non-negative"),
        ({"seed": -5}, ValueError, "seed must be non-negative"),
        ({"seed": True}, TypeError, "not a bool"),
        ({"seed": "1"}, TypeError, "seed must be an int"),
        ({"extra_fingerprint": 3}, TypeError, "extra_fingerprint must be a str"),
    ],
)
def test_make_rejects_bad_arguments(kwargs, exc, match):
    args = {"n_items": 10, "batch_size": 2, **kwargs}
    with pytest.raises(exc, match=match):
        BatchPlan.make(**args)


def test_batch_size_larger_than_dataset():
    msg = "batch_size=11 is larger than the dataset (10 items); use a batch_size <= 10"
    with pytest.raises(ValueError, match=re.escape(msg)):
        BatchPlan.make(10, 11)


def test_int_shuffle_is_the_seed():
    plan = BatchPlan.make(10, 3, shuffle=42)
    assert plan.seed == 42
    assert plan.shuffle == 42
    assert BatchPlan.make(10, 3, shuffle=np.int64(42), seed=42).seed == 42
    with pytest.raises(ValueError, match="shuffle=42 already gives the seed, and seed=7 differs"):
        BatchPlan.make(10, 3, shuffle=42, seed=7)
    with pytest.raises(ValueError, match="already gives the seed"):
        BatchPlan.make(10, 3, shuffle=42, seed=np.random.default_rng(0))


def test_seed_resolution():
    assert BatchPlan.make(10, 3, shuffle=True, seed=5).seed == 5
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    assert BatchPlan.make(10, 3, seed=g1).seed == BatchPlan.make(10, 3, seed=g2).seed
    fresh = {BatchPlan.make(10, 3, shuffle=True).seed for _ in range(5)}
    assert len(fresh) > 1
    assert all(isinstance(s, int) and s >= 0 for s in fresh)


def test_generator_shuffle_draws_a_seed_once():
    plan = BatchPlan.make(10, 3, shuffle=np.random.default_rng(1))
    assert plan.shuffle is True
    assert plan.seed == rng.normalize_seed(np.random.default_rng(1))
    assert batches(plan) == batches(plan)
    with pytest.raises(ValueError, match="pass only one of them"):
        BatchPlan.make(10, 3, shuffle=np.random.default_rng(1), seed=3)


def test_n_iters_overrides_n_epochs():
    plan = BatchPlan.make(4, 2, n_epochs=1, n_iters=5)
    assert plan.n_epochs is None
    assert plan.total_batches == 5
    got = batches(plan)
    assert [pos for _, pos in got] == [[0, 1], [2, 3]] * 2 + [[0, 1]]
    assert [(st.epoch, st.batch_in_epoch, st.iteration) for st, _ in got] == [
        (0, 1, 1),
        (0, 2, 2),
        (1, 1, 3),
        (1, 2, 4),
        (2, 1, 5),
    ]


def test_direct_construction_is_validated():
    with pytest.raises(TypeError, match=r"use BatchPlan.make\(...\) to resolve"):
        BatchPlan(4, 2, False, 1, None, False, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shuffle=3 is the seed, but seed=4 differs"):
        BatchPlan(4, 2, 3, 1, None, False, 4)
    plan = BatchPlan(4, 2, True, 1, None, False, 4)
    assert plan == BatchPlan.make(4, 2, shuffle=True, seed=4)


def test_plan_is_frozen():
    plan = BatchPlan.make(4, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.batch_size = 3  # type: ignore[misc]


# -- epoch orders ----------------------------------------------------------------------


def test_unshuffled_order():
    plan = BatchPlan.make(5, 2, n_epochs=3)
    assert plan.epoch_order(0).tolist() == [0, 1, 2, 3, 4]
    assert plan.epoch_order(2) is plan.epoch_order(0)


def test_shuffled_order_is_derived_from_seed_and_epoch():
    plan = BatchPlan.make(50, 5, shuffle=True, seed=3, n_epochs=3)
    for epoch in (2, 0, 1):
        expected = rng.derive(3, rng.PURPOSE_SHUFFLE, epoch).permutation(50)
        order = plan.epoch_order(epoch)
        assert order.dtype == np.int64
        assert order.tolist() == expected.tolist()
    assert plan.epoch_order(0).tolist() != plan.epoch_order(1).tolist()


def test_epoch_order_is_read_only_and_memoized():
    plan = BatchPlan.make(20, 5, shuffle=1)
    order = plan.epoch_order(4)
    assert plan.epoch_order(4) is order
    with pytest.raises(ValueError, match="read-only"):
        order[0] = 0
    with pytest.raises(ValueError, match="epoch must be a non-negative int, got -1"):
        plan.epoch_order(-1)


def test_memo_does_not_leak_into_value():
    a = BatchPlan.make(20, 5, shuffle=1)
    b = BatchPlan.make(20, 5, shuffle=1)
    a.epoch_order(0)
    assert a == b
    assert hash(a) == hash(b)
    back = pickle.loads(pickle.dumps(a))
    assert back == a
    assert "_order_cache" not in a.__getstate__()
    assert back.epoch_order(0).tolist() == a.epoch_order(0).tolist()


def test_callable_shuffle():
    plan = BatchPlan.make(5, 2, shuffle=reverse, seed=0, n_epochs=2)
    assert [pos for _, pos in batches(plan)] == [[4, 3], [2, 1], [0]] * 2
    seen = []

    def spy(positions, generator):
        seen.append(generator.integers(1000))
        return generator.permutation(positions)

    plan = BatchPlan.make(8, 4, shuffle=spy, seed=5, n_epochs=2)
    order = plan.epoch_order(1)
    expected_gen = rng.derive(5, rng.PURPOSE_SHUFFLE, 1)
    assert seen == [expected_gen.integers(1000)]
    assert order.tolist() == expected_gen.permutation(8).tolist()
    assert order.dtype == np.int64


@pytest.mark.parametrize(
    "bad",
    [
        lambda p, g: p[:-1],
        lambda p, g: np.zeros_like(p),
        lambda p, g: p.astype(float),
        lambda p, g: p.reshape(1, -1),
        lambda p, g: p + 1,
    ],
)
def test_callable_shuffle_must_return_a_permutation(bad):
    plan = BatchPlan.make(6, 2, shuffle=bad)
    with pytest.raises(ValueError, match=r"shuffle function .*<lambda> must return a permutation"):
        plan.epoch_order(0)


# -- fingerprint -----------------------------------------------------------------------


def test_fingerprint_is_stable_and_ignores_seed():
    fp = BatchPlan.make(10, 3, shuffle=True, seed=1).fingerprint
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert BatchPlan.make(10, 3, shuffle=True, seed=2).fingerprint == fp
    assert BatchPlan.make(10, 3, shuffle=99).fingerprint == fp
    assert BatchPlan.make(10, 3, shuffle=np.random.default_rng(0)).fingerprint == fp


@pytest.mark.parametrize(
    "change",
    [
        {"n_items": 11},
        {"batch_size": 4},
        {"shuffle": False},
        {"shuffle": reverse},
        {"drop_last": True},
        {"n_epochs": 2},
        {"n_epochs": None},
        {"n_iters": 4},
        {"extra_fingerprint": "pipeline-x"},
    ],
)
def test_fingerprint_depends_on_plan_shape(change):
    base = {"n_items": 10, "batch_size": 3, "shuffle": True, "seed": 1}
    assert BatchPlan.make(**{**base, **change}).fingerprint != BatchPlan.make(**base).fingerprint


def test_callable_fingerprint_names_the_function():
    def other(p, g):
        return p

    a = BatchPlan.make(10, 3, shuffle=reverse).fingerprint
    assert a == BatchPlan.make(10, 3, shuffle=reverse).fingerprint
    assert a != BatchPlan.make(10, 3, shuffle=other).fingerprint


# -- iterate ---------------------------------------------------------------------------


def test_iterate_unshuffled():
    plan = BatchPlan.make(5, 2, n_epochs=2, seed=0)
    got = batches(plan)
    assert [pos for _, pos in got] == [[0, 1], [2, 3], [4]] * 2
    fp = plan.fingerprint
    assert got[2][0] == IterState(seed=0, epoch=0, batch_in_epoch=3, iteration=3, fingerprint=fp)
    assert got[-1][0] == IterState(0, 1, 3, 6, fp)


def test_iterate_drop_last():
    plan = BatchPlan.make(5, 2, n_epochs=2, drop_last=True)
    assert plan.batches_per_epoch == 2
    assert [pos for _, pos in batches(plan)] == [[0, 1], [2, 3]] * 2


def test_positions_are_read_only_int64_views():
    plan = BatchPlan.make(7, 3, shuffle=2)
    for _, pos in plan.iterate():
        assert pos.dtype == np.int64
        assert not pos.flags.writeable


def test_shuffled_batches_cover_each_epoch():
    plan = BatchPlan.make(10, 3, shuffle=4, n_epochs=3)
    got = list(plan.iterate())
    for epoch in range(3):
        positions = np.concatenate([p for st, p in got if st.epoch == epoch])
        assert positions.tolist() == plan.epoch_order(epoch).tolist()
        assert sorted(positions.tolist()) == list(range(10))


def test_endless_plan():
    plan = BatchPlan.make(3, 2, n_epochs=None)
    assert plan.total_batches is None
    got = [(st.epoch, pos.tolist()) for st, pos in itertools.islice(plan.iterate(), 7)]
    assert got[-1] == (3, [0, 1])


def test_resume_from_every_state():
    plan = BatchPlan.make(7, 3, shuffle=True, seed=8, n_epochs=3)
    full = batches(plan)
    for i, (state, _) in enumerate(full):
        assert batches(plan, state) == full[i + 1 :]
    assert batches(plan, plan.initial_state()) == full


def test_resume_from_json_with_a_new_plan():
    plan = BatchPlan.make(9, 2, shuffle=True, n_iters=10)
    full = batches(plan)
    saved = json.dumps(full[3][0].to_dict())
    state = IterState.from_dict(json.loads(saved))
    fresh = BatchPlan.make(9, 2, shuffle=True, n_iters=10)
    with pytest.raises(
        ResumeError, match=r"seed=\d+, but this plan has seed=\d+; call plan.resume"
    ):
        list(fresh.iterate(state))
    resumed = fresh.resume(state)
    assert resumed.seed == plan.seed
    assert batches(resumed, state) == full[4:]


def test_resume_int_shuffle_keeps_seed_and_shuffle_consistent():
    state = next(BatchPlan.make(9, 2, shuffle=5).iterate())[0]
    resumed = BatchPlan.make(9, 2, shuffle=6).resume(state)
    assert (resumed.seed, resumed.shuffle) == (5, 5)
    same = BatchPlan.make(9, 2, shuffle=5)
    assert same.resume(state) is same


def test_resume_rejects_states_of_other_plans():
    state = next(BatchPlan.make(10, 2, seed=1).iterate())[0]
    other = BatchPlan.make(10, 5, seed=1)
    with pytest.raises(ResumeError, match="belongs to another pipeline, dataset or batching plan"):
        list(other.iterate(state))
    with pytest.raises(ResumeError, match=f"fingerprint is '{state.fingerprint}'"):
        other.resume(state)
    with pytest.raises(TypeError, match="state must be an IterState, not dict"):
        other.iterate(state.to_dict())  # type: ignore[arg-type]


def test_state_at_or_past_the_end():
    plan = BatchPlan.make(4, 2, n_epochs=2, seed=0)
    last = batches(plan)[-1][0]
    assert batches(plan, last) == []
    fp = plan.fingerprint
    assert batches(plan, IterState(0, 5, 0, 10, fp)) == []
    iters = BatchPlan.make(4, 2, n_iters=3, seed=0)
    assert batches(iters, IterState(0, 1, 1, 3, iters.fingerprint)) == []


def test_state_at_end_of_epoch_continues_with_next_epoch():
    plan = BatchPlan.make(4, 2, n_epochs=3, seed=0)
    got = batches(plan, IterState(0, 0, 2, 2, plan.fingerprint))
    assert [st.epoch for st, _ in got] == [1, 1, 2, 2]


def test_inconsistent_state_is_rejected():
    plan = BatchPlan.make(4, 2, n_epochs=3, seed=0)
    with pytest.raises(ResumeError, match="inconsistent with this plan"):
        plan.iterate(IterState(0, 0, 3, 3, plan.fingerprint))
    with pytest.raises(ResumeError, match="inconsistent with this plan"):
        plan.iterate(IterState(0, -1, 0, 0, plan.fingerprint))


# -- IterState -------------------------------------------------------------------------


def test_iter_state_dict_round_trip():
    st = IterState(seed=2**62, epoch=3, batch_in_epoch=1, iteration=40, fingerprint="abc")
    d = st.to_dict()
    assert d == {
        "seed": 2**62,
        "epoch": 3,
        "batch_in_epoch": 1,
        "iteration": 40,
        "fingerprint": "abc",
    }
    assert IterState.from_dict(json.loads(json.dumps(d))) == st
    assert pickle.loads(pickle.dumps(st)) == st
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.epoch = 4  # type: ignore[misc]


GOOD_STATE = {"seed": 1, "epoch": 0, "batch_in_epoch": 0, "iteration": 0, "fingerprint": "f"}


def test_iter_state_from_dict_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must be a mapping, not list"):
        IterState.from_dict([1, 2])  # type: ignore[arg-type]
    missing = r"lacks key\(s\) \['epoch', 'batch_in_epoch', 'iteration', 'fingerprint'\]"
    with pytest.raises(ValueError, match=missing):
        IterState.from_dict({"seed": 1})
    with pytest.raises(ValueError, match=r"unknown IterState key\(s\) \['epochs'\].*'epoch'\?"):
        IterState.from_dict({**GOOD_STATE, "epochs": 1})


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"seed": True}, "'seed' must be a non-negative int, got True"),
        ({"epoch": -1}, "'epoch' must be a non-negative int, got -1"),
        ({"iteration": 1.0}, "'iteration' must be a non-negative int, got 1.0"),
        ({"batch_in_epoch": "2"}, "'batch_in_epoch' must be a non-negative int"),
        ({"fingerprint": 5}, "'fingerprint' must be a str, got 5"),
    ],
)
def test_iter_state_from_dict_rejects_bad_values(patch, match):
    with pytest.raises(ValueError, match=match):
        IterState.from_dict({**GOOD_STATE, **patch})


def test_plan_pickles_with_callable_shuffle():
    plan = BatchPlan.make(6, 4, shuffle=reverse, n_epochs=2)
    back = pickle.loads(pickle.dumps(plan))
    assert back == plan
    assert back.fingerprint == plan.fingerprint
    assert batches(back) == batches(plan)
