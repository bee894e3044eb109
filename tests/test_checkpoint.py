"""Checkpoint: periodic atomic saves, resuming after a kill, and refused checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fpipe import Batch, Checkpoint, Dataset, FpipeError, ResumeError, action, model

HERE = os.path.dirname(os.path.abspath(__file__))
N = 24
BLOCK_AT = "FPIPE_TEST_CKPT_BLOCK_AT"  # the child process hangs at this batch while it is set
SGD_CALLS = [0]  # how many batches this process trained on


class CkpRegression(Batch):
    components = ("features", "targets")

    @model(mode="dynamic")
    def ckp_linear(batch, config):
        return {"w": np.zeros(batch.features.shape[1]), "steps": np.zeros(1, dtype=np.int64)}

    @action(model="ckp_linear")
    def sgd_step(self, m, lr=0.05):
        """One deterministic SGD step on the batch (with noise from batch.random)."""
        err = self.features @ m["w"] - self.targets
        grad = self.features.T @ err / len(self) + self.random.normal(scale=0.01, size=len(m["w"]))
        m["w"] -= lr * grad  # the model's weights change in place, like a real framework's
        m["steps"] += 1
        SGD_CALLS[0] += 1
        self.pipeline.update_variable("loss", float(np.mean(err**2)), mode="a")
        self.pipeline.update_variable("seen", self.indices.tolist(), mode="e")
        return self

    @action
    def hang_at(self):
        block = os.environ.get(BLOCK_AT)
        if block is not None and self.pipeline.iteration == int(block):
            while True:  # wait to be killed
                time.sleep(0.05)
        return self

    @action(model="ckp_linear")
    def keep_lock(self, m):
        m["lock"] = threading.Lock()  # cannot be pickled
        return self


def dataset():
    gen = np.random.default_rng(0)
    x = gen.normal(size=(N, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + gen.normal(scale=0.1, size=N)
    return Dataset(N, CkpRegression, preloaded={"features": x, "targets": y})


def training():
    return dataset().p.init_variable("loss", []).init_variable("seen", []).hang_at().sgd_step()


RUN = {"batch_size": 4, "shuffle": True, "n_epochs": 3, "seed": 21}  # 18 batches


def final(p):
    """What a run ends with: its variables and its model's weights."""
    m = p.models["ckp_linear"]
    return p.get_variable("loss"), p.get_variable("seen"), m["w"].tolist(), int(m["steps"][0])


def model_of(path):
    return Checkpoint(path).load()[1].dynamic["ckp_linear"]


# -- saving --------------------------------------------------------------------------------


def test_every_must_be_a_positive_int():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"Checkpoint\(every=\.\.\.\) must be a positive int"):
            Checkpoint("x", every=bad)


def test_load_of_a_missing_checkpoint_is_none(tmp_path):
    assert Checkpoint(tmp_path / "none.ckpt").load() is None


def test_a_run_saves_state_variables_and_models_every_n_batches(tmp_path, monkeypatch):
    saves = []
    real_save = Checkpoint.save

    def spy(self, state, env):
        saves.append((state.iteration, len(env.variables["loss"])))
        real_save(self, state, env)

    monkeypatch.setattr(Checkpoint, "save", spy)
    path = tmp_path / "run.ckpt"
    training().run(**RUN, checkpoint=Checkpoint(path, every=5))
    assert saves == [(5, 5), (10, 10), (15, 15), (18, 18)]
    state, env = Checkpoint(path).load()
    assert (state.seed, state.epoch, state.iteration) == (21, 2, 18)
    assert len(env.variables["loss"]) == 18
    assert int(env.dynamic["ckp_linear"]["steps"][0]) == 18


def test_models_false_saves_variables_only(tmp_path):
    path = tmp_path / "vars.ckpt"
    training().run(**RUN, checkpoint=Checkpoint(path, every=100, models=False))
    state, env = Checkpoint(path).load()
    assert state.iteration == 18 and not env.static and not env.dynamic
    assert len(env.variables["seen"]) == 3 * N


def test_a_checkpointed_run_ends_like_a_plain_run(tmp_path):
    plain = training().run(**RUN)
    saved = training().run(**RUN, checkpoint=Checkpoint(tmp_path / "c.ckpt", every=4))
    assert final(saved) == final(plain)


