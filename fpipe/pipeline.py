"""Pipeline: a persistent value describing what to do with each batch, and how to run it.

Every method returns a new pipeline; none changes the one it is called on.

>>> import numpy as np
>>> from fpipe import Batch, Dataset, Pipeline, action
>>> class Numbers(Batch):
...     @action
...     def add(self, k):
...         return self.replace(data=self.data + k)
>>> template = Pipeline().add(1).add(10)
>>> ds = Dataset(6, Numbers, preloaded=np.arange(6))
>>> [b.data.tolist() for b in (template << ds).gen_batch(3)]
[[11, 12, 13], [14, 15, 16]]
>>> Pipeline() + template == template == template + Pipeline()
True

Algebra (see docs/laws.md and :mod:`fpipe.algebra`): ``+`` concatenates, ``* n``
repeats, ``@ prob`` runs a pipeline on a batch with probability ``prob``, ``<<`` links
a dataset (or merges a config dict). Running (``gen_batch``, ``iterate``, ``run``,
``next_batch``) never writes into the pipeline; ``run()`` returns a new pipeline
holding what the run produced, which compares by that result too.
"""

from __future__ import annotations

import copy
import functools
import inspect
import numbers
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pyrsistent import pmap

from .batch import Batch
from .dataset import Dataset
from .errors import FpipeError, did_you_mean
from .executors import Executor
from .iterator import PipelineIterator
from .plan import BatchPlan, IterState
from .progress import EpochEnd, as_bar
from .records import RunRecords

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

__all__ = ["RUN_DEFAULTS", "Pipeline"]

RUN_ORDER = ("batch_size", "shuffle", "n_epochs", "n_iters", "drop_last", "prefetch")
RUN_DEFAULTS: dict[str, Any] = {
    "batch_size": None,
    "shuffle": False,
    "n_epochs": 1,
    "n_iters": None,
    "drop_last": False,
    "prefetch": 0,
    "seed": None,
    "executor": None,
}


