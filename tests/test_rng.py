"""Counter-based randomness: derive(), seeds, batch.random per (seed, epoch, batch, step)."""

from __future__ import annotations

import numpy as np
import pytest

from fpipe import (
    Batch,
    Dataset,
    FpipeError,
    GlobalRandomWarning,
    Pipeline,
    ProcessExecutor,
    ThreadExecutor,
    action,
    inbatch_parallel,
    rng,
)
from fpipe.rng import derive, normalize_seed, resolve_shuffle

N = 12


class RngDraws(Batch):
    components = ("x", "a", "b", "c")

    @action
    def draw_a(self, k=1):
        draws = self.random.random((len(self), k))
        return self.replace(a=draws[:, 0])

    @action
    def draw_b(self):
        return self.replace(b=self.random.random(len(self)))

    @action
    def draw_c(self):
        return self.replace(c=self.random.random(len(self)))

    @action
    def twice(self):
        first = self.random.random(len(self))
        again = self.replace(a=first)
        return again.replace(b=again.random.random(len(self)))

    @action
    def plain(self):
        return self.replace(x=self.x + 1)

    @action
    def global_rand(self):
        return self.replace(x=self.x + np.random.rand(len(self)))

    @action
    @inbatch_parallel(init="indices", post="_collect", target="threads")
    def per_item(self, item_id, rng):
        return rng.random()

    def _collect(self, results):
        return self.replace(c=np.array(results))


def dataset():
    return Dataset(N, RngDraws, preloaded={"x": np.zeros(N)})


def outputs(pipeline, batch_size=5, **kwargs):
    """(indices, a, b, c) of every output batch."""
    return [(b.indices.copy(), b.a, b.b, b.c) for b in pipeline.gen_batch(batch_size, **kwargs)]


