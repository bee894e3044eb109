"""Bar: a run's progress bar (``run(..., bar=True)``), drawn with tqdm.

``bar=True`` shows one bar for the whole run: the batches of the plan done and to
do, the epoch, the rate and the time left (tqdm chooses the notebook widget in a
Jupyter notebook, text elsewhere). ``bar=["loss", "acc"]`` also shows the latest
value of those variables (the last item of a list variable, or the value itself);
``bar="notebook"`` or ``bar="console"`` forces the kind; a :class:`Bar` gives every
option, e.g. the stream the text bar writes to. :meth:`Pipeline.epochs` draws one
bar per epoch instead.

tqdm is imported only when a bar is drawn. A run without a bar has no bar code in its
loop at all. The bar counts the plan's batches, so a batch an action skips counts
too, and it is closed when the run ends, fails or is closed.

>>> import io
>>> from fpipe import Dataset
>>> p = Dataset(8).p.init_variable("n", []).update_variable("n", lambda b: len(b), mode="a")
>>> out = io.StringIO()  # where the bar is drawn (default: standard error)
>>> _ = p.run(2, n_epochs=2, bar=Bar(["n"], file=out))
>>> out.getvalue().splitlines()[-1].split("\\r")[-1].startswith("epoch 2/2: 100%")
True
>>> "8/8" in out.getvalue(), "n=2" in out.getvalue()
(True, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .plan import BatchPlan
    from .profile import Profiler

__all__ = ["KINDS", "SKIPPED", "Bar", "EpochEnd", "Progress", "Watch", "as_bar"]

KINDS = ("auto", "console", "notebook")


@dataclass(frozen=True)
class Bar:
    """How a run shows its progress: ``run(..., bar=Bar(...))``.

    ``variables``: the variables whose latest values the bar shows; ``kind``:
    ``"auto"`` (a notebook widget in Jupyter, text elsewhere), ``"console"`` or
    ``"notebook"``; ``file``: the stream a text bar writes to (default: standard
    error); ``mininterval``: the least seconds between two redraws.

    >>> Bar(["loss"]).variables, Bar().kind
    (('loss',), 'auto')
    """

    variables: Sequence[str] = ()
    kind: str = "auto"
    file: Any = None
    mininterval: float = 0.1

    def __post_init__(self) -> None:
        names = self.variables
        if isinstance(names, str):
            names = (names,)
        if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise TypeError(
                f"Bar(variables=...) takes the names of variables, e.g. ['loss'], not {names!r}"
            )
        object.__setattr__(self, "variables", tuple(names))
        if self.kind not in KINDS:
            raise ValueError(
                f"Bar(kind=...) is one of {', '.join(map(repr, KINDS))}, not {self.kind!r}"
            )
        if isinstance(self.mininterval, bool) or not isinstance(self.mininterval, (int, float)):
            raise TypeError(f"Bar(mininterval=...) takes seconds, not {self.mininterval!r}")
        if self.mininterval < 0:
            raise ValueError(f"Bar(mininterval=...) must be >= 0, not {self.mininterval}")


def as_bar(bar: Any, what: str = "run") -> Bar | None:
    """The :class:`Bar` a ``bar=`` argument asks for, or None for no bar.

    >>> as_bar(True), as_bar(False)
    (Bar(variables=(), kind='auto', file=None, mininterval=0.1), None)
    >>> as_bar(["loss"]).variables, as_bar("notebook").kind
    (('loss',), 'notebook')
    """
    if bar is None or bar is False or (isinstance(bar, np.bool_) and not bar):
        return None
    if bar is True or isinstance(bar, np.bool_):
        return Bar()
    if isinstance(bar, Bar):
        return bar
    if isinstance(bar, str):
        if bar in KINDS:
            return Bar(kind=bar)
        raise ValueError(
            f"{what}(bar={bar!r}): a string names the kind of bar ({', '.join(map(repr, KINDS))});"
            f" to show the variable {bar!r} in the bar, pass bar=[{bar!r}]"
        )
    if isinstance(bar, (list, tuple)) and all(isinstance(n, str) for n in bar):
        return Bar(tuple(bar))
    raise TypeError(
        f"{what}(bar=...) takes True, False, 'notebook', a list of variable names to show "
        f"(bar=['loss']) or a fpipe.Bar, not {bar!r}"
    )


def _tqdm(kind: str) -> Any:
    if kind == "notebook":
        from tqdm.notebook import tqdm
    elif kind == "console":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm


def _shown(value: Any) -> str:
    """A variable's latest value as a bar shows it."""
    if isinstance(value, (list, tuple)):
        if not value:
            return "-"
        value = value[-1]
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 20 else text[:17] + "..."


