"""Profile: where a run's time goes, step by step (``run(..., profile=True)``).

A profiled run times every call of every per-batch step (nested ones too: the steps
of ``pipeline @ prob`` have paths such as ``"2.0"``) wherever it runs: on the driver,
on prefetch worker threads, in worker processes or on Dask workers, whose timings come
back with each batch. :class:`Profile` is what the run reports: one
:class:`StepTiming` per step (calls, total, mean, median and 95th percentile, the
share of the run's wall time, where it ran), printed as an aligned table.

A run that is not profiled compiles its steps without any timing: profiling costs
nothing when it is off. A profile is a record of one run, never part of a pipeline's
value: the pipeline ``run(..., profile=True)`` returns compares, hashes and pickles as
the one an unprofiled run returns, and a pipeline derived from it has no profile.

>>> from fpipe import Dataset
>>> p = Dataset(10).p.apply(lambda b: b) @ 1.0
>>> profile = p.run(5, profile=True).profile
>>> [(s.path, s.calls, s.where) for s in profile.steps]
[('0', 2, 'driver'), ('0.0', 2, 'driver')]
>>> profile.batches
2
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .errors import FpipeError

if TYPE_CHECKING:
    from .interpreter import CompiledStep

__all__ = ["NOT_MEASURED", "Profile", "Profiler", "Recorder", "StepTiming"]

NOT_MEASURED = "not measured"

Path = tuple[int, ...]
K = TypeVar("K")


# -- the value a run reports ---------------------------------------------------------------
@dataclass(frozen=True)
class StepTiming:
    """The timings of one step in a profiled run; times in seconds.

    ``where`` is ``"driver"``, ``"threads"`` (prefetch worker threads), ``"processes"``,
    ``"dask"``, or ``"not measured"`` (an executor that does not report timings);
    ``share`` is ``total`` over the run's wall time (worker steps that overlap each
    other and the driver may add up to more than 1). ``mean``, ``p50``, ``p95`` and
    ``share`` are None for a step that never ran or was not measured.
    """

    path: str
    label: str
    where: str
    calls: int
    total: float
    mean: float | None
    p50: float | None
    p95: float | None
    share: float | None

    @property
    def depth(self) -> int:
        """How deeply the step is nested (0: a step of the pipeline itself)."""
        return self.path.count(".")


@dataclass(frozen=True)
class Profile:
    """Where a run's time went: its steps in pipeline order, the run's wall time (from
    its first batch asked for to its end; the time a loop over ``epochs()`` spends
    between epochs does not count, the time a loop over ``gen_batch()`` spends on each
    batch does) and the number of batches it produced.

    ``str(profile)`` is an aligned table; :meth:`to_pandas` a DataFrame.

    >>> t = StepTiming("0", "load()", "driver", 4, 0.02, 0.005, 0.005, 0.006, 0.5)
    >>> print(Profile((t,), wall=0.04, batches=4))
    profile of 4 batches in 40 ms (wall time), 50.0% of it in steps on the driver
    path  step    where   calls  total  mean   p50   p95  share
    0     load()  driver      4  20 ms  5 ms  5 ms  6 ms  50.0%
    """

    steps: tuple[StepTiming, ...]
    wall: float
    batches: int

    def step(self, key: str) -> StepTiming:
        """The timings of the step at path ``key`` (``"2"``, ``"2.0"``), or of the one
        step whose label starts with ``key`` (an action's name).

        >>> t = StepTiming("0", "load()", "driver", 1, 0.1, 0.1, 0.1, 0.1, 1.0)
        >>> Profile((t,), wall=0.1, batches=1).step("load").calls
        1
        """
        for s in self.steps:
            if s.path == key:
                return s
        named = [s for s in self.steps if s.label.split("(", 1)[0] == key]
        if len(named) == 1:
            return named[0]
        known = ", ".join(f"{s.path} {s.label}" for s in self.steps)
        what = "several steps are" if named else "no step is"
        raise KeyError(
            f"{what} called {key!r} in this profile: name a step by its path "
            f"(profile.step('1')). Its steps: {known}"
        )

    def slowest(self) -> StepTiming:
        """The step of the pipeline itself (not a nested one) with the largest total."""
        outer = [s for s in self.steps if s.depth == 0] or list(self.steps)
        if not outer:
            raise ValueError("this profile has no steps (the pipeline has no per-batch step)")
        return max(outer, key=lambda s: s.total)

    # -- showing it ---------------------------------------------------------------------
    @property
    def driver_share(self) -> float | None:
        """The share of the wall time spent in the steps on the driver (the rest went
        to making batches, waiting for workers and the loop that consumes the batches)."""
        if self.wall <= 0:
            return None
        return sum(s.total for s in self.steps if s.depth == 0 and s.where == "driver") / self.wall

    def __str__(self) -> str:
        head = f"profile of {self.batches} batches in {_duration(self.wall)} (wall time)"
        share = self.driver_share
        if share is not None and any(s.where == "driver" for s in self.steps):
            head += f", {100 * share:.1f}% of it in steps on the driver"
        if not self.steps:
            return head + "\n(the pipeline has no per-batch step)"
        rows = [("path", "step", "where", "calls", "total", "mean", "p50", "p95", "share")]
        for s in self.steps:
            measured = s.where != NOT_MEASURED
            rows.append(
                (
                    s.path,
                    "  " * s.depth + _shorten(s.label, 48),
                    s.where,
                    str(s.calls) if measured else "-",
                    _duration(s.total) if measured else "-",
                    _duration(s.mean),
                    _duration(s.p50),
                    _duration(s.p95),
                    "-" if s.share is None else f"{100 * s.share:.1f}%",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [head]
        for r in rows:
            cells = [
                c.ljust(w) if i < 3 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    __repr__ = __str__

    def to_pandas(self) -> Any:
        """The steps as a pandas DataFrame, one row per step (needs pandas).

        Columns: path, label, where, calls, total, mean, p50, p95 (seconds) and share.
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise FpipeError(
                "Profile.to_pandas() needs pandas, which is not installed: "
                "`pip install pandas`; or print the profile, or read profile.steps"
            ) from exc
        columns = ["path", "label", "where", "calls", "total", "mean", "p50", "p95", "share"]
        return pd.DataFrame([[getattr(s, c) for c in columns] for s in self.steps], columns=columns)

    to_dataframe = to_pandas
    """Another name for :meth:`to_pandas`."""


def _duration(seconds: float | None) -> str:
    """A duration in a readable unit: ``_duration(0.0123)`` is ``'12.3 ms'``."""
    if seconds is None:
        return "-"
    if seconds >= 1000:
        return f"{seconds:.0f} s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        value = float(f"{seconds / scale:.3g}")  # rounded first: 0.9996 s is 1 s, not 1e+03 ms
        if value >= 1:
            return f"{value:g} {unit}"
    return f"{float(f'{seconds / 1e-6:.3g}'):g} us"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# -- recording ------------------------------------------------------------------------------
class Recorder:
    """The durations of every call of the compiled steps it wrapped, by step path.

    Appending to an ``array('d')`` is atomic under the GIL, so worker threads record
    into it without a lock. It pickles empty: a worker process gets a fresh one.
    """

    __slots__ = ("steps", "times")

    def __init__(self) -> None:
        self.times: dict[Path, array[float]] = {}
        self.steps: dict[Path, CompiledStep] = {}  # what each path is (its label)

    def wrap(self, step: CompiledStep) -> CompiledStep:
        """``step`` with a function that records how long each call takes."""
        times = self.times.get(step.path)
        if times is None:
            times = self.times[step.path] = array("d")
        self.steps.setdefault(step.path, step)
        fn, add, clock = step.fn, times.append, time.perf_counter

        def timed(batch: Any) -> Any:
            start = clock()
            try:
                return fn(batch)
            finally:
                add(clock() - start)

        return step.with_fn(timed)

    def drain(self) -> dict[Path, list[float]]:
        """The durations recorded since the last drain, taken out (each one exactly once,
        even while threads record more)."""
        out: dict[Path, list[float]] = {}
        for path, times in list(self.times.items()):
            n = len(times)
            if n:
                out[path] = times[:n].tolist()
                del times[:n]
        return out

    def add(self, timings: Mapping[Path, Sequence[float]]) -> None:
        """Add durations recorded elsewhere (a worker process)."""
        for path, values in timings.items():
            times = self.times.get(path)
            if times is None:
                times = self.times[path] = array("d")
            times.extend(values)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Recorder, ())


