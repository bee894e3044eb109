"""Checkers for your own actions and pipelines: purity, determinism and the algebra laws.

Each checker is a plain function that returns None when the property holds and raises
:class:`AssertionError` with a readable message when it does not: what broke, where
(the action, the executor and batch, or the law) and the difference, with the input.

Call a checker in one of two ways:

- **with values** (a batch, a pipeline, a dataset, ints): it checks them once. This is
  the way inside your own ``@given`` test, on the values that test drew;
- **with hypothesis strategies** in place of any of those values (``batches(...)``,
  ``pipelines(...)``, ``datasets(...)``, ``st.integers()``...): it runs a hypothesis
  search itself (``settings=`` a :class:`hypothesis.settings`, by default a few dozen
  examples and no deadline) and fails with the minimal example hypothesis shrank to.
  Strategies need hypothesis; values do not.

>>> import numpy as np
>>> from fpipe import Batch, Dataset, Pipeline, action
>>> class Scaled(Batch):
...     @action
...     def double(self):
...         return self.replace(data=self.data * 2)
>>> assert_pure(Scaled.double, Scaled(np.arange(3), preloaded=np.ones(3)))
>>> assert_laws(Pipeline().double(), Dataset(4, Scaled, preloaded=np.ones(4)))
"""

from __future__ import annotations

import functools
import inspect
import pickle
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..actions import ActionDefinition
from ..batch import Batch
from ..dataset import Dataset
from ..errors import ActionError, GlobalRandomWarning, ImmutableBatchError
from ..pipeline import Pipeline
from .compare import (
    Outcome,
    batch_difference,
    brief,
    components_of,
    describe_batch,
    describe_pipeline,
    difference,
    outcome_difference,
    run_outcome,
)

__all__ = ["DEFAULT_RUNS", "assert_deterministic", "assert_laws", "assert_pure"]

# The runs assert_deterministic compares with a sequential run, by label.
DEFAULT_RUNS: Mapping[str, Mapping[str, Any]] = {
    "prefetch=2": {"prefetch": 2},
    "executor='threads'": {"executor": "threads", "prefetch": 4},
    "executor='processes'": {"executor": "processes", "prefetch": 2},
}


# -- one example, or a search ----------------------------------------------------------------


def _is_strategy(value: object) -> bool:
    """Whether ``value`` is a hypothesis strategy (no strategy exists unless hypothesis
    was imported, so this never imports it)."""
    module = sys.modules.get("hypothesis.strategies")
    return module is not None and isinstance(value, module.SearchStrategy)


def _values(mapping: Mapping[str, Any]) -> Any:
    """``mapping`` itself, or a strategy of such dicts when some of its values are strategies."""
    if not any(_is_strategy(v) for v in mapping.values()):
        return dict(mapping)
    from hypothesis import strategies as st

    return st.fixed_dictionaries(
        {k: v if _is_strategy(v) else st.just(v) for k, v in mapping.items()}
    )


def _check_or_search(
    checker: str,
    check: Callable[..., None],
    values: Mapping[str, Any],
    settings: Any,
    max_examples: int,
    key: str = "",
) -> None:
    """``check(**values)`` once, or, when some values are strategies, a hypothesis search
    over them: a test called ``checker`` (and ``key``), which keys hypothesis's database."""
    if not any(_is_strategy(v) for v in values.values()):
        check(**values)
        return
    import hypothesis
    from hypothesis import HealthCheck, given
    from hypothesis import strategies as st

    if hypothesis.currently_in_test_context():
        raise TypeError(
            f"{checker}() was given strategies inside a @given test: pass it the values your "
            f"test drew instead, e.g. `@given(batch=batches(MyBatch))` then "
            f"`{checker}(..., batch, ...)` (a search inside a search would not shrink)"
        )
    drawn = {k: v if _is_strategy(v) else st.just(v) for k, v in values.items()}

    def test(**example: Any) -> None:
        check(**example)

    test.__name__ = test.__qualname__ = f"{checker}__{key}" if key else checker
    keyword = inspect.Parameter.KEYWORD_ONLY
    test.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(k, keyword) for k in drawn]
    )
    if settings is None:
        settings = hypothesis.settings(
            max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        )
    settings(given(**drawn)(test))()