class Progress:
    """A run's bar while it runs: told where the run is after each batch.

    ``per_epoch``: one bar per epoch (``epochs()``), else one for the whole run;
    ``peek(name)`` reads a variable of the run without taking it over.
    """

    def __init__(
        self, bar: Bar, plan: BatchPlan, peek: Callable[[str], Any], *, per_epoch: bool = False
    ) -> None:
        self.bar = bar
        self.plan = plan
        self.peek = peek
        self.per_epoch = per_epoch
        self._make = _tqdm(bar.kind)  # imported now: the run's clock does not count it
        self._tqdm: Any = None
        self._epoch = -1
        self._next_postfix = 0.0
        per = plan.batches_per_epoch
        if plan.n_iters is not None:
            self.n_epochs: int | None = -(-plan.n_iters // per)
        else:
            self.n_epochs = plan.n_epochs

    def _label(self, epoch: int) -> str:
        of = f"/{self.n_epochs}" if self.n_epochs is not None else ""
        return f"epoch {epoch + 1}{of}"

    def _open(self, at: tuple[int, int, int]) -> None:
        epoch, in_epoch, iteration = at
        plan = self.plan
        total: int | None
        if self.per_epoch:
            total = plan.batches_per_epoch
            if plan.n_iters is not None:
                total = min(total, plan.n_iters - (iteration - in_epoch))
            initial = in_epoch
        else:
            total, initial = plan.total_batches, iteration
        self._tqdm = self._make(
            total=total,
            initial=initial,
            desc=self._label(epoch),
            unit="batch",
            file=self.bar.file,
            mininterval=self.bar.mininterval,
            leave=True,
        )
        self._epoch = epoch

    def update(self, at: tuple[int, int, int]) -> None:
        """The run has made the batches up to ``at`` (epoch, batch in epoch, iteration)."""
        t = self._tqdm
        if t is None:
            self._open((at[0], at[1] - 1, at[2] - 1) if at[1] else at)
            t = self._tqdm
        elif at[0] != self._epoch:
            self._epoch = at[0]
            t.set_description_str(self._label(at[0]), refresh=False)
        if self.bar.variables:
            now = time.perf_counter()
            if now >= self._next_postfix:
                self._next_postfix = now + self.bar.mininterval
                self._postfix()
        t.update((at[1] if self.per_epoch else at[2]) - t.n)

    def _postfix(self) -> None:
        shown = ", ".join(f"{name}={_shown(self.peek(name))}" for name in self.bar.variables)
        self._tqdm.set_postfix_str(shown, refresh=False)

    def close(self, at: tuple[int, int, int] | None = None) -> None:
        """Close the bar; ``at``: where the run ended (it ran to its end or an epoch's)."""
        t = self._tqdm
        if t is None:
            return
        try:
            if at is not None:
                if self.bar.variables:
                    self._postfix()
                t.update((at[1] if self.per_epoch else at[2]) - t.n)
        finally:
            self._tqdm = None
            t.close()


# -- watching a run batch by batch -----------------------------------------------------------
class _Skipped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIPPED"


# What a watched run's source yields for a batch an action skipped: the watch sees every
# batch of the plan, so it knows where each epoch ends (an unwatched run yields nothing).
SKIPPED: Any = _Skipped()


class EpochEnd(NamedTuple):
    """What a run watched for ``epochs()`` yields after the last batch of an epoch."""

    epoch: int


class Watch:
    """Follows a run batch by batch for its bar, its profile's clock and its epoch ends.

    Only a run that asks for one of these has a watch: an unwatched run's loop has no
    code for them. ``where()`` is the run's position (epoch, batch in epoch, iteration)
    after its last batch; ``env()`` its variables as they are (without taking them over);
    ``marks``: the source yields :data:`SKIPPED` for a skipped batch, so epoch ends are
    known (not after a rebatch, whose batches span epochs); ``events``: yield an
    :class:`EpochEnd` after each epoch (``epochs()``).
    """

    def __init__(
        self,
        where: Callable[[], tuple[int, int, int]],
        plan: BatchPlan,
        env: Callable[[], Mapping[str, Any]],
        progress: Progress | None,
        profiler: Profiler | None,
        *,
        marks: bool,
        events: bool = False,
    ) -> None:
        self.where = where
        self.plan = plan
        self.env = env
        self.progress = progress
        self.profiler = profiler
        self.marks = marks
        self.events = events
        # per epoch ended: the length of each list variable then (None: not known)
        self.epoch_ends: list[dict[str, int]] | None = [] if marks else None
        self._ended = -1  # the iteration after which the last epoch ended

    def stream(self, source: Iterator[Any]) -> Generator[Any, None, None]:
        """``source``'s batches (and the epoch ends, with ``events``), watched."""
        where, per = self.where, self.plan.batches_per_epoch
        progress, profiler, marks = self.progress, self.profiler, self.marks
        if profiler is not None:
            profiler.start()
        self._ended = where()[2]
        ok = False
        try:
            for item in source:
                at = where()
                if progress is not None:
                    progress.update(at)
                if item is not SKIPPED:
                    if profiler is not None:
                        profiler.batches += 1
                    yield item
                if marks and at[1] == per and at[2] != self._ended:
                    yield from self._epoch_end(at)
            at = where()
            if marks and at[2] != self._ended:  # the last epoch stopped short (n_iters)
                yield from self._epoch_end(at)
            ok = True
        finally:
            if profiler is not None:
                profiler.stop()
            if progress is not None:
                progress.close(where() if ok else None)
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _epoch_end(self, at: tuple[int, int, int]) -> Iterator[EpochEnd]:
        self._ended = at[2]
        if self.epoch_ends is not None:
            lengths = {k: len(v) for k, v in self.env().items() if isinstance(v, (list, tuple))}
            self.epoch_ends.append(lengths)
        if self.progress is not None and self.progress.per_epoch:
            self.progress.close(at)
        if self.events:
            profiler = self.profiler
            if profiler is None:
                yield EpochEnd(at[0])
                return
            profiler.pause()  # the time the loop takes between epochs is not the run's
            try:
                yield EpochEnd(at[0])
            finally:
                profiler.resume()
