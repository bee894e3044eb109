"""fpipe.testing: the strategies make what they promise, and every checker passes good
code and fails bad code with its exact, readable message."""

from __future__ import annotations

import multiprocessing
import pickle
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fpipe import Batch, Dataset, Pipeline, SkipBatch, UnknownActionError, action
from fpipe.algebra import PipelineValue
from fpipe.steps import ActionStep, Maybe
from fpipe.testing import (
    assert_batches_equal,
    assert_deterministic,
    assert_laws,
    assert_pure,
    assert_resumable,
    batches,
    datasets,
    pipelines,
)
from fpipe.testing.checkers import DEFAULT_RUNS
from fpipe.testing.compare import Outcome, outcome_difference

# Searches that shrink to the same minimal example on every run: the exact messages.
EXACT = settings(database=None, derandomize=True, max_examples=60, deadline=None)

N = 11


class TstItems(Batch):
    components = ("x", "y")

    @action
    def noisy(self):
        return self.replace(x=self.x + self.random.normal(size=len(self)))

    @action
    def label(self):
        return self.replace(y=(self.x > 0).astype(np.int8))

    @action
    def count_seen(self):
        """Depends on what the run saw before: not resumable from an iteration state."""
        seen = self.pipeline.get_variable("seen") + 1
        self.pipeline.set_variable("seen", seen)
        return self.replace(x=self.x + seen)


def dataset():
    return Dataset(N, TstItems, preloaded={"x": np.arange(N, dtype=np.float32)})


def loose(x, cls=TstItems, indices=None):
    x = np.asarray(x)
    return cls(np.arange(len(x)) if indices is None else indices, preloaded={"x": x})


def test_assert_resumable_passes_a_random_shuffled_pipeline_and_counts_its_batches():
    p = dataset().p.noisy().label()
    assert assert_resumable(p, 4, shuffle=True, n_epochs=2, seed=3) == 6


def test_assert_resumable_works_without_a_seed():
    assert assert_resumable(dataset().p.noisy(), 5, shuffle=True) == 3


def test_assert_resumable_accepts_a_generator_seed():
    n = assert_resumable(dataset().p.noisy(), 5, shuffle=np.random.default_rng(1))
    assert n == 3


def test_assert_resumable_catches_a_pipeline_that_depends_on_earlier_batches():
    p = dataset().p.init_variable("seen", 0).count_seen()
    with pytest.raises(
        AssertionError,
        match=r"resumed at position 1 \(state via json\), batch 1: component 'x' differs",
    ):
        assert_resumable(p, 4, seed=1)


def test_assert_resumable_catches_a_pipeline_that_is_not_deterministic():
    calls = iter(range(1000))
    p = dataset().p.apply(lambda b: b.replace(x=b.x + next(calls)))
    with pytest.raises(
        AssertionError,
        match=r"resumed at position 0 \(state via json\), batch 0: component .x. differs",
    ):
        assert_resumable(p, 4, seed=1)


def test_assert_resumable_refuses_an_endless_run():
    with pytest.raises(ValueError, match="needs a run that ends"):
        assert_resumable(dataset().p, 4, n_epochs=None)


def test_assert_resumable_refuses_a_state_argument():
    with pytest.raises(TypeError, match="takes no state="):
        assert_resumable(dataset().p, 4, state={})


def test_assert_resumable_checks_a_rebatch_pipeline_too():
    assert assert_resumable(dataset().p.noisy().rebatch(3), 4, seed=1) > 0


def test_assert_batches_equal_accepts_bit_identical_batches():
    assert_batches_equal(loose([1.0, np.nan]), loose([1.0, np.nan]))


def test_assert_batches_equal_sees_a_dtype_difference():
    with pytest.raises(AssertionError, match=r"component 'x' differs: .*dtype float64 != float32"):
        assert_batches_equal(loose(np.zeros(2)), loose(np.zeros(2, np.float32)))


def test_assert_batches_equal_sees_a_sign_of_zero():
    with pytest.raises(AssertionError, match="here: component 'x' differs"):
        assert_batches_equal(loose([0.0]), loose([-0.0]), "here")


