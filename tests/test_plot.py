"""result.plot(): a variable over batches or epochs, smoothed, as a matplotlib Figure."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from fpipe import Batch, Dataset, FpipeError, Pipeline, SkipBatch, action
from fpipe.plot import ema

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure

N, BATCH = 40, 4  # 10 batches an epoch


class Curves(Batch):
    components = ("x",)

    @action(effects=True)
    def track(self):
        self.pipeline.update_variable("loss", float(self.x.mean()), mode="a")
        return self

    @action(effects=True)
    def track_twice(self):
        self.pipeline.update_variable("loss", float(self.x.mean()), mode="a")
        self.pipeline.update_variable("loss", -1.0, mode="a")
        return self

    @action
    def skip_fourth(self):
        if self.x[0] == 12:  # the 4th batch of each epoch (items 12..15)
            raise SkipBatch
        return self


def linked(*steps: Pipeline) -> Pipeline:
    p = Pipeline().init_variable("loss", []).init_variable("lr", 0.1).init_variable("rates", [])
    for s in steps:
        p = p + s
    return p << Dataset(N, Curves, preloaded=(np.arange(N, dtype=float),))


def ydata(fig: Figure, axes: int = 0, line: int = 0) -> list[float]:
    return np.asarray(fig.axes[axes].lines[line].get_ydata()).tolist()


def test_plot_draws_the_values_per_batch_and_their_moving_average():
    result = linked(Pipeline().track()).run(BATCH, n_epochs=2)
    loss = result.get_variable("loss")
    fig = result.plot("loss")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert ydata(fig) == loss and len(loss) == 20
    assert np.asarray(fig.axes[0].lines[0].get_xdata()).tolist() == list(range(1, 21))
    assert ydata(fig, line=1) == pytest.approx(ema(np.array(loss), 0.9).tolist())
    assert fig.axes[0].get_xlabel() == "batch" and fig.axes[0].get_ylabel() == "loss"


def test_the_moving_average_starts_at_the_first_value_and_follows_the_series():
    values = np.array([4.0, 2.0, 2.0, 2.0])
    smoothed = ema(values, 0.5)
    assert smoothed[0] == 4.0 and 2.0 < smoothed[-1] < smoothed[1] < 4.0
    assert ema(np.full(50, 3.0), 0.9) == pytest.approx(np.full(50, 3.0))


def test_smoothing_is_chosen_or_turned_off():
    result = linked(Pipeline().track()).run(BATCH, n_epochs=2)
    loss = np.array(result.get_variable("loss"))
    assert len(result.plot("loss", smooth=0).axes[0].lines) == 1
    assert ydata(result.plot("loss", smooth=0.5), line=1) == pytest.approx(ema(loss, 0.5).tolist())
    short = linked(Pipeline().track()).run(8)  # 5 values: too few to smooth by default
    assert len(short.plot("loss").axes[0].lines) == 1


def test_per_epoch_plots_the_mean_of_each_epoch_from_the_plan():
    result = linked(Pipeline().track()).run(BATCH, n_epochs=3, shuffle=True, seed=2)
    loss = np.array(result.get_variable("loss"))
    fig = result.plot("loss", per="epoch")
    assert ydata(fig) == pytest.approx([loss[k : k + 10].mean() for k in (0, 10, 20)])
    assert np.asarray(fig.axes[0].lines[0].get_xdata()).tolist() == [1, 2, 3]
    assert len(fig.axes[0].lines) == 1 and fig.axes[0].get_xlabel() == "epoch"


def test_per_epoch_uses_the_epoch_ends_a_watched_run_recorded():
    p = linked(Pipeline().skip_fourth().track())  # 9 values an epoch
    plain = p.run(BATCH, n_epochs=2)
    assert len(plain.get_variable("loss")) == 18
    with pytest.raises(FpipeError, match=r"'loss' has 18 values for the run's 20 batches"):
        plain.plot("loss", per="epoch")
    watched = p.run(BATCH, n_epochs=2, profile=True)
    loss = np.array(watched.get_variable("loss"))
    assert ydata(watched.plot("loss", per="epoch")) == pytest.approx(
        [loss[:9].mean(), loss[9:].mean()]
    )
    last = [r for _, r in p.epochs(BATCH, n_epochs=2)][-1]
    assert ydata(last.plot("loss", per="epoch")) == ydata(watched.plot("loss", per="epoch"))


def test_per_epoch_of_a_variable_with_two_values_a_batch_needs_a_watched_run():
    p = linked(Pipeline().track_twice())
    with pytest.raises(FpipeError, match=r"watch the run epoch by epoch"):
        p.run(BATCH, n_epochs=2).plot("loss", per="epoch")
    (first, second) = [r for _, r in p.epochs(BATCH, n_epochs=2)]
    assert len(first.plot("loss", per="epoch").axes[0].lines[0].get_ydata()) == 1
    assert len(ydata(second.plot("loss", per="epoch"))) == 2


def test_several_variables_get_axes_of_their_own_and_ax_draws_into_given_axes():
    p = linked(Pipeline().track().update_variable("rates", 0.1, mode="a"))
    result = p.run(BATCH)
    fig = result.plot("loss", "rates")
    assert len(fig.axes) == 2 and ydata(fig, axes=1) == [0.1] * 10
    mine = Figure()
    ax = mine.add_subplot()
    assert result.plot("rates", ax=ax) is mine and ydata(mine) == [0.1] * 10
    with pytest.raises(TypeError, match=r"draws one variable"):
        result.plot("loss", "rates", ax=ax)


def test_the_figure_saves_without_a_display_or_pyplot(tmp_path):
    path = tmp_path / "loss.png"
    code = (
        "import os, sys, fpipe\n"
        "os.environ.pop('DISPLAY', None)\n"
        "p = fpipe.Dataset(8).p.init_variable('n', []).update_variable('n', 1, mode='a')\n"
        f"p.run(2).plot('n').savefig({str(path)!r})\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # no pyplot: no GUI backend, no global figures
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_plots_say_what_to_do():
    result = linked(Pipeline().track()).run(BATCH)
    with pytest.raises(FpipeError, match=r"no variable 'los'.*Did you mean 'loss'\?"):
        result.plot("los")
    with pytest.raises(FpipeError, match=r"holds float 0.1, not a list of numbers.*mode='a'"):
        result.plot("lr")
    with pytest.raises(ValueError, match=r"plot\(per=\.\.\.\) is 'batch' or 'epoch', not 'week'"):
        result.plot("loss", per="week")
    with pytest.raises(ValueError, match=r"plot\(smooth=\.\.\.\) is a weight in \[0, 1\)"):
        result.plot("loss", smooth=1.5)
    with pytest.raises(TypeError, match=r"needs the name of at least one variable"):
        result.plot()
    with pytest.raises(FpipeError, match=r"holds no run's results.*\.run\(32\)\.plot"):
        linked(Pipeline().track()).plot("loss")
    copied = pickle.loads(pickle.dumps(result))
    assert ydata(copied.plot("loss")) == result.get_variable("loss")  # the values travel
    with pytest.raises(FpipeError, match=r"needs the epochs of the run.*unpickled"):
        copied.plot("loss", per="epoch")  # the record of the run does not


def test_without_matplotlib_plot_says_what_to_install(monkeypatch):
    result = linked(Pipeline().track()).run(BATCH)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    with pytest.raises(FpipeError, match=r"needs matplotlib.*pip install 'fpipe-ml\[plot\]'"):
        result.plot("loss")