def _batch_size(batch_size: int | None, dataset: Dataset) -> int:
    """``batch_size`` at most the dataset's size; None: a few batches' worth."""
    n = len(dataset)
    if batch_size is None:
        return max(1, min(4, n // 2))
    return max(1, min(int(batch_size), n))


def _linked(pipeline: Any, dataset: Any, checker: str) -> Pipeline:
    if not isinstance(pipeline, Pipeline):
        raise TypeError(
            f"{checker} needs a Pipeline (or a strategy of them, e.g. pipelines(MyBatch)), "
            f"got {pipeline!r}"
        )
    if dataset is not None:
        if not isinstance(dataset, Dataset):
            raise TypeError(
                f"{checker}: dataset= takes a Dataset (or a strategy of them, e.g. "
                f"datasets(MyBatch)), got {dataset!r}"
            )
        return pipeline << dataset
    if pipeline.dataset is None:
        raise TypeError(
            f"{checker}: the pipeline has no dataset; pass dataset=... or link one: "
            "`pipeline << dataset`"
        )
    return pipeline


def _seeded(run_kwargs: Mapping[str, Any], seed: int | None) -> dict[str, Any]:
    """The run arguments of a check: ``shuffle=True`` unless given, and ``seed`` (by default
    0), unless ``shuffle`` is an int, which gives the seed itself."""
    kwargs = {"shuffle": True, **run_kwargs}
    shuffle = kwargs["shuffle"]
    if not (isinstance(shuffle, (int, np.integer)) and not isinstance(shuffle, (bool, np.bool_))):
        kwargs["seed"] = 0 if seed is None else seed
    elif seed is not None:
        kwargs["seed"] = seed  # fpipe refuses it unless it is the same seed
    return kwargs


def _run_args(batch_size: int, kwargs: Mapping[str, Any]) -> str:
    return f"iterate({batch_size}, " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


# -- assert_pure -------------------------------------------------------------------------------


def assert_pure(
    action: ActionDefinition,
    batch: Any,
    /,
    *,
    seed: Any = 0,
    settings: Any = None,
    **arguments: Any,
) -> None:
    """Check that ``action`` is pure on ``batch``: its output is a function of its input,
    its arguments and the seed coordinates (seed, epoch, batch, step), and nothing else.

    ``action`` is the class's action (``MyBatch.augment``); ``batch`` a batch of that
    class or a strategy (``batches(MyBatch)``); ``arguments`` the action's keyword
    arguments, values or strategies; ``seed`` an int or a strategy. The action runs in a
    one-step pipeline over the batch's items, twice with the same seed, and must:

    - not write into its input (every array is read-only; a copy shows any other change),
    - not draw from numpy's global random generator (``np.random.normal``...),
    - give the same output, bit for bit, on both runs (no global state, time, counters).

    A different seed may give a different output. Effectful actions (variables, models)
    are not pure by declaration and are refused with a TypeError.

    >>> import numpy as np
    >>> from fpipe import Batch, action
    >>> class Clipped(Batch):
    ...     @action
    ...     def clip(self, limit):
    ...         x = self.data
    ...         x[x > limit] = limit  # bug: writes into the batch
    ...         return self.replace(data=x)
    >>> assert_pure(Clipped.clip, Clipped(np.arange(2), preloaded=np.ones(2)), limit=0.5)
    Traceback (most recent call last):
    ...
    AssertionError: Clipped.clip is not pure: it writes into its input in place (assignment destination is read-only); make a new array instead, e.g. `data = self.data.copy()`, and change that.
      input: Clipped ids [0 1]: data=[1. 1.]
      call: clip(limit=0.5) with seed=0
    """
    defn = _definition(action)
    values = {"batch": batch, "arguments": _values(arguments), "seed": seed}
    check = functools.partial(_check_pure, defn)
    key = defn.qualname.replace(".", "_")
    _check_or_search("assert_pure", check, values, settings, 50, key)


def _definition(action: Any) -> ActionDefinition:
    if isinstance(action, ActionDefinition):
        if action.effectful:
            raise TypeError(
                f"{action.qualname} is effectful (it reaches the run's variables, models or "
                "locks), so it is not meant to be pure: assert_pure checks pure actions"
            )
        return action
    owner = getattr(getattr(action, "func", None), "__self__", None)
    if isinstance(owner, ActionDefinition):  # batch.augment: a partial of the action's call
        raise TypeError(
            f"pass the action of the class, e.g. assert_pure({owner.qualname}, ...), not "
            "the method of a batch"
        )
    raise TypeError(
        f"assert_pure takes an @action of a Batch class, e.g. assert_pure(MyBatch.augment, "
        f"batches(MyBatch)), not {action!r}"
    )


def _copies(batch: Batch) -> dict[str, Any]:
    """Copies of the batch's arrays, by what they are: ``its indices``, ``component 'x'``."""
    out: dict[str, Any] = {"its indices": np.array(batch.indices, copy=True)}
    for name, value in components_of(batch).items():
        out[f"component {name!r}"] = None if value is None else np.array(value, copy=True)
    return out


def _changed(copies: Mapping[str, Any], batch: Batch) -> str | None:
    """How ``batch`` changed since ``copies`` were taken, or None."""
    now = _copies(batch)
    for what, before in copies.items():
        diff = difference(before, now[what])
        if diff is not None:
            return f"{what}: before vs after: {diff}"
    return None


def _in_place(exc: BaseException) -> str | None:
    """The message of a write to a read-only array behind ``exc``, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ImmutableBatchError) or (
            isinstance(seen, ValueError) and "read-only" in str(seen)
        ):
            return str(seen).split(":")[0] if isinstance(seen, ValueError) else str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _check_pure(
    defn: ActionDefinition, batch: Any, arguments: Mapping[str, Any], seed: int
) -> None:
    if not isinstance(batch, Batch):
        raise TypeError(
            f"assert_pure needs a batch (or a strategy of them, e.g. batches(MyBatch)), got {batch!r}"
        )
    cls = type(batch)
    if defn.owner is not None and not issubclass(cls, defn.owner):
        raise TypeError(
            f"{defn.qualname} is an action of {defn.owner.__name__}, not of {cls.__name__}"
        )
    call = ", ".join(f"{k}={brief(v)}" for k, v in arguments.items())

    def failure(problem: str) -> AssertionError:
        return AssertionError(
            f"{defn.qualname} is not pure: {problem}\n"
            f"  input: {describe_batch(batch)}\n"
            f"  call: {defn.name}({call}) with seed={seed}"
        )

    before = _copies(batch)
    loaded = {k: v for k, v in components_of(batch).items() if v is not None}
    dataset = Dataset(batch.indices, cls, preloaded=loaded)
    seen: list[tuple[Batch, dict[str, Any]]] = []

    def capture(b: Batch) -> Batch:  # the batch the action gets, and copies of its arrays
        seen.append((b, _copies(b)))
        return b

    pipeline = Pipeline().apply(capture).action(defn.name, **arguments) << dataset
    first = _run_watched(pipeline, len(dataset), seed, failure, cls)
    for given, copies in seen:
        diff = _changed(copies, given)
        if diff is not None:
            raise failure(f"it changed its input in place: {diff}.")
    diff = _changed(before, batch)
    if diff is not None:
        raise failure(f"it changed the batch it was given: {diff}.")
    second = _run_watched(pipeline, len(dataset), seed, failure, cls)
    if len(first) != len(second):
        skipped = "first" if not first else "second"
        diff = f"the {skipped} run skipped the batch (SkipBatch), the other did not"
    else:
        diff = next(
            (
                d
                for a, b in zip(first, second, strict=True)
                if (d := batch_difference(a, b, ("first run", "second run")))
            ),
            None,
        )
    if diff is not None:
        raise failure(
            f"two runs with the same input, arguments and seed gave different outputs: {diff}. "
            "Its output must depend on nothing else: no global state, counters or clocks."
        )


def _run_watched(
    pipeline: Pipeline,
    batch_size: int,
    seed: int,
    failure: Callable[[str], AssertionError],
    cls: type[Batch],
) -> tuple[Batch, ...]:
    """Run ``pipeline`` once, turning a write into a read-only input or a draw from numpy's
    global generator into ``failure``; other warnings pass on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GlobalRandomWarning)
        try:
            out = tuple(pipeline.gen_batch(batch_size, seed=seed))
        except ActionError as exc:
            why = _in_place(exc)
            if why is None:
                raise
            c = cls._component_names[0]
            raise failure(
                f"it writes into its input in place ({why}); make a new array instead, e.g. "
                f"`{c} = self.{c}.copy()`, and change that."
            ) from exc
    for w in caught:
        if not issubclass(w.category, GlobalRandomWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if any(issubclass(w.category, GlobalRandomWarning) for w in caught):
        raise failure(
            "it draws from numpy's global random generator (np.random.normal, "
            "np.random.shuffle...), so its output depends on global state, not on its seed; "
            "draw from `self.random` (or `self.random_for(item)`) instead."
        )
    return out


# -- assert_deterministic ----------------------------------------------------------------------


def assert_deterministic(
    pipeline: Any,
    batch_size: Any = None,
    /,
    *,
    dataset: Any = None,
    runs: Mapping[str, Mapping[str, Any]] | None = None,
    processes: bool = True,
    seed: Any = None,
    settings: Any = None,
    **run_kwargs: Any,
) -> None:
    """Check that ``pipeline`` gives the same batches and variables, bit for bit, however
    it runs: sequentially, with ``prefetch=2``, on ``executor='threads'`` and on
    ``executor='processes'``.

    ``pipeline`` is linked, or linked here to ``dataset``; each may be a strategy
    (``pipelines(...)``, ``datasets(...)``). ``batch_size`` defaults to a few batches'
    worth and is cut to the dataset's size. ``run_kwargs`` (``shuffle``, default True,
    ``n_epochs``, ``drop_last``...) go to every run, with ``seed`` (default 0; an int
    ``shuffle`` gives the seed instead). ``processes=False``
    skips the process executor, which pickles the pipeline: its batch class must be
    defined at the top level of a module that worker processes can import (not in
    ``__main__`` of an interactive session, not inside a function). ``runs`` replaces
    the compared runs: ``{label: extra run arguments}``, e.g.
    ``{"prefetch=8": {"prefetch": 8}}``; the default is :data:`DEFAULT_RUNS`.

    >>> import numpy as np
    >>> from fpipe import Batch, Dataset, action
    >>> class Jittered(Batch):
    ...     @action
    ...     def jitter(self):
    ...         return self.replace(data=self.data + self.random.normal(size=len(self)))
    >>> p = Dataset(10, Jittered, preloaded=np.zeros(10)).p.jitter()
    >>> assert_deterministic(p, 3, processes=False, n_epochs=2)
    """
    for key in ("prefetch", "executor"):
        if key in run_kwargs:
            raise TypeError(
                f"assert_deterministic compares runs with several {key}s itself; choose them "
                f"with runs={{label: {{{key!r}: ...}}}}"
            )
    chosen = dict(DEFAULT_RUNS if runs is None else runs)
    if not processes:
        chosen = {k: v for k, v in chosen.items() if v.get("executor") != "processes"}
    values = {
        "pipeline": pipeline,
        "dataset": dataset,
        "batch_size": batch_size,
        "seed": seed,
        "run_kwargs": _values(run_kwargs),
    }
    check = functools.partial(_check_deterministic, runs=chosen)
    _check_or_search("assert_deterministic", check, values, settings, 20)


def _check_deterministic(
    pipeline: Any,
    dataset: Any,
    batch_size: int | None,
    seed: int | None,
    run_kwargs: Mapping[str, Any],
    runs: Mapping[str, Mapping[str, Any]],
) -> None:
    p = _linked(pipeline, dataset, "assert_deterministic")
    assert p.dataset is not None
    bs = _batch_size(batch_size, p.dataset)
    kwargs = _seeded(run_kwargs, seed)
    reference = run_outcome(p, bs, **kwargs)
    for label, extra in runs.items():
        diff = outcome_difference(
            reference, run_outcome(p, bs, **kwargs, **extra), ("sequential", label)
        )
        if diff is not None:
            raise AssertionError(
                f"the pipeline is not deterministic: the {label} run differs from the "
                f"sequential run at {diff}\n"
                f"  pipeline: {describe_pipeline(p)}\n"
                f"  dataset: {p.dataset!r}\n"
                f"  run: {_run_args(bs, kwargs)}"
            )


# -- assert_laws -------------------------------------------------------------------------------

_EMPTY = Pipeline()


def _unpickled(p: Pipeline) -> Pipeline:
    try:
        copy: Pipeline = pickle.loads(pickle.dumps(p))
    except Exception as exc:
        raise AssertionError(
            f"law broken: pickle.loads(pickle.dumps(p)) == p: p cannot be pickled ({exc}). "
            "A pipeline pickles when its step arguments do (no lambdas or open files) and, "
            "if it is linked, its batch class is defined at the top level of a module; pass "
            "template pipelines (not linked) to assert_laws to leave the class out\n"
            f"  p = {describe_pipeline(p)}"
        ) from exc
    return copy


class _Law(NamedTuple):
    """``left`` runs like ``right`` (written over ``a, b, c``; ``p`` is ``a``)."""

    left: str
    right: str
    left_of: Callable[[Pipeline, Pipeline, Pipeline], Pipeline]
    right_of: Callable[[Pipeline, Pipeline, Pipeline], Pipeline]
    equal: bool = True  # equal as descriptions too
    variables: bool = True  # the final variables too, not only the batches


_LAWS = (
    _Law("pickle.loads(pickle.dumps(p))", "p", lambda a, b, c: _unpickled(a), lambda a, b, c: a),
    _Law("Pipeline() + p", "p", lambda a, b, c: _EMPTY + a, lambda a, b, c: a),
    _Law("p + Pipeline()", "p", lambda a, b, c: a + _EMPTY, lambda a, b, c: a),
    _Law("(a + b) + c", "a + (b + c)", lambda a, b, c: (a + b) + c, lambda a, b, c: a + (b + c)),
    _Law("p * 1", "p", lambda a, b, c: a * 1, lambda a, b, c: a),
    _Law("p * 2", "p + p", lambda a, b, c: a * 2, lambda a, b, c: a + a),
    _Law("p * 3", "p * 1 + p * 2", lambda a, b, c: a * 3, lambda a, b, c: a * 1 + a * 2),
    _Law("p * 0", "Pipeline()", lambda a, b, c: a * 0, lambda a, b, c: _EMPTY, equal=False),
    # p's variables stay declared in p @ 0 (with their initial values): batches only
    _Law("p @ 0", "Pipeline()", lambda a, b, c: a @ 0, lambda a, b, c: _EMPTY, False, False),
)


def assert_laws(
    pipelines: Any,
    dataset: Any,
    /,
    *,
    batch_size: Any = None,
    seed: Any = None,
    setup: Pipeline | None = None,
    settings: Any = None,
    **run_kwargs: Any,
) -> None:
    """Check the laws of the pipeline algebra (docs/laws.md) on your own pipelines, by
    running both sides of each law over ``dataset`` and comparing the batches and final
    variables bit for bit.

    ``pipelines`` is a pipeline ``p``, a sequence of up to three ``(a, b, c)`` (missing
    ones repeat the first), or a strategy (``pipelines(MyBatch, ...)``: three are drawn);
    ``dataset`` a Dataset or a strategy. Each side runs as ``(setup + side) << dataset``
    (``setup`` declares the variables your actions use, e.g.
    ``Pipeline().init_variable("seen", [])``) with ``iterate(batch_size, shuffle=True,
    seed=seed, **run_kwargs)`` (``seed`` as in :func:`assert_deterministic`). The laws:

    - ``p`` runs alike twice, and like ``pickle.loads(pickle.dumps(p))``;
    - ``Pipeline() + p`` and ``p + Pipeline()`` run like ``p``;
    - ``(a + b) + c`` runs like ``a + (b + c)``;
    - ``p * 1`` runs like ``p``, ``p * 2`` like ``p + p``, ``p * 3`` like ``p * 1 + p * 2``;
    - ``p * 0`` runs like ``Pipeline()``, and ``p @ 0`` gives its batches (the variables
      ``p`` declares stay declared in ``p @ 0``);

    and those written with ``==`` in docs/laws.md hold between the descriptions too (equal,
    equal hashes). ``p @ 1`` runs every step of ``p`` but draws other random numbers (its
    steps sit at other positions), so it is not compared with ``p``.

    >>> import numpy as np
    >>> from fpipe import Batch, Dataset, Pipeline, action
    >>> class Counted(Batch):
    ...     calls = [0]
    ...     @action
    ...     def stamp(self):  # bug: hidden state, so no two runs are alike
    ...         self.calls[0] += 1
    ...         return self.replace(data=self.data + self.calls[0])
    >>> assert_laws(Pipeline().stamp(), Dataset(2, Counted, preloaded=np.zeros(2)))
    Traceback (most recent call last):
    ...
    AssertionError: law broken: p runs alike twice: batch 0: component 'data' differs: first run vs second run: [1.] != [3.]
      p = [stamp()]
      each side ran as `side << Dataset(2 items, Counted, data)` with iterate(1, shuffle=True, seed=0)
    """
    if _is_strategy(pipelines):
        from hypothesis import strategies as st

        drawn: Any = st.tuples(pipelines, pipelines, pipelines)
    elif isinstance(pipelines, Pipeline):
        drawn = (pipelines,)
    elif isinstance(pipelines, Sequence) and 1 <= len(pipelines) <= 3:
        drawn = tuple(pipelines)
    else:
        raise TypeError(
            "assert_laws takes a Pipeline, up to three (a, b, c) or a strategy of pipelines "
            f"(pipelines(MyBatch, ...)), not {pipelines!r}"
        )
    values = {
        "pipelines": drawn,
        "dataset": dataset,
        "batch_size": batch_size,
        "seed": seed,
        "run_kwargs": _values(run_kwargs),
    }
    check = functools.partial(_check_laws, setup=setup if setup is not None else _EMPTY)
    _check_or_search("assert_laws", check, values, settings, 25)


def _check_laws(
    pipelines: tuple[Pipeline, ...],
    dataset: Any,
    batch_size: int | None,
    seed: int | None,
    run_kwargs: Mapping[str, Any],
    setup: Pipeline,
) -> None:
    for p in pipelines:
        if not isinstance(p, Pipeline):
            raise TypeError(f"assert_laws: expected pipelines, got {p!r}")
    a = pipelines[0]
    b = pipelines[1] if len(pipelines) > 1 else a
    c = pipelines[2] if len(pipelines) > 2 else a
    if not isinstance(dataset, Dataset):
        raise TypeError(f"assert_laws needs a Dataset (or a strategy of them), got {dataset!r}")
    bs = _batch_size(batch_size, dataset)
    kwargs = _seeded(run_kwargs, seed)

    def outcome(p: Pipeline) -> Outcome:
        return run_outcome((setup + p) << dataset, bs, **kwargs)

    def failure(law: str, diff: str) -> AssertionError:
        names = "abc" if "(a + b)" in law else "p"
        shown = ", ".join(
            f"{n} = {describe_pipeline(x)}" for n, x in zip(names, (a, b, c), strict=False)
        )
        side = "side" if setup is _EMPTY else "(setup + side)"
        return AssertionError(
            f"law broken: {law}: {diff}\n  {shown}\n"
            f"  each side ran as `{side} << {dataset!r}` with {_run_args(bs, kwargs)}"
        )

    first = outcome(a)
    diff = outcome_difference(first, outcome(a), ("first run", "second run"))
    if diff is not None:
        raise failure("p runs alike twice", diff)
    for law in _LAWS:
        left, right = law.left_of(a, b, c), law.right_of(a, b, c)
        if law.equal and (left != right or hash(left) != hash(right)):
            raise failure(f"{law.left} == {law.right}", "the descriptions differ (or their hashes)")
        expected = first if law.right == "p" else outcome(right)
        got = outcome(left)
        if not law.variables:
            expected, got = Outcome(expected.batches, {}), Outcome(got.batches, {})
        diff = outcome_difference(expected, got, (law.right, law.left))
        if diff is not None:
            raise failure(f"{law.left} runs like {law.right}", diff)