def test_assert_batches_equal_sees_a_shape_difference():
    with pytest.raises(AssertionError, match=r"shape \(2,\) != \(3,\)"):
        assert_batches_equal(loose([1, 2]), loose([1, 2, 3]))


def test_assert_batches_equal_sees_other_indices():
    with pytest.raises(AssertionError, match="indices differ"):
        assert_batches_equal(loose([1, 2]), loose([1, 2], indices=np.array([5, 6])))


def test_assert_batches_equal_sees_a_missing_component():
    a = loose([1, 2])
    with pytest.raises(AssertionError, match=r"component 'y' differs: .*!= None"):
        assert_batches_equal(a.replace(y=np.array([0, 1])), a)


def test_assert_batches_equal_sees_another_batch_class():
    with pytest.raises(AssertionError, match="batch class Batch != TstItems"):
        assert_batches_equal(loose([1]), Batch(np.arange(1), preloaded=np.array([1])))


def test_importing_fpipe_stays_light():
    code = (
        "import sys, fpipe; print('fpipe.testing' in sys.modules); import fpipe.testing; "
        "heavy = [m for m in ('tensorflow', 'distributed', 'dask', 'hypothesis', 'pytest') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "[]"]


def test_local_dask_client_names_the_extra_when_dask_is_missing(monkeypatch):
    import sys

    from fpipe.testing import local_dask_client

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'fpipe-ml\[dask\]'"), local_dask_client():
        pass


@pytest.mark.dask
def test_the_shared_dask_client_runs_a_pipeline_on_two_local_workers(dask_client):
    assert len(dask_client.scheduler_info()["workers"]) == 2
    p = dataset().p.noisy()
    want = [b.x.tolist() for b in p.gen_batch(4, seed=3)]
    assert [b.x.tolist() for b in p.gen_batch(4, seed=3, executor=dask_client)] == want


@pytest.mark.dask
@pytest.mark.timeout(60)
def test_local_dask_client_works_and_warns_nothing_while_port_8787_is_taken():
    """The dashboard's usual port may be taken (another cluster, a notebook): a local
    client asks for free ports, so it neither fails nor warns."""
    import errno
    import socket
    import warnings

    from fpipe.testing import local_dask_client

    held = []
    for host in ("0.0.0.0", "127.0.0.1"):  # 0.0.0.0 covers 127.0.0.1 too, where allowed
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, 8787))
            sock.listen()
            held.append(sock)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:  # taken by someone else is just as good
                pytest.skip(f"cannot bind {host}:8787 here: {exc}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with local_dask_client(n_workers=1) as client:
                assert 8787 not in client.scheduler_info().get("services", {}).values()
                p = dataset().p.noisy()
                want = [b.x.tolist() for b in p.gen_batch(4, seed=3)]
                assert [b.x.tolist() for b in p.gen_batch(4, seed=3, executor=client)] == want
    finally:
        for sock in held:
            sock.close()


# -- strategies -------------------------------------------------------------------------------


class Specced(Batch):
    components = ("images", "labels", "weights")
    component_specs = {"images": ("float32", (3, 2), (0, 255)), "labels": ("int8", (), (0, 9))}

    @action
    def normalize(self):
        return self.replace(images=self.images / 255)

    @action
    def shift(self, by, *, scale=1.0):
        return self.replace(images=(self.images + by) * scale)

    @action
    def needs(self, k):
        return self.replace(labels=self.labels + k)


def all_of(strategy, n=30):
    """``n`` examples of ``strategy`` (a search that keeps them all)."""
    out = []

    @settings(database=None, max_examples=n, derandomize=True)
    @given(strategy)
    def keep(x):
        out.append(x)

    keep()
    return out


def test_batches_take_dtypes_shapes_and_bounds_from_the_class_and_are_read_only():
    seen = all_of(batches(Specced))
    sizes = set()
    for b in seen:
        n = len(b)
        sizes.add(n)
        assert type(b) is Specced and b.indices.tolist() == list(range(n))
        assert b.images.dtype == np.float32 and b.images.shape == (n, 3, 2)
        assert b.labels.dtype == np.int8 and b.labels.shape == (n,)
        assert b.weights.dtype == np.float64 and b.weights.shape == (n,)  # no spec: float64
        assert b.images.min() >= 0 and b.images.max() <= 255
        assert b.labels.min() >= 0 and b.labels.max() <= 9
        assert np.abs(b.weights).max() <= 1000 and np.isfinite(b.weights).all()
        for arr in (b.images, b.labels, b.weights):
            assert not arr.flags.writeable
    assert min(sizes) == 1 and max(sizes) > 1 and max(sizes) <= 8


def test_a_generated_array_refuses_writes():
    b = find(batches(Specced, size=2), lambda b: True)
    with pytest.raises(ValueError, match="read-only"):
        b.images[0, 0, 0] = 1.0


def test_batches_take_a_size_and_overrides_per_call():
    comps = {
        "images": arrays(np.uint8, (2,), elements=st.integers(7, 7)),  # one item
        "labels": ("int16", (4,)),
        "weights": None,
    }
    for b in all_of(batches(Specced, size=3, components=comps), n=10):
        assert b.images.dtype == np.uint8 and b.images.shape == (3, 2)
        assert b.images.tolist() == [[7, 7]] * 3 and not b.images.flags.writeable
        assert b.labels.dtype == np.int16 and b.labels.shape == (3, 4)
        assert b.weights is None


def test_sizes_may_be_a_strategy():
    assert {len(b) for b in all_of(batches(Batch, size=st.sampled_from([2, 5])))} == {2, 5}


def test_an_unsigned_dtype_keeps_its_bounds_inside_what_it_holds():
    for b in all_of(batches(Batch, components={"data": ("uint8", (2,), (-5, 300))}), n=20):
        assert b.data.dtype == np.uint8 and b.data.min() >= 0


def test_a_boolean_component():
    b = find(batches(Batch, components={"data": "bool"}), lambda b: True)
    assert b.data.dtype == np.bool_


def test_datasets_default_to_1_to_16_items():
    sizes = {len(ds) for ds in all_of(datasets(Batch), n=60)}
    assert min(sizes) == 1 and 1 < max(sizes) <= 16


def test_datasets_preload_read_only_components_drawn_like_batches():
    seen = all_of(datasets(Specced, size=st.integers(3, 6)), n=15)
    for ds in seen:
        assert isinstance(ds, Dataset) and ds.batch_class is Specced
        assert 3 <= len(ds) <= 6
        images = ds.preloaded["images"]
        assert images.shape == (len(ds), 3, 2) and images.dtype == np.float32
        assert all(not a.flags.writeable for a in ds.preloaded.values())
    assert len({len(ds) for ds in seen}) > 1


def test_an_unknown_component_is_refused_with_a_hint():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "components= names 'image', which is not a component of Specced (its components: "
            "['images', 'labels', 'weights']). Did you mean 'images'?"
        ),
    ):
        batches(Specced, components={"image": ("float32", ())})