class Profiler:
    """A profiled run's recorders (the driver's and its workers') and its clock."""

    def __init__(self) -> None:
        self.driver = Recorder()  # the run's own compiled steps
        self.workers = Recorder()  # worker threads, and what worker processes send back
        self.worker_where: str | None = "driver"  # where the workers' steps run
        self.worker_steps: frozenset[int] = frozenset()  # top-level steps run on workers
        self.started: float | None = None
        self.stopped: float | None = None
        self.paused_at: float | None = None  # epochs() waits for the loop between epochs
        self.paused = 0.0  # the time spent so, not part of the run's wall time
        self.batches = 0

    def opened(self, where: str | None, worker_steps: frozenset[int]) -> None:
        """The run's executor session started: its workers run ``worker_steps``
        (top-level step indices) and ``where`` names them (None: not measured)."""
        self.worker_where = where
        self.worker_steps = worker_steps

    def collect(
        self, results: Iterator[tuple[K, tuple[Any, ...]]]
    ) -> Iterator[tuple[K, tuple[Any, int, bool]]]:
        """A session's results, with the timings worker processes sent back (a fourth
        item) taken out and kept."""
        try:
            for key, result in results:
                if len(result) == 4:
                    self.workers.add(result[3])
                yield key, result[:3]
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def stop(self) -> None:
        if self.started is not None:
            self.resume()
            self.stopped = time.perf_counter()

    def pause(self) -> None:
        """Stop the clock while the run waits for its consumer between epochs."""
        self.paused_at = time.perf_counter()

    def resume(self) -> None:
        if self.paused_at is not None:
            self.paused += time.perf_counter() - self.paused_at
            self.paused_at = None

    def profile(self) -> Profile:
        """The profile so far (a running run's wall time runs up to now)."""
        start, stop = self.started, self.paused_at or self.stopped or time.perf_counter()
        wall = 0.0 if start is None else stop - start - self.paused
        steps = [
            self._timing(path, step.label, wall) for path, step in sorted(self.driver.steps.items())
        ]
        return Profile(tuple(steps), wall=wall, batches=self.batches)

    def _timing(self, path: Path, label: str, wall: float) -> StepTiming:
        here = self.driver.times.get(path) or array("d")
        away = self.workers.times.get(path) or array("d")
        if len(away) and len(here):
            where = f"driver, {self.worker_where or 'executor'}"
        elif len(away):
            where = self.worker_where or "executor"
        elif len(here) or path[0] not in self.worker_steps:
            where = "driver"
        else:
            where = self.worker_where or NOT_MEASURED
        name = ".".join(map(str, path))
        # copies (a slice of an array is one): workers may be appending to the originals
        times = np.concatenate([np.asarray(here[:], dtype=float), np.asarray(away[:], dtype=float)])
        if where == NOT_MEASURED or not len(times):
            return StepTiming(name, label, where, 0, 0.0, None, None, None, None)
        total = float(times.sum())
        p50, p95 = (float(q) for q in np.percentile(times, [50, 95]))
        share = total / wall if wall > 0 else None
        return StepTiming(
            name, label, where, len(times), total, total / len(times), p50, p95, share
        )
