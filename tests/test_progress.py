"""Progress: the bar (drawn by tqdm into a stream we read), len(iterator) and its position."""

from __future__ import annotations

import gc
import io
import re
import subprocess
import sys

import numpy as np
import pytest
from tqdm import tqdm

from fpipe import (
    ActionError,
    Batch,
    Checkpoint,
    Dataset,
    FpipeError,
    Pipeline,
    SkipBatch,
    action,
)
from fpipe.progress import Bar, as_bar
from fpipe.progress import _tqdm as tqdm_class

N = 30  # batches of 3: 10 an epoch


class Bars(Batch):
    components = ("x",)

    @action(effects=True)
    def track(self):
        self.pipeline.update_variable("loss", float(self.x.mean()), mode="a")
        self.pipeline.set_variable("acc", len(self.pipeline.get_variable("loss")) / 100)
        return self

    @action
    def fail_at(self, value):
        if value in self.x:
            raise ValueError(f"{value} is here")
        return self

    @action
    def skip_odd(self):
        if self.x[0] % 2:
            raise SkipBatch
        return self


def linked(*more: Pipeline) -> Pipeline:
    p = Pipeline().init_variable("loss", []).init_variable("acc", 0.0).track()
    for m in more:
        p = p + m
    return p << Dataset(N, Bars, preloaded=(np.arange(N, dtype=float),))


def frames(out: io.StringIO) -> list[str]:
    """Each state the bar was drawn in (tqdm redraws a text bar after a carriage return)."""
    return [f.strip() for f in re.split(r"[\r\n]", out.getvalue()) if f.strip()]


def bar(**options) -> tuple[Bar, io.StringIO]:
    out = io.StringIO()
    return Bar(file=out, mininterval=0, **options), out


# -- the bar -----------------------------------------------------------------------------------
def test_the_bar_counts_to_the_plans_total_and_names_the_epoch():
    shown, out = bar()
    linked().run(3, n_epochs=2, bar=shown)
    drawn = frames(out)
    assert drawn[0].startswith("epoch 1/2:   0%") and "0/20" in drawn[0]
    assert drawn[-1].startswith("epoch 2/2: 100%") and "20/20" in drawn[-1]
    assert "batch/s" in drawn[-1]
    counts = [int(m) for f in drawn for m in re.findall(r"(\d+)/20", f)]
    assert counts == sorted(counts) and set(counts) == set(range(21))
    assert any(f.startswith("epoch 1/2") and "10/20" in f for f in drawn)
    assert any(f.startswith("epoch 2/2") and "11/20" in f for f in drawn)
    assert out.getvalue().endswith("\n")  # closed: the finished bar stays on its line


def test_the_bar_shows_the_latest_value_of_the_variables_asked_for():
    shown, out = bar(variables=["loss", "acc"])
    result = linked().run(3, bar=shown)
    last = frames(out)[-1]
    assert result.get_variable("loss")[-1] == 28.0  # the mean of the last batch, 27..29
    assert last.endswith("loss=28, acc=0.1]"), last
    first_with_loss = next(f for f in frames(out) if "loss=" in f)
    assert "loss=1, acc=0.01" in first_with_loss  # after the first batch


def test_bar_true_draws_on_standard_error_and_a_list_names_the_variables(capsys):
    linked().run(3, bar=True)
    err = capsys.readouterr().err
    assert "10/10" in err and "epoch 1/1: 100%" in err
    linked().run(3, bar=["loss"])
    assert "loss=28]" in capsys.readouterr().err


def test_an_endless_run_has_a_bar_without_total():
    shown, out = bar()
    it = linked().gen_batch(3, n_epochs=None, bar=shown)
    for _, _batch in zip(range(12), it, strict=False):
        pass
    it.close()
    drawn = frames(out)
    assert drawn[-1].startswith("epoch 2: 12batch") and "%" not in out.getvalue()


def test_n_iters_gives_the_total_and_the_number_of_epochs():
    shown, out = bar()
    linked().run(3, n_iters=14, bar=shown)
    assert frames(out)[-1].startswith("epoch 2/2: 100%") and "14/14" in frames(out)[-1]


def test_the_bar_counts_skipped_batches_and_is_complete_at_the_end():
    shown, out = bar()
    result = linked(Pipeline().skip_odd()).run(3, bar=shown)  # batches start at 0, 3, 6, ...
    assert len(result.get_variable("loss")) == 10  # track runs before skip_odd
    assert "10/10" in frames(out)[-1]
    shown, out = bar()
    assert len(list(linked(Pipeline().skip_odd()).gen_batch(3, bar=shown))) == 5
    assert "10/10" in frames(out)[-1]


def test_the_bar_is_closed_when_the_run_fails_or_is_left():
    gc.collect()
    assert not tqdm._instances
    shown, out = bar()
    with pytest.raises(ActionError, match=r"12\.0 is here") as failure:
        linked(Pipeline().fail_at(12.0)).run(3, bar=shown)
    # closed by the run, not by the garbage collector: the traceback still holds the run
    assert failure.tb is not None and not tqdm._instances and out.getvalue().endswith("\n")
    assert "4/10" in frames(out)[-1]  # where it stopped: batch 5 (items 12..14) failed
    shown, out = bar()
    it = linked().gen_batch(3, bar=shown, prefetch=2)
    for k, _batch in enumerate(it):
        if k == 2:
            break
    it.close()
    assert not tqdm._instances and out.getvalue().endswith("\n")