def test_a_misspelt_class_spec_is_refused_with_a_hint():
    class Typo(Batch):
        components = ("x",)
        component_specs = {"xx": "int8"}

    with pytest.raises(ValueError, match=r"Typo.component_specs names 'xx'.*Did you mean 'x'\?"):
        datasets(Typo)


def test_a_bad_spec_says_what_a_spec_is():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "components['labels'] must be a dtype, (dtype, item_shape) or (dtype, item_shape, "
            "(low, high)), e.g. ('float32', (28, 28), (0, 1)); got ('int8', 3)"
        ),
    ):
        batches(Specced, components={"labels": ("int8", 3)})


def test_items_of_different_shapes_are_explained():
    ragged = st.sampled_from([np.zeros(1), np.zeros(2)])
    with pytest.raises(
        ValueError, match="the strategy for component 'data' drew items of different"
    ):
        all_of(batches(Batch, size=4, components={"data": ragged}), n=50)


def test_pipelines_draw_the_named_actions_with_drawn_arguments():
    actions = {"normalize": {}, "shift": {"by": st.integers(-3, 3), "scale": 2.0}}
    seen = all_of(pipelines(Specced, actions, algebra=False, max_steps=3), n=40)
    names = set()
    for p in seen:
        assert p.dataset is None  # templates: link them
        assert 1 <= len(p.steps) <= 3
        for step in p.steps:
            assert isinstance(step, ActionStep)
            names.add(step.name)
            if step.name == "shift":
                assert -3 <= step.kwargs["by"] <= 3 and step.kwargs["scale"] == 2.0
    assert names == {"normalize", "shift"}