def test_a_finished_checkpoint_resumes_to_the_same_result(tmp_path):
    ckpt = Checkpoint(tmp_path / "done.ckpt", every=3)
    first = training().run(**RUN, checkpoint=ckpt)
    again = training().run(**RUN, checkpoint=ckpt)
    assert final(again) == final(first)


def test_a_run_resumed_from_a_partial_checkpoint_matches_an_uninterrupted_one(tmp_path):
    path = tmp_path / "partial.ckpt"
    ckpt = Checkpoint(path, every=1)
    with training().iterate(**RUN) as it:  # stop by hand after 7 batches
        for k, _ in enumerate(it, start=1):
            ckpt.save(it.get_state(), it.env)
            if k == 7:
                break
    resumed = training().run(**RUN, checkpoint=ckpt)
    plain = training().run(**RUN)
    assert final(resumed) == final(plain)
    np.testing.assert_array_equal(model_of(path)["w"], plain.models["ckp_linear"]["w"])


@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_a_run_with_rebatch_resumes_from_a_partial_checkpoint(tmp_path, stop_after):
    """Items a rebatch holds between batches are saved too: nothing lost or seen twice."""
    path = tmp_path / "rebatch.ckpt"
    ckpt = Checkpoint(path, every=1)

    def regrouped():
        return dataset().p.init_variable("loss", []).init_variable("seen", []).rebatch(3).sgd_step()

    with regrouped().iterate(**RUN) as it:
        for k, _ in enumerate(it, start=1):
            ckpt.save(it.get_state(), it.env)
            if k == stop_after:
                break
    resumed = regrouped().run(**RUN, checkpoint=ckpt)
    plain = regrouped().run(**RUN)
    assert final(resumed) == final(plain)
    assert sorted(plain.get_variable("seen")) == sorted(list(range(N)) * RUN["n_epochs"])


def test_a_prefetching_run_saves_states_that_resume_like_a_sequential_run(tmp_path):
    path = tmp_path / "prefetch.ckpt"
    ckpt = Checkpoint(path, every=1)
    with training().iterate(**RUN, prefetch=3) as it:
        for k, _ in enumerate(it, start=1):
            ckpt.save(it.get_state(), it.env)
            if k == 5:
                break
    assert Checkpoint(path).load()[0].iteration == 5
    assert len(Checkpoint(path).load()[1].variables["loss"]) == 5
    resumed = training().run(**RUN, prefetch=2, checkpoint=ckpt)
    assert final(resumed) == final(training().run(**RUN))


def test_an_unpicklable_model_is_explained(tmp_path):
    p = training().keep_lock()
    with pytest.raises(
        FpipeError, match=r"cannot checkpoint the run to .*Checkpoint\(\.\.\., models"
    ):
        p.run(**RUN, checkpoint=Checkpoint(tmp_path / "lock.ckpt", every=2))
    assert not os.path.exists(tmp_path / "lock.ckpt")
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_a_failed_write_leaves_the_previous_save_intact(tmp_path, monkeypatch):
    path = tmp_path / "atomic.ckpt"
    ckpt = Checkpoint(path, every=2)
    with training().iterate(**RUN) as it:
        next(it)
        ckpt.save(it.get_state(), it.env)
        before = path.read_bytes()
        next(it)

        def broken_fsync(fd):
            raise OSError("disk full")

        monkeypatch.setattr(os, "fsync", broken_fsync)
        with pytest.raises(OSError, match="disk full"):
            ckpt.save(it.get_state(), it.env)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["atomic.ckpt"]
    assert Checkpoint(path).load()[0].iteration == 1


def test_a_checkpoint_of_another_run_is_refused_naming_the_file_and_the_way_out(tmp_path):
    ckpt = Checkpoint(tmp_path / "other.ckpt", every=2)
    training().run(**RUN, checkpoint=ckpt)
    with pytest.raises(ResumeError) as info:
        training().run(**{**RUN, "batch_size": 6}, checkpoint=ckpt)
    text = str(info.value)
    assert f"checkpoint {tmp_path / 'other.ckpt'} was saved by another run" in text
    assert "plan batch_size: 4 vs 6" in text
    assert f"delete {tmp_path / 'other.ckpt'} or checkpoint to another path" in text


def test_a_checkpoint_in_a_missing_folder_fails_before_any_work(tmp_path):
    calls = SGD_CALLS[0]
    path = tmp_path / "no" / "such" / "run.ckpt"
    with pytest.raises(FpipeError, match=r"the folder .*no/such does not exist\. Create it first"):
        training().run(**RUN, checkpoint=Checkpoint(path, every=5))
    assert SGD_CALLS[0] == calls  # not one batch was trained on
    assert not (tmp_path / "no").exists()