def test_the_bar_works_with_prefetch_and_a_rebatch():
    shown, out = bar()
    batches = list(linked().rebatch(7).gen_batch(3, prefetch=2, bar=shown))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    assert "10/10" in frames(out)[-1]


def test_a_checkpointed_run_shows_its_bar_and_profile_too(tmp_path):
    shown, out = bar()
    ckpt = Checkpoint(tmp_path / "run.ckpt", every=4)
    result = linked().run(3, checkpoint=ckpt, bar=shown, profile=True)
    assert "10/10" in frames(out)[-1] and result.profile.step("track").calls == 10


def test_the_kind_of_bar_picks_tqdm_notebook_console_or_auto():
    import tqdm.auto
    import tqdm.notebook
    import tqdm.std

    assert tqdm_class("notebook") is tqdm.notebook.tqdm
    assert tqdm_class("console") is tqdm.std.tqdm
    assert tqdm_class("auto") is tqdm.auto.tqdm
    assert as_bar("notebook") == Bar(kind="notebook") and as_bar("console").kind == "console"
    assert as_bar(["loss"]) == Bar(("loss",)) and as_bar(("a", "b")).variables == ("a", "b")
    assert as_bar(True) == Bar() and as_bar(False) is None and as_bar(None) is None
    assert Bar("loss").variables == ("loss",)


def test_bad_bar_arguments_say_what_to_pass():
    with pytest.raises(ValueError, match=r"run\(bar='loss'\): a string names the kind of bar.*"
                       r"pass bar=\['loss'\]"):  # fmt: skip
        linked().run(3, bar="loss")
    with pytest.raises(TypeError, match=r"gen_batch\(bar=\.\.\.\) takes True, False, 'notebook'"):
        linked().gen_batch(3, bar=3)
    with pytest.raises(ValueError, match=r"Bar\(kind=\.\.\.\) is one of 'auto', 'console'"):
        Bar(kind="qt")
    with pytest.raises(TypeError, match=r"Bar\(variables=\.\.\.\) takes the names of variables"):
        Bar([1])
    with pytest.raises(ValueError, match=r"mininterval=\.\.\.\) must be >= 0"):
        Bar(mininterval=-1)
    with pytest.raises(FpipeError, match=r"bar: the pipeline has no variable 'los' to show .*"
                       r"Did you mean 'loss'\?"):  # fmt: skip
        linked().run(3, bar=["los"])


def test_tqdm_is_imported_only_when_a_bar_is_drawn():
    code = (
        "import sys, fpipe; ds = fpipe.Dataset(4); ds.p.run(2, profile=True); "
        "print('tqdm' in sys.modules); ds.p.run(2, bar=fpipe.Bar(file=sys.stdout)); "
        "print('tqdm' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "False" and done.stdout.split()[-1] == "True"


# -- len(iterator) and its position ------------------------------------------------------------
def test_len_is_the_plans_number_of_batches():
    p = linked()
    assert len(p.iterate(3)) == 10
    assert len(p.iterate(4, n_epochs=3)) == 24  # 8 a pass, the last one short
    assert len(p.iterate(4, n_epochs=3, drop_last=True)) == 21
    assert len(p.iterate(4, n_epochs=None, n_iters=50)) == 50
    it = p.iterate(3, n_epochs=2)
    assert len(it) == len(list(it)) == 20


def test_len_of_an_endless_or_rebatched_iteration_is_an_error_that_says_why():
    with pytest.raises(TypeError, match=r"it never ends \(n_epochs=None without n_iters\)"):
        len(linked().iterate(3, n_epochs=None))
    with pytest.raises(TypeError, match=r"its pipeline rebatches.*batches of the plan \(10\)"):
        len(linked().rebatch(4).iterate(3))
    it = linked().rebatch(4).iterate(3)
    assert bool(it) and len(list(it)) == 8  # list() does without a length


def test_the_position_is_where_the_run_is_after_its_last_batch():
    it = linked().iterate(3, n_epochs=2, prefetch=2)
    assert it.position == (0, 0, 0)
    seen = [tuple(it.position) for _ in it]
    assert seen[0] == (0, 1, 1) and seen[9] == (0, 10, 10) and seen[10] == (1, 1, 11)
    assert seen[-1] == (1, 10, 20)
    assert it.position._fields == ("epoch", "batch_in_epoch", "iteration")


def test_a_resumed_iterator_starts_at_the_saved_position():
    first = linked().iterate(3, n_epochs=2, seed=4, shuffle=True)
    for _ in range(13):
        next(first)
    again = linked().iterate(3, n_epochs=2, shuffle=True, state=first.get_state())
    assert again.position == first.position == (1, 3, 13)
    assert len(again) == 20 and len(list(again)) == 7