def test_pipelines_compose_with_the_algebra():
    actions = ["normalize"]
    maybe = find(pipelines(Specced, actions), lambda p: any(isinstance(s, Maybe) for s in p.steps))
    assert isinstance(maybe.steps[0], Maybe)
    repeated = find(pipelines(Specced, actions, max_steps=1), lambda p: len(p.steps) == 2)
    assert repeated == Pipeline().normalize() * 2
    emptied = find(pipelines(Specced, actions), lambda p: len(p.steps) == 0)
    assert emptied == Pipeline()  # p * 0
    assert all(
        all(isinstance(s, ActionStep) for s in p.steps)
        for p in all_of(pipelines(Specced, actions, algebra=False))
    )


def test_pipelines_default_to_the_actions_that_need_no_argument():
    names = {s.name for p in all_of(pipelines(Specced, algebra=False)) for s in p.steps}
    assert names == {"normalize"}  # shift and needs take arguments


def test_pipelines_mix_in_extra_pipelines():
    extra = st.just(Pipeline().update_variable("n", 1, mode="a"))
    p = find(
        pipelines(Specced, ["normalize"], extra=extra),
        lambda p: len(p.steps) >= 2 and "n" in str(p),
    )
    assert "update" in repr(p) or "n" in repr(p)


def test_pipelines_refuse_an_unknown_action_or_argument():
    with pytest.raises(UnknownActionError, match="Did you mean 'normalize'"):
        pipelines(Specced, ["normalise"])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Specced.shift takes no argument 'bye'. Did you mean 'by'? Its arguments: by, scale."
        ),
    ):
        pipelines(Specced, {"shift": {"bye": 1}})


def test_pipelines_say_how_to_name_actions_when_none_runs_without_arguments():
    class OnlyArgs(Batch):
        @action
        def add(self, k):
            return self

    with pytest.raises(ValueError, match=r"OnlyArgs has no action that runs without arguments"):
        pipelines(OnlyArgs)


# -- hypothesis is a test dependency ------------------------------------------------------------