CORRUPT = r"checkpoint .*\.ckpt is corrupt: .* Delete it to start the run afresh"


@pytest.mark.parametrize(
    "content",
    [b"\x80\x04not a pickle", b"", b"garbage", pickle.dumps([1, 2])],
    ids=["bad", "empty", "text", "a pickle"],
)
def test_a_file_that_is_not_a_checkpoint_is_corrupt(tmp_path, content):
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(content)
    with pytest.raises(FpipeError, match=CORRUPT):
        training().run(**RUN, checkpoint=Checkpoint(path))


def _saved(tmp_path):
    path = tmp_path / "run.ckpt"
    training().run(**RUN, checkpoint=Checkpoint(path, every=5))
    return path, path.read_bytes()


def test_every_flipped_byte_and_every_cut_is_reported_as_corrupt(tmp_path):
    path, good = _saved(tmp_path)
    # every byte of the header, digest and state, and a spread of the pickled part
    header = good.index(b"\n", good.index(b"\n", 20) + 1) + 200
    positions = [*range(min(header, len(good))), *range(header, len(good), 97)]
    for i in positions:
        for flip in (0x01, 0x80):
            data = bytearray(good)
            data[i] ^= flip
            path.write_bytes(bytes(data))
            with pytest.raises(FpipeError, match=CORRUPT) as info:
                Checkpoint(path).load()
            assert str(path) in str(info.value)
    for cut in (0, 1, 10, 30, 90, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(FpipeError, match=CORRUPT):
            Checkpoint(path).load()
    path.write_bytes(good)
    assert Checkpoint(path).load()[0].iteration == 18


def test_a_checkpoint_never_unpickles_before_its_digest_matches(tmp_path, monkeypatch):
    path, good = _saved(tmp_path)
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(FpipeError, match=CORRUPT):
        Checkpoint(path).load()
    assert calls == []


def test_the_state_in_a_checkpoint_is_plain_json(tmp_path):
    _, good = _saved(tmp_path)
    lines = good.split(b"\n", 3)
    assert lines[0] == b"fpipe-checkpoint/2"
    state = json.loads(lines[2])
    assert (state["seed"], state["iteration"]) == (21, 18)


# -- killed and restarted ------------------------------------------------------------------

CHILD = """
import sys
sys.path.insert(0, {here!r})
import numpy as np
from test_checkpoint import RUN, SGD_CALLS, training
from fpipe import Checkpoint
path, out = sys.argv[1:]
p = training().run(**RUN, checkpoint=Checkpoint(path, every=3))
np.savez(out, w=p.models["ckp_linear"]["w"], steps=p.models["ckp_linear"]["steps"],
         loss=np.array(p.get_variable("loss")), seen=np.array(p.get_variable("seen")))
print("trained on", SGD_CALLS[0], "batches")
"""


def wait_for_checkpoint(path, proc, iteration, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the training process ended before it was killed"
        if os.path.exists(path):
            state, _ = Checkpoint(path).load()
            if state.iteration >= iteration:
                return state
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at iteration {iteration} after {timeout} s")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_killed_training_run_restarts_and_ends_like_an_uninterrupted_one(tmp_path):
    path, out = str(tmp_path / "train.ckpt"), str(tmp_path / "out.npz")
    cmd = [sys.executable, "-c", CHILD.format(here=HERE), path, out]
    env = {**os.environ, BLOCK_AT: "7"}  # saves at 3 and 6, then hangs in batch #7
    proc = subprocess.Popen(cmd, env=env)
    try:
        state = wait_for_checkpoint(path, proc, 6)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert state.iteration == 6 and not os.path.exists(out)
    assert int(model_of(path)["steps"][0]) == 6

    env.pop(BLOCK_AT)
    done = subprocess.run(cmd, env=env, check=True, timeout=90, capture_output=True, text=True)
    assert done.stdout.strip() == "trained on 12 batches"  # it resumed after batch 6
    got = np.load(out)

    plain = training().run(**RUN)
    m = plain.models["ckp_linear"]
    np.testing.assert_array_equal(got["w"], m["w"], strict=True)
    assert int(got["steps"][0]) == 18 == int(m["steps"][0])
    assert got["loss"].tolist() == plain.get_variable("loss")
    assert got["seen"].tolist() == plain.get_variable("seen")