def assert_same(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        for u, v in zip(x, y, strict=True):
            if u is None or v is None:
                assert u is None and v is None
            else:
                np.testing.assert_array_equal(u, v, strict=True)


# -- derive and normalize_seed ---------------------------------------------------------------


def test_derive_gives_the_same_stream_for_the_same_seed_and_path():
    a = derive(7, 2, 0, 3).random(5)
    b = derive(7, 2, 0, 3).random(5)
    np.testing.assert_array_equal(a, b)


def test_derive_gives_different_streams_for_other_paths_and_seeds():
    base = derive(7, 2, 0, 3).random(4)
    for other in (derive(8, 2, 0, 3), derive(7, 2, 0, 4), derive(7, 2, 0), derive(7, 2, 0, 3, 0)):
        assert not np.array_equal(base, other.random(4))


def test_derive_returns_independent_generators():
    g1 = derive(1, 5)
    g2 = derive(1, 5)
    g1.random(100)  # advancing one does not move the other
    np.testing.assert_array_equal(g2.random(3), derive(1, 5).random(3))


def test_derive_streams_are_uncorrelated_across_neighbouring_paths():
    draws = np.array([derive(3, rng.PURPOSE_BATCH, 0, i).random(2000) for i in range(4)])
    corr = np.corrcoef(draws)
    off_diagonal = corr[~np.eye(4, dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.1


def test_normalize_seed_keeps_ints():
    assert normalize_seed(5) == 5
    assert normalize_seed(np.int64(9)) == 9
    assert type(normalize_seed(np.int64(9))) is int


def test_normalize_seed_of_none_is_a_fresh_non_negative_int():
    seeds = {normalize_seed(None) for _ in range(3)}
    assert len(seeds) == 3
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)


def test_normalize_seed_of_a_generator_is_one_draw_from_it():
    assert normalize_seed(np.random.default_rng(3)) == normalize_seed(np.random.default_rng(3))
    gen = np.random.default_rng(3)
    assert normalize_seed(gen) != normalize_seed(gen)


def test_normalize_seed_refuses_bools():
    with pytest.raises(
        TypeError, match="seed must be an int, a numpy Generator or None, not a bool"
    ):
        normalize_seed(True)


def test_normalize_seed_refuses_negative_ints():
    with pytest.raises(ValueError, match="seed must be non-negative, got -1"):
        normalize_seed(-1)


@pytest.mark.parametrize(("bad", "name"), [(1.5, "float"), ("7", "str"), ([1], "list")])
def test_normalize_seed_refuses_other_types_and_names_them(bad, name):
    with pytest.raises(TypeError, match=f"shuffle must be .* not {name}"):
        normalize_seed(bad, what="shuffle")


def test_run_refuses_a_bad_seed():
    with pytest.raises(TypeError, match="seed must be an int, a numpy Generator or None, not str"):
        dataset().p.draw_a().run(4, seed="x")


# -- batch.random ----------------------------------------------------------------------------


def test_batch_random_outside_a_run_explains_itself():
    b = RngDraws(np.arange(3), preloaded={"x": np.zeros(3)})
    with pytest.raises(FpipeError, match=r"batch\.random is only defined while the batch goes"):
        b.random
    with pytest.raises(FpipeError, match=r"batch\.random is only defined while"):
        b.random_for(0)


def test_batch_random_is_derived_from_seed_epoch_batch_position_and_step():
    p = dataset().p.plain().draw_b()
    batches = list(p.gen_batch(5, n_epochs=2, shuffle=True, seed=11))
    assert len(batches) == 6
    for iteration, b in enumerate(batches):
        epoch = iteration // 3
        gen = derive(11, rng.PURPOSE_BATCH, epoch, iteration, 1)  # draw_b is step 1
        np.testing.assert_array_equal(b.b, gen.random(len(b)))


def test_batch_random_continues_one_stream_within_a_step():
    b = dataset().p.twice().next_batch(4, seed=2)
    gen = derive(2, rng.PURPOSE_BATCH, 0, 0, 0)
    np.testing.assert_array_equal(b.a, gen.random(4))
    np.testing.assert_array_equal(b.b, gen.random(4))


def test_runs_with_the_same_seed_repeat_and_other_seeds_differ():
    p = dataset().p.draw_a().draw_b()
    assert_same(outputs(p, seed=4), outputs(p, seed=4))
    assert not np.array_equal(outputs(p, seed=4)[0][1], outputs(p, seed=5)[0][1])


def test_seed_is_accepted_by_run_gen_batch_iterate_and_next_batch():
    p = dataset().p.draw_a()
    first = next(iter(p.gen_batch(4, seed=8))).a
    np.testing.assert_array_equal(next(p.iterate(4, seed=8)).a, first)
    np.testing.assert_array_equal(p.next_batch(4, seed=8).a, first)
    assert p.run(4, seed=8, n_epochs=1) is not None
    assert p.iterate(4, seed=8).seed == 8


def test_an_unseeded_run_records_its_seed_so_it_can_be_repeated():
    p = dataset().p.draw_a()
    it = p.iterate(5)
    out = [b.a for b in it]
    again = [b.a for b in p.gen_batch(5, seed=it.seed)]
    for x, y in zip(out, again, strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_shuffle_int_is_the_seed_of_batch_random_too():
    p = dataset().p.draw_a()
    assert_same(outputs(p, shuffle=21), outputs(p, shuffle=True, seed=21))


@pytest.mark.parametrize("prefetch", [1, 2, 5, 8])
def test_batch_random_is_the_same_whatever_the_prefetch(prefetch):
    p = dataset().p.draw_a().plain().draw_b() @ 0.7
    kwargs = {"shuffle": True, "n_epochs": 2, "seed": 13}
    assert_same(outputs(p, **kwargs, prefetch=prefetch), outputs(p, **kwargs))


@pytest.mark.parametrize("workers", [1, 3])
def test_batch_random_is_the_same_on_thread_executors(workers):
    p = dataset().p.draw_a().draw_b().per_item()
    kwargs = {"shuffle": True, "n_epochs": 2, "seed": 17}
    assert_same(outputs(p, **kwargs, executor=ThreadExecutor(workers)), outputs(p, **kwargs))


# -- per-step streams ------------------------------------------------------------------------


def test_drawing_more_in_one_step_leaves_the_next_steps_stream_alone():
    few = outputs(dataset().p.draw_a(k=1).draw_b(), seed=3)
    many = outputs(dataset().p.draw_a(k=50).draw_b(), seed=3)
    for x, y in zip(few, many, strict=True):
        assert not np.array_equal(x[1], y[1])  # step 0 drew differently...
        np.testing.assert_array_equal(x[2], y[2])  # ...and step 1 saw the same stream


def test_a_step_that_stops_drawing_leaves_the_other_steps_streams_alone():
    drawing = outputs(dataset().p.draw_a().draw_b(), seed=3)
    quiet = outputs(dataset().p.plain().draw_b(), seed=3)
    for x, y in zip(drawing, quiet, strict=True):
        np.testing.assert_array_equal(x[2], y[2])


def test_steps_draw_different_streams_in_the_same_batch():
    b = dataset().p.draw_b().draw_c().next_batch(6, seed=1)
    assert not np.array_equal(b.b, b.c)


def test_a_maybe_step_does_not_change_the_streams_after_it():
    inner = Pipeline().draw_a(k=20)
    ref = outputs(dataset().p.plain() + (inner @ 0.0) + Pipeline().draw_b(), seed=6)
    for prob in (0.5, 1.0):
        got = outputs(dataset().p.plain() + (inner @ prob) + Pipeline().draw_b(), seed=6)
        for x, y in zip(ref, got, strict=True):
            np.testing.assert_array_equal(x[2], y[2])


def test_maybe_coin_is_derived_from_seed_batch_and_step_path():
    p = dataset().p.plain() + (Pipeline().draw_a() @ 0.5)
    batches = list(p.gen_batch(2, n_epochs=3, seed=9))
    fired = [b.a is not None for b in batches]
    expected = [
        derive(9, rng.PURPOSE_MAYBE, i // 6, i, 1).random() < 0.5 for i in range(len(batches))
    ]
    assert fired == expected
    assert any(fired) and not all(fired)


def test_steps_inside_a_maybe_draw_from_their_nested_path():
    p = dataset().p + (Pipeline().plain().draw_b() @ 1.0)
    b = p.next_batch(4, seed=5)
    np.testing.assert_array_equal(b.b, derive(5, rng.PURPOSE_BATCH, 0, 0, 0, 1).random(4))


def test_inbatch_parallel_items_get_their_own_generators():
    b = dataset().p.per_item().next_batch(5, seed=12)
    expected = [derive(12, rng.PURPOSE_ITEM, 0, 0, 0, j).random() for j in range(5)]
    np.testing.assert_array_equal(b.c, np.array(expected))
    assert len(set(b.c.tolist())) == 5


def test_shuffle_order_is_derived_from_seed_and_epoch_only():
    p = dataset().p.plain()
    batches = list(p.gen_batch(N, shuffle=True, n_epochs=2, seed=30))
    assert len(batches) == 2
    for epoch, b in enumerate(batches):
        order = derive(30, rng.PURPOSE_SHUFFLE, epoch).permutation(N)
        np.testing.assert_array_equal(b.indices, order)


# -- the global numpy RNG --------------------------------------------------------------------


def test_an_action_that_draws_from_the_global_rng_warns_and_is_named():
    p = dataset().p.draw_a().global_rand()
    with pytest.warns(GlobalRandomWarning, match=r"step\(s\) `global_rand\(\)` drew from numpy"):
        p.run(4, seed=1)


def test_the_global_rng_warning_says_to_use_batch_random():
    p = dataset().p.global_rand()
    with pytest.warns(GlobalRandomWarning, match="Draw from `batch.random`"):
        list(p.gen_batch(4, seed=1))


def test_the_global_rng_warning_comes_once_per_run():
    p = dataset().p.global_rand()
    with pytest.warns(GlobalRandomWarning) as record:
        p.run(3, seed=1, n_epochs=2)
    assert len(record) == 1


def test_the_global_rng_is_detected_with_prefetch_threads_too():
    p = dataset().p.plain().global_rand()
    with pytest.warns(GlobalRandomWarning, match="one of the steps `plain\\(\\)`, `global_rand"):
        p.run(3, seed=1, prefetch=2)


def test_batch_random_does_not_touch_the_global_rng():
    before = np.random.get_state(legacy=False)["state"]["pos"]
    dataset().p.draw_a().draw_b().per_item().run(4, seed=1, prefetch=2)
    assert np.random.get_state(legacy=False)["state"]["pos"] == before


class RngSeeder(Batch):
    @action
    def reseed(self):
        np.random.seed(5)  # like keras.utils.set_random_seed in a model factory
        return self

    @action
    def reseed_and_draw(self):
        np.random.seed(5)
        return self.replace(data=self.data + np.random.rand(len(self)))


def test_reseeding_the_global_rng_without_drawing_does_not_warn():
    state = np.random.get_state()
    try:
        ds = Dataset(6, RngSeeder, preloaded=np.zeros(6))
        ds.p.reseed().run(3, seed=1)
        with pytest.warns(GlobalRandomWarning, match="`reseed_and_draw\\(\\)` drew from"):
            ds.p.reseed_and_draw().run(3, seed=1)
    finally:
        np.random.set_state(state)


@pytest.mark.slow
def test_the_global_rng_is_detected_in_worker_processes_too():
    p = dataset().p.plain().global_rand()
    with pytest.warns(GlobalRandomWarning, match="drew from numpy's global random generator"):
        p.run(3, seed=1, executor=ProcessExecutor(1))


@pytest.mark.dask
def test_the_global_rng_is_detected_on_dask_workers_too(dask_client):
    p = dataset().p.plain().global_rand()
    with pytest.warns(GlobalRandomWarning, match="drew from numpy's global random generator"):
        p.run(3, seed=1, executor=dask_client)


@pytest.mark.slow
def test_worker_processes_that_draw_only_from_batch_random_do_not_warn():
    dataset().p.draw_a().draw_b().run(3, seed=1, executor=ProcessExecutor(1))  # warnings are errors


# -- resolve_shuffle: one rule for BatchPlan.make and DatasetIndex.split -----------------------


@pytest.mark.parametrize("off", [False, None, np.False_])
def test_resolve_shuffle_off_leaves_the_seed_alone(off):
    gen = np.random.default_rng(0)
    before = gen.bit_generator.state
    assert resolve_shuffle(off, gen, allow_callable=False) == (False, None)
    assert gen.bit_generator.state == before  # not drawn from


def test_resolve_shuffle_true_resolves_seed():
    assert resolve_shuffle(np.True_, 5, allow_callable=False) == (True, 5)
    shuffle, seed = resolve_shuffle(True, None, allow_callable=False)
    assert shuffle is True and isinstance(seed, int) and seed >= 0


def test_resolve_shuffle_int_is_the_seed():
    shuffle, seed = resolve_shuffle(np.int64(4), 4, allow_callable=False)
    assert (shuffle, seed) == (4, 4) and type(shuffle) is int and type(seed) is int
    with pytest.raises(ValueError, match="shuffle=4 already gives the seed, and seed=5 differs"):
        resolve_shuffle(4, 5, allow_callable=True)
    with pytest.raises(ValueError, match="shuffle must be non-negative"):
        resolve_shuffle(-1, None, allow_callable=False)


def test_resolve_shuffle_generator_gives_one_draw():
    shuffle, seed = resolve_shuffle(np.random.default_rng(2), None, allow_callable=False)
    assert shuffle is True and seed == normalize_seed(np.random.default_rng(2))
    with pytest.raises(ValueError, match="pass only one of them"):
        resolve_shuffle(np.random.default_rng(2), 3, allow_callable=False)


def test_resolve_shuffle_callable_only_where_allowed():
    def fn(positions, generator):
        return positions

    shuffle, seed = resolve_shuffle(fn, 9, allow_callable=True)
    assert shuffle is fn and seed == 9
    with pytest.raises(TypeError, match="an int seed or a numpy Generator, not function"):
        resolve_shuffle(fn, 9, allow_callable=False)
    with pytest.raises(TypeError, match=r"or a callable f\(positions, generator\), not str"):
        resolve_shuffle("yes", None, allow_callable=True)


# -- watching numpy's global generator cheaply ------------------------------------------------
class GlobalDraws(Batch):
    components = ("x",)

    @action
    def nothing(self):
        return self

    @action
    def whole_key(self):
        np.random.rand(312)  # 624 words: the position comes back where it was
        return self

    @action
    def one_normal(self):
        return self.replace(x=self.x + np.random.randn())

    @action
    def other_normal(self):
        return self.replace(x=self.x - np.random.randn())


@pytest.fixture
def global_state():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def global_draws():
    return Dataset(6, GlobalDraws, preloaded={"x": np.zeros(6)})


def test_a_global_step_sees_every_draw_but_not_a_reseed(global_state):
    np.random.seed(1)
    mark = rng.global_mark()
    assert rng.global_step(mark) == (False, mark)
    for draw in (np.random.rand, lambda: np.random.rand(312), np.random.randn, np.random.randn):
        draw()  # the last one draws the normal kept by the one before: no word moves
        moved, mark = rng.global_step(mark)
        assert moved
    np.random.seed(2)
    assert not rng.global_step(mark)[0]


def test_a_mark_sees_a_normal_drawn_from_the_kept_value(global_state):
    np.random.seed(1)
    mark = rng.global_mark()
    np.random.randn()  # the generator keeps the second normal of the pair
    assert rng.global_moved(mark)
    mark = rng.global_mark()
    np.random.randn()  # drawn from the kept value: the words do not move
    assert rng.global_moved(mark)
    np.random.seed(3)
    assert not rng.global_moved(mark)


def test_the_first_batch_reads_the_whole_global_state_once_not_per_step(monkeypatch):
    calls = []
    get_state = np.random.get_state

    def counting(*args, **kwargs):
        calls.append(1)
        return get_state(*args, **kwargs)

    monkeypatch.setattr(np.random, "get_state", counting)
    (global_draws().p.nothing() * 50).run(3, seed=1)
    assert len(calls) == 1  # was two per step


def test_a_step_drawing_a_whole_key_is_named(global_state):
    with pytest.warns(GlobalRandomWarning, match=r"^step\(s\) `whole_key\(\)` drew from"):
        global_draws().p.nothing().whole_key().nothing().run(3, seed=1)


def test_a_normal_drawn_from_the_kept_value_is_named(global_state):
    np.random.seed(1)
    np.random.randn()  # kept: the step's own normal moves no word of the generator
    with pytest.warns(GlobalRandomWarning, match=r"^step\(s\) `one_normal\(\)` drew from"):
        global_draws().p.nothing().one_normal().nothing().run(6, seed=1)
    np.random.seed(1)  # a step draws a pair, the next one the kept half
    p = global_draws().p.nothing().one_normal().other_normal().nothing()
    named = r"^step\(s\) `one_normal\(\)`, `other_normal\(\)` drew from"
    with pytest.warns(GlobalRandomWarning, match=named):
        p.run(6, seed=1)


def test_the_global_rng_is_watched_whatever_its_bit_generator(global_state):
    if not hasattr(np.random, "set_bit_generator"):
        pytest.skip("numpy < 1.25 has no np.random.set_bit_generator")
    before = np.random.get_bit_generator()
    np.random.set_bit_generator(np.random.PCG64(3))
    try:
        global_draws().p.nothing().run(3, seed=1)  # no draw, no warning
        with pytest.warns(GlobalRandomWarning, match=r"^step\(s\) `whole_key\(\)` drew from"):
            global_draws().p.nothing().whole_key().run(3, seed=1)
    finally:
        np.random.set_bit_generator(before)


def test_a_run_whose_first_step_needs_the_driver_names_the_step_with_prefetch_too():
    # nothing for a worker to run: the driver makes the batches as a sequential run does,
    # and watches each step of the first batch
    p = dataset().p.init_variable("n", 0).update_variable("n", 1).global_rand()
    with pytest.warns(GlobalRandomWarning, match=r"step\(s\) `global_rand\(\)` drew from numpy"):
        p.run(3, seed=1, prefetch=2)