def run_without_hypothesis(code):
    """Run ``code`` in a fresh interpreter where hypothesis cannot be imported."""
    prelude = "import sys\nsys.modules['hypothesis'] = None  # as if not installed\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_checkers_work_without_hypothesis_and_the_strategies_say_how_to_get_it():
    out = run_without_hypothesis(
        """
        import numpy as np
        from fpipe import Batch, Dataset, Pipeline, action
        from fpipe.testing import assert_laws, assert_pure

        class Doubled(Batch):
            @action
            def double(self):
                return self.replace(data=self.data * 2)

        assert_pure(Doubled.double, Doubled(np.arange(2), preloaded=np.ones(2)))
        assert_laws(Pipeline().double(), Dataset(3, Doubled, preloaded=np.ones(3)))
        assert "hypothesis" not in sys.modules or sys.modules["hypothesis"] is None
        try:
            from fpipe.testing import batches
        except ImportError as error:
            print(error)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "fpipe.testing's strategies (batches, datasets, pipelines) need hypothesis, a test "
        "dependency of fpipe: pip install hypothesis (or pip install 'fpipe-ml[test]')"
    )


# -- assert_pure --------------------------------------------------------------------------------


class Pixels(Batch):
    components = ("images", "labels")
    component_specs = {"images": ("float32", (2,), (0, 255)), "labels": ("int64", (), (0, 9))}
    calls = [0]

    @action
    def augment(self, sigma):
        noise = self.random.normal(scale=sigma, size=self.images.shape).astype("float32")
        return self.replace(images=self.images + noise)

    @action
    def clip(self, limit):
        images = self.images
        if (images > limit).any():
            images[images > limit] = limit  # bug: writes into the batch
        return self.replace(images=images)

    @action
    def clip_by_flag(self, limit):
        images = self.images
        images.flags.writeable = True  # bug: forces its way into the batch
        np.minimum(images, limit, out=images)
        return self.replace(images=images)

    @action
    def global_noise(self, sigma):
        noise = np.random.normal(scale=sigma, size=self.images.shape)  # bug: global RNG
        return self.replace(images=self.images + noise.astype("float32"))

    @action
    def stamp(self):
        self.calls[0] += 1  # bug: hidden state
        return self.replace(labels=self.labels + self.calls[0])

    @action
    def count(self):
        self.pipeline.update_variable("seen", len(self), mode="a")
        return self

    @action
    def drop_some(self):
        if self.random.random() < 0.5:
            raise SkipBatch
        return self

    @action
    def on_main_thread(self):
        main = threading.current_thread() is threading.main_thread()
        return self.replace(labels=self.labels * 0 + int(main))

    @action
    def in_main_process(self):
        return self.replace(labels=self.labels * 0 + int(multiprocessing.parent_process() is None))


def test_assert_pure_passes_a_pure_random_action_on_drawn_batches_and_arguments():
    assert_pure(
        Pixels.augment,
        batches(Pixels),
        sigma=st.floats(0, 2),
        seed=st.integers(0, 9),
        settings=EXACT,
    )
    assert_pure(Pixels.drop_some, batches(Pixels), settings=EXACT)


def test_assert_pure_checks_one_batch_when_given_values():
    batch = Pixels(np.arange(2), preloaded=(np.ones((2, 2), np.float32), np.arange(2)))
    assert_pure(Pixels.augment, batch, sigma=0.5, seed=3)
    assert batch.images.tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_assert_pure_finds_an_in_place_write_and_shrinks_it():
    with pytest.raises(AssertionError) as caught:
        assert_pure(Pixels.clip, batches(Pixels), limit=st.floats(0, 255), settings=EXACT)
    assert str(caught.value) == (
        "Pixels.clip is not pure: it writes into its input in place (assignment destination "
        "is read-only); make a new array instead, e.g. `images = self.images.copy()`, and "
        "change that.\n"
        "  input: Pixels ids [0]: images=[[1. 1.]], labels=[0]\n"
        "  call: clip(limit=0.0) with seed=0"
    )


def test_assert_pure_sees_a_change_to_its_input_that_read_only_arrays_did_not_stop():
    batch = Pixels(np.arange(1), preloaded=(np.full((1, 2), 3, np.float32), np.zeros(1, int)))
    with pytest.raises(AssertionError) as caught:
        assert_pure(Pixels.clip_by_flag, batch, limit=1.0)
    assert str(caught.value) == (
        "Pixels.clip_by_flag is not pure: it changed its input in place: component 'images': "
        "before vs after: [[3. 3.]] != [[1. 1.]].\n"
        "  input: Pixels ids [0]: images=[[3. 3.]], labels=[0]\n"
        "  call: clip_by_flag(limit=1.0) with seed=0"
    )


def test_assert_pure_finds_a_draw_from_the_global_random_generator():
    with pytest.raises(AssertionError) as caught:
        assert_pure(Pixels.global_noise, batches(Pixels), sigma=st.floats(0, 1), settings=EXACT)
    assert str(caught.value) == (
        "Pixels.global_noise is not pure: it draws from numpy's global random generator "
        "(np.random.normal, np.random.shuffle...), so its output depends on global state, not "
        "on its seed; draw from `self.random` (or `self.random_for(item)`) instead.\n"
        "  input: Pixels ids [0]: images=[[0. 0.]], labels=[0]\n"
        "  call: global_noise(sigma=0.0) with seed=0"
    )


def test_assert_pure_finds_hidden_state():
    batch = Pixels(np.arange(1), preloaded=(np.zeros((1, 2), np.float32), np.zeros(1, int)))
    Pixels.calls[0] = 0
    with pytest.raises(AssertionError) as caught:
        assert_pure(Pixels.stamp, batch)
    assert str(caught.value) == (
        "Pixels.stamp is not pure: two runs with the same input, arguments and seed gave "
        "different outputs: component 'labels' differs: first run vs second run: [1] != [2]. "
        "Its output must depend on nothing else: no global state, counters or clocks.\n"
        "  input: Pixels ids [0]: images=[[0. 0.]], labels=[0]\n"
        "  call: stamp() with seed=0"
    )


def test_assert_pure_refuses_an_effectful_action_and_a_batch_method():
    batch = Pixels(np.arange(1), preloaded=(np.zeros((1, 2), np.float32), np.zeros(1, int)))
    with pytest.raises(TypeError, match=r"Pixels.count is effectful .* assert_pure checks pure"):
        assert_pure(Pixels.count, batch)
    with pytest.raises(TypeError, match=r"pass the action of the class, e.g. assert_pure\(Pixels"):
        assert_pure(batch.augment, batch, sigma=1.0)


@settings(max_examples=10, deadline=None)
@given(batch=batches(Pixels), sigma=st.floats(0, 1))
def test_assert_pure_inside_your_own_given_test(batch, sigma):
    assert_pure(Pixels.augment, batch, sigma=sigma)


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.just(0))
def test_assert_pure_refuses_strategies_inside_a_given_test(_):
    with pytest.raises(TypeError, match=r"assert_pure\(\) was given strategies inside a @given"):
        assert_pure(Pixels.augment, batches(Pixels), sigma=1.0)


# -- assert_deterministic --------------------------------------------------------------------


def pixels(n=6):
    return Dataset(n, Pixels, preloaded=(np.ones((n, 2), np.float32), np.arange(n)))


def test_assert_deterministic_passes_a_random_pipeline_on_every_executor():
    p = Pipeline().init_variable("seen", []).augment(sigma=1.0).drop_some().count()
    assert_deterministic(p << pixels(), 2, n_epochs=2)


def test_assert_deterministic_searches_drawn_pipelines_and_datasets():
    acts = {"augment": {"sigma": st.floats(0, 1)}, "drop_some": {}, "count": {}}
    assert_deterministic(
        pipelines(Pixels, acts).map(lambda p: Pipeline().init_variable("seen", []) + p),
        dataset=datasets(Pixels),
        processes=False,
        settings=settings(EXACT, max_examples=15),
    )


def test_assert_deterministic_names_the_executor_the_batch_and_the_component():
    p = pixels(4).p.on_main_thread()
    with pytest.raises(AssertionError) as caught:
        assert_deterministic(p, 2, processes=False, shuffle=False)
    assert str(caught.value) == (
        "the pipeline is not deterministic: the prefetch=2 run differs from the sequential "
        "run at batch 0: component 'labels' differs: sequential vs prefetch=2: [1 1] != [0 0]\n"
        "  pipeline: [on_main_thread()]\n"
        "  dataset: Dataset(4 items, Pixels, images, labels)\n"
        "  run: iterate(2, shuffle=False, seed=0)"
    )


def test_assert_deterministic_runs_the_process_executor():
    p = pixels(4).p.in_main_process()
    with pytest.raises(AssertionError, match=r"the executor='processes' run differs .* batch 0"):
        assert_deterministic(p, 2)
    assert_deterministic(p, 2, processes=False)


def test_assert_deterministic_compares_the_runs_you_choose():
    p = pixels(4).p.on_main_thread()
    assert_deterministic(p, 2, runs={"sequential again": {"prefetch": 0}})
    with pytest.raises(AssertionError, match="the prefetch=1 run differs"):
        assert_deterministic(p, 2, runs={"prefetch=1": {"prefetch": 1}})


def test_assert_deterministic_refuses_what_it_chooses_itself_and_a_loose_pipeline():
    with pytest.raises(TypeError, match=r"choose them with runs=\{label: \{'prefetch': \.\.\.\}\}"):
        assert_deterministic(pixels().p, 2, prefetch=2)
    with pytest.raises(TypeError, match="the pipeline has no dataset; pass dataset="):
        assert_deterministic(Pipeline().augment(sigma=1.0), 2)


def test_a_difference_in_the_final_variables_is_named():
    a = Outcome((), {"seen": [2, 2]})
    assert outcome_difference(a, Outcome((), {"seen": [2, 1]}), ("sequential", "threads")) == (
        "variable 'seen' differs: sequential vs threads: [2, 2] != [2, 1]"
    )
    assert outcome_difference(a, Outcome((), {}), ("x", "y")) == (
        "variable 'seen' differs: x vs y: [2, 2] != missing"
    )
    batch = pixels(2).create_batch([0])
    assert (
        outcome_difference(Outcome((batch,), {}), Outcome((), {}))
        == "expected gave 1 batches, got 0"
    )


# -- assert_laws -------------------------------------------------------------------------------


LAW_ACTIONS = {"augment": {"sigma": st.floats(0, 1)}, "drop_some": {}, "count": {}}
SEEN = Pipeline().init_variable("seen", [])


def test_assert_laws_passes_drawn_pipelines_of_pure_and_effectful_actions():
    assert_laws(
        pipelines(Pixels, LAW_ACTIONS),
        datasets(Pixels),
        setup=SEEN,
        settings=settings(EXACT, max_examples=20),
    )


def test_assert_laws_takes_values_too():
    a, b = Pipeline().augment(sigma=0.5), Pipeline().drop_some() @ 0.5
    assert_laws((a, b, a * 2), pixels(), batch_size=4, seed=5)
    assert_laws(a, pixels())


def test_p_at_0_keeps_the_variables_p_declares():
    p = Pipeline().init_variable("n", [1]).augment(sigma=1.0)
    assert_laws(p, pixels())
    assert (Pipeline() << pixels()).run(2).variables == {}
    assert ((p @ 0) << pixels()).run(2).variables == {"n": [1]}


def test_assert_laws_finds_hidden_state_and_names_the_law():
    Pixels.calls[0] = 0
    with pytest.raises(AssertionError) as caught:
        assert_laws(Pipeline().stamp(), pixels(2), shuffle=False)
    assert str(caught.value) == (
        "law broken: p runs alike twice: batch 0: component 'labels' differs: first run vs "
        "second run: [1] != [3]\n"
        "  p = [stamp()]\n"
        "  each side ran as `side << Dataset(2 items, Pixels, images, labels)` with "
        "iterate(1, shuffle=False, seed=0)"
    )


def test_assert_laws_finds_a_pipeline_that_does_not_pickle():
    p = Pipeline().apply(lambda b: b)
    with pytest.raises(
        AssertionError,
        match=r"law broken: pickle.loads\(pickle.dumps\(p\)\) == p: p cannot be pickled",
    ):
        assert_laws(p, pixels())


def test_assert_laws_sees_a_repetition_that_breaks_the_laws(monkeypatch):
    mul = PipelineValue.__mul__
    monkeypatch.setattr(PipelineValue, "__mul__", lambda p, n: mul(p, 1) if n == 2 else mul(p, n))
    with pytest.raises(AssertionError) as caught:
        assert_laws(Pipeline().augment(sigma=1.0), pixels(4), setup=SEEN)
    assert str(caught.value).startswith("law broken: p * 2 == p + p: the descriptions differ")


def test_assert_laws_runs_both_sides_of_a_law(monkeypatch):
    matmul = PipelineValue.__matmul__
    monkeypatch.setattr(PipelineValue, "__matmul__", lambda p, prob: matmul(p, 1.0))
    with pytest.raises(AssertionError) as caught:
        assert_laws(Pipeline().augment(sigma=1.0), pixels(4), shuffle=False)
    assert str(caught.value).startswith(
        "law broken: p @ 0 runs like Pipeline(): batch 0: component 'images' differs: "
        "Pipeline() vs p @ 0: [[1. 1.] [1. 1.]] != "
    )


def test_assert_laws_uses_three_drawn_pipelines_for_associativity():
    drawn = []

    def check(p):
        drawn.append(p)
        return p

    assert_laws(
        pipelines(Pixels, ["drop_some"]).map(check),
        pixels(),
        settings=settings(EXACT, max_examples=3),
    )
    assert len(drawn) >= 9


def test_assert_laws_refuses_what_is_not_a_pipeline():
    with pytest.raises(TypeError, match="assert_laws takes a Pipeline, up to three"):
        assert_laws([], pixels())
    with pytest.raises(TypeError, match="assert_laws needs a Dataset"):
        assert_laws(Pipeline(), 5)


def test_a_pipeline_pickles_with_its_drawn_arguments():
    p = find(pipelines(Pixels, {"augment": {"sigma": st.floats(0, 1)}}), lambda p: True)
    assert pickle.loads(pickle.dumps(p)) == p


def test_assert_deterministic_compares_prefetch_threads_and_processes_by_default():
    assert DEFAULT_RUNS == {
        "prefetch=2": {"prefetch": 2},
        "executor='threads'": {"executor": "threads", "prefetch": 4},
        "executor='processes'": {"executor": "processes", "prefetch": 2},
    }


def test_a_search_runs_a_few_dozen_examples_by_default():
    drawn = []
    assert_pure(Pixels.augment, batches(Pixels).map(lambda b: drawn.append(b) or b), sigma=0.1)
    assert 20 <= len(drawn) <= 100


def _plus(broken):
    """``PipelineValue.__add__`` broken by ``broken(a, b, add)`` (None: add as usual)."""
    add = PipelineValue.__add__

    def patched(a, b):
        out = broken(a, b, add)
        return add(a, b) if out is None else out

    return patched


_mul, _matmul = PipelineValue.__mul__, PipelineValue.__matmul__
BROKEN_LAWS = [
    ("__mul__", lambda p, n: _mul(p, 1 if n == 0 else n), "p * 0 runs like Pipeline(): batch 0"),
    ("__mul__", lambda p, n: _mul(p, 2 if n == 1 else n), "p * 1 == p: the descriptions"),
    ("__mul__", lambda p, n: _mul(p, 1 if n == 2 else n), "p * 2 == p + p: the descriptions"),
    ("__mul__", lambda p, n: _mul(p, 4 if n == 3 else n), "p * 3 == p * 1 + p * 2: the"),
    ("__matmul__", lambda p, prob: _matmul(p, 1.0), "p @ 0 runs like Pipeline(): batch 0"),
    (
        "__add__",
        _plus(lambda a, b, add: add(b, b) if not a.steps else None),
        "Pipeline() + p == p: the descriptions",
    ),
    (
        "__add__",
        _plus(lambda a, b, add: add(a, a) if not b.steps else None),
        "p + Pipeline() == p: the descriptions",
    ),
    (
        "__add__",
        _plus(lambda a, b, add: a if len(a.steps) > 1 and b.steps else None),
        "(a + b) + c == a + (b + c): the descriptions",
    ),
    (
        "__reduce__",
        lambda p: (Pipeline, ()),
        "pickle.loads(pickle.dumps(p)) == p: the descriptions",
    ),
]


@pytest.mark.parametrize(
    ("method", "broken", "law"), BROKEN_LAWS, ids=[law for *_, law in BROKEN_LAWS]
)
def test_assert_laws_checks_each_law(monkeypatch, method, broken, law):
    monkeypatch.setattr(PipelineValue, method, broken)
    a, b, c = Pipeline().augment(sigma=1.0), Pipeline().drop_some(), Pipeline().augment(sigma=2.0)
    with pytest.raises(AssertionError, match="law broken: " + re.escape(law)):
        assert_laws((a, b, c), pixels(4))


def test_fpipes_own_property_tests_use_the_public_strategies_and_checkers():
    root = Path(__file__).resolve().parents[1] / "property_tests"
    uses = {
        "test_reproducibility.py": ("pipelines(", "datasets(", "assert_deterministic("),
        "test_laws.py": ("assert_laws(",),
    }
    for name, names in uses.items():
        text = (root / name).read_text()
        assert "from fpipe.testing import" in text, name
        assert all(n in text for n in names), name
