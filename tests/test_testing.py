"""fpipe.testing: assert_resumable and assert_batches_equal catch what they promise to."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fpipe import Batch, Dataset, action
from fpipe.testing import assert_batches_equal, assert_resumable

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
        "import sys, fpipe, fpipe.testing; "
        "heavy = [m for m in ('tensorflow', 'distributed', 'dask', 'hypothesis', 'pytest') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_local_dask_client_names_the_extra_when_dask_is_missing(monkeypatch):
    import sys

    from fpipe.testing import local_dask_client

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'fpipe\[dask\]'"), local_dask_client():
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