class _Default:
    """A run argument left at its default (shown as the default by ``help()``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


# Defaults as module-level singletons: a given argument is anything that is not one.
_FALSE: Any = _Default(False)
_ONE: Any = _Default(1)
_ZERO: Any = _Default(0)
_NONE: Any = _Default(None)

_F = TypeVar("_F", bound=Callable[..., Any])


def _run_method(fn: _F) -> _F:
    """Wrap a running method so that a misspelt keyword gets a did-you-mean hint
    (Python's own error says only "unexpected keyword argument")."""
    names = [n for n in inspect.signature(fn).parameters if n != "self"]
    known = frozenset(names)

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for key in kwargs:
            if key not in known:
                raise TypeError(
                    f"{fn.__name__}() got an unexpected keyword argument {key!r}."
                    f"{did_you_mean(key, names)} Its arguments: {', '.join(names)}."
                )
        return fn(*args, **kwargs)

    return checked  # type: ignore[return-value]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _count(what: str, name: str, value: Any, *, optional: bool, hint: str) -> None:
    """Check a run argument that counts something: a positive int (or None if optional)."""
    if value is None and optional:
        return
    if not _is_int(value):
        kind = "a positive int or None" if optional else "a positive int"
        raise TypeError(
            f"{what}(): {name} must be {kind}, got {value!r} ({type(value).__name__}); {hint}"
        )
    if value <= 0:
        raise ValueError(f"{what}(): {name} must be positive, got {value}; {hint}")


def _merged_run_args(
    stored: Mapping[str, Any] | None,
    dataset: Dataset | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    what: str,
) -> dict[str, Any]:
    """Run arguments ``args`` (in RUN_ORDER) and ``kwargs`` over the ``stored`` ones (of
    ``run(..., lazy=True)``) over the defaults, checked."""
    if len(args) > len(RUN_ORDER):
        raise TypeError(f"too many positional arguments; the order is {', '.join(RUN_ORDER)}")
    given = dict(zip(RUN_ORDER, args, strict=False))
    for key, value in (kwargs or {}).items():
        if key not in RUN_DEFAULTS:
            raise TypeError(
                f"unknown run argument {key!r}.{did_you_mean(key, RUN_DEFAULTS)} "
                f"Run arguments: {', '.join(RUN_DEFAULTS)}"
            )
        if key in given:
            raise TypeError(f"run argument {key!r} given twice")
        given[key] = value
    given = {k: v for k, v in given.items() if not isinstance(v, _Default)}
    if given.get("batch_size", 0) is None:
        del given["batch_size"]
    merged = {**RUN_DEFAULTS, **dict(stored or {}), **given}
    if merged["batch_size"] is None:
        raise TypeError(
            "batch_size is required: pass it, e.g. `run(32)`, or store the run arguments "
            "first with `run(32, ..., lazy=True)`"
        )
    _check_run_args(merged, dataset, what)
    return merged


def _check_run_args(params: Mapping[str, Any], dataset: Dataset | None, what: str) -> None:
    """Check the values of the run arguments now, before anything runs (a lazy run's too)."""
    size = params["batch_size"]
    _count(what, "batch_size", size, optional=False, hint=f"the items per batch, e.g. {what}(32)")
    if dataset is not None and size > len(dataset):
        raise ValueError(
            f"{what}(): batch_size={size} is larger than the dataset ({len(dataset)} items); "
            f"use a batch_size <= {len(dataset)}"
        )
    _count(
        what,
        "n_epochs",
        params["n_epochs"],
        optional=True,
        hint="the passes over the dataset, e.g. n_epochs=2 (None with n_iters: run by batches)",
    )
    _count(what, "n_iters", params["n_iters"], optional=True, hint="the batches to run, or None")
    drop_last = params["drop_last"]
    if not isinstance(drop_last, (bool, np.bool_)):
        raise TypeError(f"{what}(): drop_last must be True or False, got {drop_last!r}")
    prefetch = params["prefetch"]
    if not _is_int(prefetch) or prefetch < 0:
        raise ValueError(
            f"{what}(): prefetch must be an int >= 0 (the batches computed ahead; 0: none), "
            f"got {prefetch!r}"
        )
    shuffle, seed = params["shuffle"], params["seed"]
    for name, value in (("shuffle", shuffle), ("seed", seed)):
        if _is_int(value) and value < 0:
            raise ValueError(f"{what}(): {name} must be non-negative, got {value}")
    if not (
        shuffle is None
        or isinstance(shuffle, (bool, np.bool_, np.random.Generator))
        or _is_int(shuffle)
        or callable(shuffle)
    ):
        raise TypeError(
            f"{what}(): shuffle must be a bool, an int seed, a numpy Generator or a callable "
            f"f(positions, generator), not {type(shuffle).__name__} ({shuffle!r})"
        )
    if not (seed is None or isinstance(seed, np.random.Generator) or _is_int(seed)):
        raise TypeError(
            f"{what}(): seed must be an int, a numpy Generator or None, not "
            f"{type(seed).__name__} ({seed!r})"
        )
    if seed is not None and (
        isinstance(shuffle, np.random.Generator) or (_is_int(shuffle) and shuffle != seed)
    ):
        raise ValueError(
            f"{what}(): shuffle={shuffle!r} gives the seed, and seed={seed!r} is given too; "
            f"pass only one: shuffle=True, seed={seed!r} or shuffle=<seed>"
        )
    executor = params["executor"]
    if not (
        executor is None
        or isinstance(executor, Executor)
        or (isinstance(executor, str) and executor in _EXECUTORS)
        or (type(executor).__module__.startswith("distributed") and hasattr(executor, "submit"))
    ):
        made = (
            f" (pass an instance: `executor={executor.__name__}(...)`)"
            if isinstance(executor, type) and issubclass(executor, Executor)
            else ""
        )
        raise ValueError(
            f"{what}(): unknown executor {executor!r}{made}; use None, "
            f"{', '.join(map(repr, _EXECUTORS))}, a distributed.Client or an fpipe Executor"
        )


_EXECUTORS = ("threads", "processes", "sequential")


class Pipeline(RunRecords):
    """A lazy, immutable description of batch processing; see the module docs.

    >>> import numpy as np
    >>> from fpipe import Dataset
    >>> p = Pipeline().init_variable("n", []).update_variable("n", lambda b: len(b), mode="a")
    >>> linked = p << Dataset(5)
    >>> linked.run(2).get_variable("n"), linked.get_variable("n")
    ([2, 2, 1], [])
    >>> Pipeline() + p == p == p + Pipeline(), p * 2 == p + p
    (True, True)
    """

    __slots__ = ()

    # -- run arguments --------------------------------------------------------------------
    def _run_args(
        self,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        what: str = "run",
    ) -> dict[str, Any]:
        """The run arguments: stored ones (``run(..., lazy=True)``) under given ones,
        checked (``what`` names the method in the messages)."""
        return _merged_run_args(self._lazy, self._dataset, args, kwargs, what)

    def _plan(self, params: Mapping[str, Any], what: str = "cannot run") -> BatchPlan:
        """The batching plan of a run with ``params`` over the linked dataset."""
        dataset = self._require_dataset(what)
        return BatchPlan.make(
            len(dataset),
            params["batch_size"],
            shuffle=params["shuffle"],
            n_epochs=params["n_epochs"],
            n_iters=params["n_iters"],
            drop_last=params["drop_last"],
            seed=params["seed"],
        )

    def _iterator(self, params: dict[str, Any], **extra: Any) -> PipelineIterator:
        plan = self._plan(params)
        # a seed the caller chose: a resume state with another seed is refused, not obeyed
        shuffle = params["shuffle"]
        seed_given = params["seed"] is not None or (
            isinstance(shuffle, numbers.Integral) and not isinstance(shuffle, (bool, np.bool_))
        )
        return PipelineIterator(
            self,
            plan,
            prefetch=params["prefetch"],
            executor=params["executor"],
            seed_given=seed_given,
            bar=params.get("bar"),  # set by _watch_args, for the runs that ask
            profile=params.get("profile", False),
            **extra,
        )

    def _require_dataset(self, what: str) -> Dataset:
        if self._dataset is None:
            raise FpipeError(
                f"{what}: this pipeline has no dataset. Link one: `pipeline << dataset` or "
                "`dataset >> pipeline` (a template pipeline never runs by itself)."
            )
        return self._dataset

    # -- running --------------------------------------------------------------------------
    @_run_method
    def iterate(
        self,
        batch_size: int | None = None,
        shuffle: Any = _FALSE,
        n_epochs: int | None = _ONE,
        n_iters: int | None = _NONE,
        drop_last: bool = _FALSE,
        prefetch: int = _ZERO,
        *,
        seed: Any = _NONE,
        executor: Any = _NONE,
        state: IterState | Mapping[str, Any] | None = None,
        bar: Any = None,
        profile: bool = False,
    ) -> PipelineIterator:
        """An iterator over this pipeline's output batches; it can report a resumable state.

        ``shuffle``: False, True or an int seed; ``n_epochs=None`` (with ``n_iters``)
        runs until ``n_iters`` batches; ``prefetch``: batches computed ahead by the
        pure steps; ``seed``: the run's seed; ``executor``: ``"threads"``,
        ``"processes"``, a ``distributed.Client`` or an Executor; ``state``: resume;
        ``bar``: a progress bar (True, variable names to show, or a
        :class:`~fpipe.progress.Bar`); ``profile``: time every step (read
        ``iterator.profile``). ``len(iterator)`` is the plan's number of batches and
        ``iterator.position`` how far it is.
        """
        args = (batch_size, shuffle, n_epochs, n_iters, drop_last, prefetch)
        params = self._run_args(args, {"seed": seed, "executor": executor}, "iterate")
        params.update(_watch_args(bar, profile, "iterate"))
        return self._iterator(params, state=state)

    @_run_method
    def gen_batch(
        self,
        batch_size: int | None = None,
        shuffle: Any = _FALSE,
        n_epochs: int | None = _ONE,
        n_iters: int | None = _NONE,
        drop_last: bool = _FALSE,
        prefetch: int = _ZERO,
        *,
        seed: Any = _NONE,
        executor: Any = _NONE,
        bar: Any = None,
        profile: bool = False,
    ) -> Iterator[Batch]:
        """Iterate over output batches (the arguments of :meth:`iterate`)."""
        args = (batch_size, shuffle, n_epochs, n_iters, drop_last, prefetch)
        params = self._run_args(args, {"seed": seed, "executor": executor}, "gen_batch")
        params.update(_watch_args(bar, profile, "gen_batch"))
        return self._iterator(params)

    @_run_method
    def next_batch(
        self,
        batch_size: int | None = None,
        shuffle: Any = _FALSE,
        n_epochs: int | None = _ONE,
        n_iters: int | None = _NONE,
        drop_last: bool = _FALSE,
        prefetch: int = _ZERO,
        *,
        seed: Any = _NONE,
        executor: Any = _NONE,
    ) -> Batch:
        """The next output batch; successive calls with the same arguments continue one
        iteration (the arguments of :meth:`iterate`).

        The iteration lives beside this pipeline object, never in its value: the
        pipeline's variables, ``==``, hash and pickle never change. Read the
        iteration's variables with :meth:`iteration`. Prefer :meth:`iterate` in
        library code.
        """
        args = (batch_size, shuffle, n_epochs, n_iters, drop_last, prefetch)
        params = self._run_args(args, {"seed": seed, "executor": executor}, "next_batch")
        return self._next_of(self, self, params)

    def iteration(self) -> PipelineIterator | None:
        """The iteration :meth:`next_batch` continues on this object, or None.

        >>> from fpipe import Dataset
        >>> p = Dataset(4).p.init_variable("n", []).update_variable("n", 1, mode="a")
        >>> _ = p.next_batch(2)
        >>> p.iteration().get_variable("n"), p.get_variable("n")
        ([1], [])
        """
        cursor = _CURSORS.get(id(self))
        return cursor.iterator if cursor is not None else None

    def reset(self) -> None:
        """Stop the iteration :meth:`next_batch` continues; the next call starts afresh."""
        self._reset_of(self)

    @_run_method
    def run(
        self,
        batch_size: int | None = None,
        shuffle: Any = _FALSE,
        n_epochs: int | None = _ONE,
        n_iters: int | None = _NONE,
        drop_last: bool = _FALSE,
        prefetch: int = _ZERO,
        *,
        seed: Any = _NONE,
        executor: Any = _NONE,
        lazy: bool = False,
        checkpoint: Checkpoint | None = None,
        bar: Any = None,
        profile: bool = False,
    ) -> Pipeline:
        """Run through all batches and return a new pipeline holding the run's results.

        A run must end: ``n_epochs=None`` needs ``n_iters`` (an endless stream is for
        :meth:`iterate` or :meth:`gen_batch`). ``run(..., lazy=True)`` runs nothing: it
        checks the arguments and returns a pipeline that stores them for a later ``run()``
        or ``next_batch()``. ``checkpoint=`` (a :class:`~fpipe.Checkpoint`) saves the
        iteration state and the environment every few batches and resumes from the last
        save. The result compares by its final environment too: it runs differently from
        its definition (variables declared with ``init_on_each_run=False`` continue from
        the result's values).

        ``bar=True`` shows a progress bar (``bar=["loss"]`` also shows the variable
        ``loss``; see :mod:`fpipe.progress`); ``profile=True`` times every step, read as
        ``result.profile`` (see :mod:`fpipe.profile`). Neither changes what the run does,
        so neither is stored by ``lazy=True``, and the profile is not part of the
        result's value: ``==``, hash and pickling ignore it. ``result.plot("loss")`` draws
        a variable over the run's batches or epochs (see :mod:`fpipe.plot`).
        """
        args = (batch_size, shuffle, n_epochs, n_iters, drop_last, prefetch)
        kwargs = {"seed": seed, "executor": executor}
        if not isinstance(lazy, (bool, np.bool_)):
            raise TypeError(f"run(lazy=...) takes True or False, got {lazy!r}")
        watch = _watch_args(bar, profile, "run")
        if lazy:
            if checkpoint is not None:
                raise TypeError(
                    "run(..., lazy=True) only stores the run arguments, so checkpoint= would "
                    "be lost: pass checkpoint= to the later run()"
                )
            if watch:
                raise TypeError(
                    f"run(..., lazy=True) stores only the arguments that change what a run "
                    f"does, not how it is watched: pass {' and '.join(f'{k}=' for k in watch)} "
                    "to the later run()"
                )
            self._run_args(args, kwargs)  # validate the names and values now
            given = {
                k: v
                for k, v in (*zip(RUN_ORDER, args, strict=True), *kwargs.items())
                if not isinstance(v, _Default) and not (k == "batch_size" and v is None)
            }
            return self._new(lazy=pmap({**dict(self._lazy or {}), **given}), env=self._env)
        if checkpoint is not None:
            from .checkpoint import Checkpoint

            if not isinstance(checkpoint, Checkpoint):
                raise TypeError(
                    f"run(checkpoint=...) takes a fpipe.Checkpoint, got {checkpoint!r}; "
                    "e.g. `run(32, checkpoint=Checkpoint('run.ckpt', every=50))`"
                )
        params = self._run_args(args, kwargs)
        if params["n_epochs"] is None and params["n_iters"] is None:
            raise ValueError(
                "run(n_epochs=None) without n_iters would never end: give n_epochs (e.g. "
                "n_epochs=1) or n_iters (e.g. n_iters=1000); for an endless stream use "
                "iterate(..., n_epochs=None) or gen_batch(..., n_epochs=None) and stop when "
                "you want"
            )
        params.update(watch)
        if checkpoint is None:
            with self._iterator(params) as it:
                for _ in it:
                    pass
                return it.result()
        return checkpoint.run(self, params)

    @_run_method
    def epochs(
        self,
        batch_size: int | None = None,
        shuffle: Any = _FALSE,
        n_epochs: int | None = _ONE,
        n_iters: int | None = _NONE,
        drop_last: bool = _FALSE,
        prefetch: int = _ZERO,
        *,
        seed: Any = _NONE,
        executor: Any = _NONE,
        bar: Any = None,
        profile: bool = False,
    ) -> Iterator[tuple[int, Pipeline]]:
        """Run epoch by epoch: yield ``(epoch, result)`` after each epoch of one run.

        ``result`` is what ``run()`` returns, as the run stands at the end of epoch
        ``epoch`` (0-based): its variables, models and, with ``profile=True``, its
        profile so far. The run then goes on with the next epoch, so the batches are
        those of one ``run()`` with the same arguments. Between epochs, evaluate, save or
        stop: breaking out of the loop stops the run and its workers. ``bar=`` draws one
        bar per epoch. With ``n_epochs=None`` and no ``n_iters`` it goes on until you stop.

        >>> from fpipe import Dataset
        >>> p = Dataset(6).p.init_variable("n", []).update_variable("n", lambda b: len(b), mode="a")
        >>> for epoch, result in p.epochs(4, n_epochs=3, shuffle=True, seed=0):
        ...     print(epoch, result.get_variable("n"))
        0 [4, 2]
        1 [4, 2, 4, 2]
        2 [4, 2, 4, 2, 4, 2]
        """
        args = (batch_size, shuffle, n_epochs, n_iters, drop_last, prefetch)
        params = self._run_args(args, {"seed": seed, "executor": executor}, "epochs")
        params.update(_watch_args(bar, profile, "epochs"))
        return _epoch_results(self._iterator(params, epochs=True))

    @staticmethod
    def _next_of(owner: object, pipeline: Pipeline, params: dict[str, Any]) -> Batch:
        """The next batch of the ``next_batch`` iteration that belongs to ``owner``."""
        return _cursor_of(owner).next(pipeline, params)

    @staticmethod
    def _reset_of(owner: object) -> None:
        cursor = _CURSORS.get(id(owner))
        if cursor is not None:
            cursor.reset()

    def to_tf_dataset(self, *args: Any, output_signature: Any = None, **kwargs: Any) -> Any:
        """Stream this pipeline's batches as a ``tf.data.Dataset`` (needs the ``tf`` extra)."""
        from .tf import to_tf_dataset

        return to_tf_dataset(self, *args, output_signature=output_signature, **kwargs)


def _watch_args(bar: Any, profile: Any, what: str) -> dict[str, Any]:
    """``bar=`` and ``profile=``, checked: the run arguments of those asked for (a run
    that asks for neither keeps its arguments as they were)."""
    if not isinstance(profile, (bool, np.bool_)):
        raise TypeError(f"{what}(profile=...) takes True or False, got {profile!r}")
    watch: dict[str, Any] = {}
    shown = as_bar(bar, what)
    if shown is not None:
        watch["bar"] = shown
    if profile:
        watch["profile"] = True
    return watch


def _epoch_results(it: PipelineIterator) -> Iterator[tuple[int, Pipeline]]:
    """The results of a run watched for its epoch ends (see :meth:`Pipeline.epochs`)."""
    with it:
        for item in it:
            if isinstance(item, EpochEnd):
                yield item.epoch, it.result()


class _Cursor:
    """The iteration behind ``next_batch``: beside a pipeline or dataset, not part of it."""

    __slots__ = ("iterator", "key")

    def __init__(self) -> None:
        self.iterator: PipelineIterator | None = None
        self.key: Any = None

    def next(self, pipeline: Pipeline, params: dict[str, Any]) -> Batch:
        from .values import values_equal

        try:
            same = self.iterator is not None and values_equal(params, self.key)
        except Exception:
            same = False
        if not same:
            self.reset()
            # The iteration runs an equal stand-in: an iterator that held the pipeline (or
            # its dataset, the key of Dataset.next_batch) would keep it alive from this
            # table, and its workers would never stop.
            dataset = pipeline.dataset
            stand_in = pipeline._new(
                env=pipeline._env, dataset=None if dataset is None else copy.copy(dataset)
            )
            self.iterator = stand_in._iterator(params)
            self.key = params
        assert self.iterator is not None
        try:
            return next(self.iterator)
        except StopIteration:
            raise StopIteration(
                "next_batch: the iteration is over (n_epochs/n_iters reached); call reset() "
                "to start again"
            ) from None

    def reset(self) -> None:
        if self.iterator is not None:
            self.iterator.close()
        self.iterator = None
        self.key = None


# The iterations of next_batch, by the id of the pipeline or dataset object they belong
# to; an entry goes (and its workers stop) when that object is garbage.
_CURSORS: dict[int, _Cursor] = {}
_CURSORS_LOCK = threading.Lock()


def _cursor_of(owner: object) -> _Cursor:
    key = id(owner)
    with _CURSORS_LOCK:
        cursor = _CURSORS.get(key)
        if cursor is None:
            cursor = _CURSORS[key] = _Cursor()
            weakref.finalize(owner, _forget, key)
        return cursor


def _forget(key: int) -> None:
    with _CURSORS_LOCK:
        cursor = _CURSORS.pop(key, None)
    if cursor is not None:
        cursor.reset()


# A dataset (a description) never imports the running layer: `ds.p` makes a pipeline
# of this class, set once here, where Pipeline is defined.
Dataset._pipeline_type = Pipeline
