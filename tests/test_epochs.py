"""epochs(): one run, observed epoch by epoch, gives the batches of one run()."""

from __future__ import annotations

import gc
import io
import re
import threading
import time

import numpy as np
import pytest

from fpipe import Bar, Batch, Dataset, Pipeline, PipelineDefinitionError, SkipBatch, action
from fpipe.executors import ProcessExecutor

N, BATCH, EPOCHS = 20, 6, 4  # 4 batches an epoch, the last one of 2 items


class Epochs(Batch):
    components = ("x",)

    @action
    def jitter(self):
        """A pure step that draws from the batch's generator (it may run on a worker)."""
        return self.replace(x=self.x + self.random.normal(size=len(self)))

    @action(effects=True)
    def record(self):
        self.pipeline.update_variable("ids", self.indices.tolist(), mode="a")
        self.pipeline.update_variable("sums", float(self.x.sum()), mode="a")
        return self

    @action
    def skip_last_of_epoch(self):
        if len(self) < BATCH:
            raise SkipBatch
        return self


def linked(*more: Pipeline) -> Pipeline:
    p = Pipeline().init_variable("ids", []).init_variable("sums", []).jitter()
    for m in more:
        p = p + m
    return (p + Pipeline().record()) << Dataset(N, Epochs, preloaded=(np.arange(N, dtype=float),))


RUN = {"n_epochs": EPOCHS, "shuffle": True, "seed": 11}


@pytest.mark.parametrize(
    "how",
    [{}, {"prefetch": 3}, {"executor": ProcessExecutor(1)}],
    ids=["sequential", "prefetch", "processes"],
)
def test_epochs_yield_after_each_epoch_the_results_of_one_run(how):
    p = linked()
    whole = p.run(BATCH, **RUN)
    ids, sums = whole.get_variable("ids"), whole.get_variable("sums")
    assert len(ids) == EPOCHS * 4
    seen = []
    for epoch, result in p.epochs(BATCH, **RUN, **how):
        k = 4 * (epoch + 1)  # the batches up to the end of this epoch, no more
        assert result.get_variable("ids") == ids[:k]
        assert result.get_variable("sums") == sums[:k]
        seen.append(epoch)
    assert seen == [0, 1, 2, 3]
    assert result == whole  # the last epoch's result is the run's


def test_the_epochs_are_shuffled_apart_and_each_covers_the_dataset():
    ids = [r.get_variable("ids") for _, r in linked().epochs(BATCH, **RUN)][-1]
    epochs = [sorted(i for batch in ids[4 * e : 4 * e + 4] for i in batch) for e in range(EPOCHS)]
    assert all(e == list(range(N)) for e in epochs)
    assert ids[0] != ids[4]  # a new order each epoch


@pytest.mark.parametrize("prefetch", [0, 2])
def test_an_epoch_ends_even_when_its_last_batch_is_skipped(prefetch):
    p = linked(Pipeline().skip_last_of_epoch())
    whole = p.run(BATCH, **RUN).get_variable("ids")
    assert len(whole) == EPOCHS * 3
    seen = []
    for epoch, result in p.epochs(BATCH, **RUN, prefetch=prefetch):
        # yielded before the next epoch's first batch reached `record`
        assert result.get_variable("ids") == whole[: 3 * (epoch + 1)]
        seen.append(epoch)
    assert seen == [0, 1, 2, 3]


def test_n_iters_ends_with_a_short_last_epoch():
    got = [(e, len(r.get_variable("ids"))) for e, r in linked().epochs(BATCH, n_iters=10)]
    assert got == [(0, 4), (1, 8), (2, 10)]


def test_endless_epochs_go_on_until_the_loop_stops():
    got = []
    for epoch, result in linked().epochs(BATCH, n_epochs=None, seed=1):
        got.append(len(result.get_variable("ids")))
        if epoch == 5:
            break
    assert got == [4, 8, 12, 16, 20, 24]


def fpipe_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fpipe-prefetch")]


def test_breaking_out_stops_the_run_and_its_workers():
    gc.collect()
    assert not fpipe_threads()
    p = linked()
    for epoch, _result in p.epochs(BATCH, prefetch=3, **RUN):
        assert fpipe_threads()  # the workers are making the next epoch's batches
        if epoch == 1:
            break
    gc.collect()
    for thread in threading.enumerate():
        if thread.name.startswith("fpipe-prefetch"):
            thread.join(timeout=10)
    assert not fpipe_threads()


def test_results_between_epochs_carry_the_profile_so_far():
    calls = [r.profile.step("record").calls for _, r in linked().epochs(BATCH, **RUN, profile=True)]
    assert calls == [4, 8, 12, 16]


def test_the_time_the_loop_spends_between_epochs_is_not_the_runs():
    walls = []
    for _, result in linked().epochs(BATCH, **RUN, profile=True):
        walls.append(result.profile.wall)
        time.sleep(0.3)  # e.g. an evaluation
    assert walls == sorted(walls) and walls[-1] < 0.6  # 16 tiny batches, not 1.2 s of sleep


def test_epochs_draw_one_bar_per_epoch():
    out = io.StringIO()
    for _ in linked().epochs(BATCH, n_epochs=3, bar=Bar(file=out, mininterval=0)):
        pass
    # each epoch's bar ends on a line of its own, redrawn after carriage returns
    finished = [line.split("\r")[-1] for line in out.getvalue().split("\n")[:-1]]
    assert [re.match(r"epoch \d/3: 100%", f).group(0) for f in finished] == [
        "epoch 1/3: 100%",
        "epoch 2/3: 100%",
        "epoch 3/3: 100%",
    ]
    assert all("4/4" in f for f in finished)


def test_epochs_refuses_a_rebatch_and_checks_its_arguments_first():
    with pytest.raises(PipelineDefinitionError, match=r"epochs\(\): the batches after a rebatch"):
        linked().rebatch(3).epochs(BATCH)
    with pytest.raises(TypeError, match=r"epochs\(\) got an unexpected keyword argument 'n_epoch'"):
        linked().epochs(BATCH, n_epoch=2)
    with pytest.raises(ValueError, match=r"epochs\(\): batch_size=30 is larger than the dataset"):
        linked().epochs(30)
