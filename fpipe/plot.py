"""Plots of a run's variables over its batches or epochs (``result.plot("loss")``).

A variable that an action appends to once per batch (``update_variable("loss", v,
mode="a")``) is a series: :func:`plot_variables` draws it over the batches, with a
smoothed line (an exponential moving average) over the noisy raw values, or as one
mean per epoch (``per="epoch"``). The epochs come from the :class:`History` the run
recorded: where each epoch ended in each list variable when the run was watched
batch by batch (``epochs()``, ``bar=``, ``profile=``), else the plan's batches per
epoch, for a variable with exactly one value per batch.

matplotlib (the ``plot`` extra) is imported only when a plot is drawn, and only its
object-oriented API is used: no pyplot, no GUI backend, no global figure list. Each
call returns a new ``matplotlib.figure.Figure``: save it with ``fig.savefig(path)``,
or show it in a notebook. Like a profile, the history is a record of the run, not
part of the pipeline's value.

>>> from fpipe import Dataset
>>> p = Dataset(10).p.init_variable("n", []).update_variable("n", lambda b: len(b), mode="a")
>>> fig = p.run(4, n_epochs=2).plot("n", per="epoch")
>>> fig.axes[0].lines[0].get_ydata().tolist()  # [4, 4, 2] each epoch
[3.3333333333333335, 3.3333333333333335]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import FpipeError

__all__ = ["History", "ema", "epoch_series", "plot_variables"]

PER = ("batch", "epoch")


@dataclass(frozen=True)
class History:
    """What a run recorded of its course, for plots per epoch.

    ``batches_per_epoch`` and ``iterations`` (the plan's batches from the run's start
    to where it stopped) come from the plan; ``epoch_ends`` holds, for each epoch the
    run finished while it was watched batch by batch, the length of each list variable
    at the epoch's end (None: not watched).
    """

    batches_per_epoch: int
    iterations: int
    epoch_ends: tuple[Mapping[str, int], ...] | None = None


def series(values: Any, name: str) -> np.ndarray:
    """A variable's values as a 1-d float array, or an error that says what to store."""
    if isinstance(values, (list, tuple)):
        try:
            array = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            array = None
        if array is not None and array.ndim == 1:
            return array
    raise FpipeError(
        f"plot({name!r}): the variable holds {_preview(values)}, not a list of numbers. Plot "
        f"a series: append one number per batch, e.g. "
        f".init_variable({name!r}, []) and update_variable({name!r}, value, mode='a')"
    )


def _preview(values: Any) -> str:
    text = repr(values)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(values).__name__} {text}"


def epoch_series(values: np.ndarray, name: str, history: History | None) -> np.ndarray:
    """The mean of ``values`` over each epoch (NaN for an epoch that added none)."""
    if history is None:
        raise FpipeError(
            f"plot({name!r}, per='epoch') needs the epochs of the run that made this "
            "pipeline, and this pipeline has none: it was not returned by run() or epochs() "
            "(a pipeline derived from a result, copied or unpickled keeps no record of the "
            "run). Plot per='batch', or plot the result of the run itself."
        )
    ends: list[int] | None = None
    if history.epoch_ends is not None:
        found = [e.get(name) for e in history.epoch_ends]
        if all(n is not None for n in found):
            ends = [int(n) for n in found if n is not None]
            if not ends or ends[-1] < len(values):
                ends.append(len(values))  # an epoch still running
    if ends is None:
        if len(values) != history.iterations:
            raise FpipeError(
                f"plot({name!r}, per='epoch'): {name!r} has {len(values)} values for the run's "
                f"{history.iterations} batches, so which epoch each belongs to is unknown. "
                "Append one value per batch, or watch the run epoch by epoch "
                "(pipeline.epochs(...), or run(..., bar=True))."
            )
        per = history.batches_per_epoch
        ends = [*range(per, len(values), per), len(values)]
    starts = [0, *ends[:-1]]
    return np.array(
        [values[a:b].mean() if b > a else np.nan for a, b in zip(starts, ends, strict=True)]
    )


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """The exponential moving average of ``values`` (each point keeps ``weight`` of the
    one before), debiased so that it starts at the first value.

    >>> ema(np.array([1.0, 1.0, 4.0]), 0.5).tolist()
    [1.0, 1.0, 2.7142857142857144]
    """
    out = np.empty(len(values))
    acc, norm = 0.0, 0.0
    for i, v in enumerate(values.tolist()):
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


def plot_variables(
    variables: Mapping[str, Any],
    names: Sequence[str],
    history: History | None,
    *,
    per: str = "batch",
    smooth: float | None = None,
    ax: Any = None,
) -> Any:
    """Draw each variable of ``names`` on axes of its own; return the Figure.

    In each axes, ``lines[0]`` holds the values (per batch, or the mean per epoch) and,
    when smoothed, ``lines[1]`` their exponential moving average. ``smooth`` is the
    average's weight in [0, 1) (0: no smoothed line); by default 0.9 for a series of at
    least 10 values per batch, none per epoch. ``ax``: draw the one variable into these
    matplotlib axes.
    """
    if not names:
        raise TypeError("plot() needs the name of at least one variable, e.g. plot('loss')")
    if per not in PER:
        raise ValueError(f"plot(per=...) is 'batch' or 'epoch', not {per!r}")
    if smooth is not None and (
        isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 <= smooth < 1
    ):
        raise ValueError(f"plot(smooth=...) is a weight in [0, 1) or None, not {smooth!r}")
    if ax is not None and len(names) != 1:
        raise TypeError("plot(..., ax=...) draws one variable: call it once per variable")
    data = []
    for name in names:
        if name not in variables:
            from .errors import did_you_mean

            raise FpipeError(
                f"plot({name!r}): the run has no variable {name!r} (its variables: "
                f"{sorted(variables)}).{did_you_mean(name, list(variables))}"
            )
        values = series(variables[name], name)
        data.append(epoch_series(values, name, history) if per == "epoch" else values)
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise FpipeError(
            "plot() needs matplotlib, which is not installed: pip install 'fpipe-ml[plot]'"
        ) from exc
    if ax is None:
        fig = Figure(figsize=(5.5 * len(names), 3.6), layout="constrained")
        axes = list(fig.subplots(1, len(names), squeeze=False)[0])
    else:
        fig, axes = ax.figure, [ax]
    for axis, name, y in zip(axes, names, data, strict=True):
        x = np.arange(1, len(y) + 1)
        weight = smooth if smooth is not None else (0.9 if per == "batch" and len(y) >= 10 else 0.0)
        smoothed = weight > 0 and len(y) > 1
        if per == "epoch":
            axis.plot(x, y, marker="o", label=name)
        else:
            axis.plot(x, y, alpha=0.35 if smoothed else 1.0, label=name)
        if smoothed:
            axis.plot(x, ema(y, weight), label=f"{name} (moving average, {weight:g})")
            axis.legend()
        axis.set_xlabel(per)
        axis.set_ylabel(name)
        axis.set_title(f"{name} per {per}")
        axis.grid(alpha=0.3)
    return fig
