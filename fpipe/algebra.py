"""The pipeline algebra: a pipeline as a persistent value, and the operators on it.

:class:`PipelineValue` is everything a :class:`~fpipe.Pipeline` is, without running:
its steps (data-only records), the dataset it is linked to, its config, stored run
arguments, its model environment (static and imported descriptors) and, for a
pipeline that ``run()`` returned, the final environment of that run. Every method
returns a new value; none changes the one it is called on. ``==`` means "runs alike":
equal pipelines give the same batches and variables for the same run arguments and
seed (see docs/laws.md).

>>> from fpipe import Pipeline
>>> p = Pipeline().init_variable("n", 0)
>>> p + Pipeline() == p == Pipeline() + p, p * 2 == p + p, len(p * 0)
(True, True, 0)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pyrsistent import PMap, PVector, pmap, pvector

from .check import check_pipeline
from .dataset import Dataset
from .declarations import Declarations
from .env import Environment
from .errors import (
    PipelineCheckError,
    PipelineDefinitionError,
    UnknownActionError,
    did_you_mean,
)
from .expressions import Expr, leaves
from .steps import (
    ActionStep,
    ApplyStep,
    Join,
    Maybe,
    Merge,
    Rebatch,
    Repeat,
    Step,
    action_definition,
)
from .values import freeze_kwargs, value_hash, values_equal

if TYPE_CHECKING:
    from .batch import Batch

__all__ = ["PipelineValue", "freeze_config"]

_NO_MODELS = Environment()


def freeze_config(config: Mapping[str, Any] | None) -> PMap:
    """A config dict as a persistent map of frozen values."""
    if config is None:
        return pmap()
    if isinstance(config, PipelineValue) or not isinstance(config, Mapping):
        raise TypeError(f"a pipeline config must be a dict, got {type(config).__name__}")
    return freeze_kwargs(config)


class PipelineValue(Declarations):
    """A lazy, immutable description of batch processing (the base of ``Pipeline``)."""

    __slots__ = ("__weakref__", "_config", "_dataset", "_env", "_lazy", "_models", "_steps")
    _expression_operand = False  # `C("n") * p` is `p * C("n")`, not an expression

    # A persistent vector: adding a step shares the ones before (a tuple would be copied
    # whole, and folding ``p = p + step`` would cost O(n^2)).
    _steps: PVector[Step]
    _dataset: Dataset | None
    _config: PMap
    _lazy: PMap | None
    _models: Environment
    _env: Environment | None

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self._set((), None, freeze_config(config), None, _NO_MODELS, None)

    def _set(
        self,
        steps: Sequence[Step],
        dataset: Dataset | None,
        config: PMap,
        lazy: PMap | None,
        models: Environment,
        env: Environment | None,
    ) -> None:
        object.__setattr__(self, "_steps", steps if isinstance(steps, PVector) else pvector(steps))
        object.__setattr__(self, "_dataset", dataset)
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_lazy", lazy)
        object.__setattr__(self, "_models", models)
        object.__setattr__(self, "_env", env)

    def _new(self, **changes: Any) -> Any:
        fields: dict[str, Any] = {
            "steps": self._steps,
            "dataset": self._dataset,
            "config": self._config,
            "lazy": self._lazy,
            "models": self._models,
            "env": None,  # a new description: its runs will produce their own results
        }
        fields.update(changes)
        new = object.__new__(type(self))
        new._set(**fields)
        return new

    def _with_steps(self, *steps: Step, models: Environment | None = None) -> Any:
        if self._dataset is not None:
            _validate(steps, self._dataset.batch_class)
        return self._new(steps=self._steps.extend(steps), models=models or self._models)

    def _with_env(self, env: Environment) -> Any:
        """This pipeline holding ``env``, the final environment of a run of it."""
        return self._new(env=env)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"Pipeline is immutable; cannot set {name!r}. Every method returns a new "
            "pipeline: `p = p.some_action()`."
        )

    # -- value semantics ------------------------------------------------------------------
    @property
    def steps(self) -> tuple[Step, ...]:
        """The pipeline's steps, in order: data-only records (see ``fpipe.steps``)."""
        return tuple(self._steps)

    @property
    def dataset(self) -> Dataset | None:
        """The dataset this pipeline is linked to (``pipeline << dataset``), or None."""
        return self._dataset

    @property
    def config(self) -> PMap:
        """The pipeline's config (``Pipeline(config=...)``), frozen: model factories
        read their part of it, and actions may read it as ``self.pipeline.config``."""
        return self._config

    @property
    def batch_class(self) -> type[Batch] | None:
        """The batch class of the linked dataset, or None before the pipeline is linked."""
        return self._dataset.batch_class if self._dataset is not None else None

    @property
    def model_env(self) -> Environment:
        """The static and imported model descriptors this pipeline's runs start with."""
        return self._models

    @property
    def result_env(self) -> Environment | None:
        """The final environment of the run that returned this pipeline, else None."""
        return self._env

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PipelineValue):
            return NotImplemented
        return (
            self._steps == other._steps
            and self._dataset == other._dataset
            and values_equal(self._config, other._config)
            and values_equal(self._lazy or {}, other._lazy or {})
            and _same_models(self._models, other._models)
            and _same_result(self._env, other._env)
        )

    def __hash__(self) -> int:
        return hash((self._steps, self._dataset, value_hash(self._config), self._env is None))

    def __len__(self) -> int:
        return len(self._steps)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        head = []
        if self._dataset is not None:
            head.append(f"dataset={self._dataset!r}")
        if self._config:
            head.append(f"config={dict(self._config)!r}")
        if self._lazy:
            head.append(f"run_args={dict(self._lazy)!r}")
        if self._env is not None:
            head.append(f"result_variables={sorted(self._env.variables)}")
        if not self._steps:
            return f"{type(self).__name__}({', '.join(head)})"
        lines = [f"    {i}: {s.label}" for i, s in enumerate(self._steps)]
        return (
            f"{type(self).__name__}("
            + "".join(h + ", " for h in head)
            + "steps=[\n"
            + "\n".join(lines)
            + "\n])"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        lazy = dict(self._lazy) if self._lazy is not None else None
        return (
            _rebuild,
            (
                type(self),
                tuple(self._steps),
                self._dataset,
                dict(self._config),
                lazy,
                self._models,
                self._env,
            ),
        )

    # -- algebra --------------------------------------------------------------------------
    def __add__(self, other: object) -> Any:
        if not isinstance(other, PipelineValue):
            if isinstance(other, Dataset):
                raise TypeError(_ADD_DATASET)
            return NotImplemented
        dataset = self._dataset
        if other._dataset is not None:
            if dataset is not None and dataset is not other._dataset and dataset != other._dataset:
                raise PipelineDefinitionError(
                    "cannot add two pipelines linked to different datasets; link the sum "
                    "instead: `(template_a + template_b) << dataset`"
                )
            dataset = other._dataset
        if self._lazy is not None and other._lazy is not None and self._lazy != other._lazy:
            raise PipelineDefinitionError(
                "cannot add two pipelines with different lazy run arguments"
            )
        if dataset is not None:  # only the steps new to the batch class: linear folds
            _validate_for(self, dataset.batch_class)
            _validate_for(other, dataset.batch_class)
        return self._new(
            steps=self._steps.extend(other._steps),
            dataset=dataset,
            config=self._config.update(other._config),
            lazy=self._lazy if self._lazy is not None else other._lazy,
            models=_union(self._models, other._models),
        )

    def __radd__(self, other: object) -> Any:
        if isinstance(other, Dataset):
            raise TypeError(_ADD_DATASET)
        return NotImplemented

    def __mul__(self, n: object) -> Any:
        if isinstance(n, Expr):  # `p * C("repeats")`: the count the config gives, per run
            _config_only("*", n, "a whole number")
            _repeatable(self._steps, n)
            return self._new(steps=(Repeat(tuple(self._steps), n),))
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            if isinstance(n, numbers.Number):
                raise TypeError(
                    f"a pipeline repeats a whole number of times: `pipeline * 3`, not * {n!r}"
                )
            return NotImplemented
        if n < 0:
            raise ValueError(f"a pipeline can be repeated n >= 0 times, not {n}")
        if n == 0:
            return self._new(steps=(), models=_NO_MODELS)
        return self._new(steps=pvector(tuple(self._steps) * int(n)))

    __rmul__ = __mul__

    def __matmul__(self, prob: object) -> Any:
        if isinstance(prob, Expr):  # `p @ C("aug_prob")`: the probability the config gives
            _config_only("@", prob, "a probability in [0, 1]")
            return self._new(steps=(Maybe(tuple(self._steps), prob),))
        if (
            isinstance(prob, bool)
            or not isinstance(prob, numbers.Real)
            or not 0 <= float(prob) <= 1
        ):
            raise ValueError(f"`pipeline @ prob` takes a probability in [0, 1], not {prob!r}")
        return self._new(steps=(Maybe(tuple(self._steps), float(prob)),))

    def __lshift__(self, other: object) -> Any:
        if isinstance(other, Dataset):
            _validate_for(self, other.batch_class)
            return self._new(dataset=other)
        if isinstance(other, Mapping) and not isinstance(other, PipelineValue):
            return self._new(config=self._config.update(freeze_config(other)))
        if isinstance(other, PipelineValue):
            raise TypeError("`<<` links a dataset or merges a config dict; add pipelines with `+`")
        return NotImplemented

    def __rrshift__(self, other: object) -> Any:
        if isinstance(other, Dataset):
            return self << other
        return NotImplemented

    def __rshift__(self, other: object) -> Any:
        if isinstance(other, Dataset):
            raise TypeError(
                "`pipeline >> dataset` is the wrong way round: link with `pipeline << dataset` "
                "or `dataset >> pipeline`"
            )
        return NotImplemented

    # -- steps ----------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._dataset is not None:
            try:
                action_definition(self._dataset.batch_class, name)
            except UnknownActionError as exc:
                methods = [n for n in dir(type(self)) if not n.startswith("_")]
                hint = did_you_mean(name, methods)
                if not hint or "Did you mean" in str(exc):
                    raise
                raise UnknownActionError(
                    f"{exc}{hint.replace('Did you mean', 'Or did you mean the pipeline method')}"
                ) from None

        def add_step(*args: Any, **kwargs: Any) -> Any:
            return self._with_steps(ActionStep(name, args, kwargs))

        add_step.__name__ = name
        return add_step

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        if self._dataset is not None:
            cls = self._dataset.batch_class
            names.update(
                n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))
            )
        return sorted(names)

    def action(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Add the action ``name`` (also for actions named like a Pipeline method)."""
        return self._with_steps(ActionStep(name, args, kwargs))

    def apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Add a plain function ``fn(batch, *args, **kwargs) -> batch`` as a step."""
        if not callable(fn) or isinstance(fn, Expr):
            raise TypeError(f"apply() takes a function batch -> batch, not {type(fn).__name__}")
        return self._with_steps(ApplyStep(fn, args, kwargs))

    def join(self, *sources: PipelineValue | Dataset) -> Any:
        """Pass the batches of ``sources`` with the same ids to the next action."""
        _check_sources("join", sources)
        return self._with_steps(Join(tuple(sources)))

    def merge(
        self, *sources: PipelineValue | Dataset, merge_fn: Callable[..., Any] | None = None
    ) -> Any:
        """Concatenate each batch with the next batch of each source."""
        _check_sources("merge", sources)
        pipelines = tuple(s.p if isinstance(s, Dataset) else s for s in sources)
        return self._with_steps(Merge(pipelines, merge_fn))

    def rebatch(self, batch_size: int, merge_fn: Callable[..., Any] | None = None) -> Any:
        """Regroup the items into batches of ``batch_size`` (the last one may be smaller)."""
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1
        ):
            raise ValueError(f"rebatch needs a positive int batch_size, not {batch_size!r}")
        return self._with_steps(Rebatch(int(batch_size), merge_fn))

    # -- checking -------------------------------------------------------------------------
    def check(self) -> Any:
        """This pipeline, if it passes :mod:`fpipe.check` (arguments, models, variables,
        components, config keys); else a :class:`~fpipe.errors.PipelineCheckError` that
        lists every problem. Each run makes the same check before its first batch.

        >>> from fpipe import Pipeline, PipelineCheckError
        >>> p = Pipeline().init_variable("n", 0).update_variable("n", 1)
        >>> p.check() is p
        True
        >>> try:
        ...     Pipeline().update_variable("m", 1).check()
        ... except PipelineCheckError as error:
        ...     print(error.problems[0])
        step 0 `update_variable('m', 1, mode='w')`: variable 'm' is never declared. Add .init_variable('m', default) to the pipeline
        """
        problems = check_pipeline(self)
        if problems:
            raise PipelineCheckError(problems)
        return self


_ADD_DATASET = (
    "cannot add a dataset and a pipeline with `+`: link the dataset with `pipeline << dataset` "
    "or `dataset >> pipeline`"
)


def _config_only(op: str, value: Expr, what: str) -> None:
    """Refuse an expression that reads more than the config as the operand of ``op``."""
    for leaf in leaves(value):
        if leaf.kind != "C":
            raise PipelineDefinitionError(
                f"`pipeline {op} {value!r}`: `{op}` takes {what} or an expression of the "
                f"pipeline's config such as C('key'), read when the run starts; {leaf!r} is "
                "not the config"
            )


def _repeatable(steps: Sequence[Step], times: Expr) -> None:
    for step in steps:
        if isinstance(step, (Rebatch, Merge)):
            kind = "rebatch" if isinstance(step, Rebatch) else "merge"
            raise PipelineDefinitionError(
                f"`pipeline * {times!r}`: a pipeline with {kind}(...) ({step.label}) cannot be "
                "repeated a number of times the config gives; repeat it a fixed number of "
                "times (`pipeline * 3`) or move the step out of the repeated part"
            )
        if isinstance(step, (Maybe, Repeat)):
            _repeatable(step.steps, times)


def _validate(steps: Sequence[Step], batch_class: type) -> None:
    for step in steps:
        for name in step.action_names():
            action_definition(batch_class, name)


def _validate_for(p: PipelineValue, batch_class: type) -> None:
    """Check ``p``'s steps against ``batch_class``, unless ``p`` is linked to a dataset of
    that class: every step of a linked pipeline was checked when it joined it (by ``<<``,
    ``+`` or a step method), so folding ``p = p + step`` checks each step once."""
    if p._dataset is None or p._dataset.batch_class is not batch_class:
        _validate(p._steps, batch_class)


def _union(a: Environment, b: Environment) -> Environment:
    if b is _NO_MODELS or (not b.static and not b.imported):
        return a
    if a is _NO_MODELS or (not a.static and not a.imported):
        return b
    return replace(a, static=a.static.update(b.static), imported=a.imported.update(b.imported))


def _same_table(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)


def _same_models(a: Environment, b: Environment) -> bool:
    """Models compare as values: the same object, or equal by their own ``==`` (numpy
    weights by contents; a Keras or torch model only to itself)."""
    return a is b or (_same_table(a.static, b.static) and _same_table(a.imported, b.imported))


def _same_result(a: Environment | None, b: Environment | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or (
        values_equal(a.variables, b.variables)
        and _same_table(a.dynamic, b.dynamic)
        and _same_models(a, b)
    )


def _check_sources(what: str, sources: tuple[Any, ...]) -> None:
    if not sources:
        raise ValueError(f"{what}() needs at least one source (a Pipeline or a Dataset)")
    for s in sources:
        if not isinstance(s, (PipelineValue, Dataset)):
            raise TypeError(f"{what}() sources are Pipelines or Datasets, not {type(s).__name__}")
        if isinstance(s, PipelineValue) and s.dataset is None:
            raise PipelineDefinitionError(
                f"a {what}() source pipeline must be linked to a dataset: `source << dataset`"
            )


def _rebuild(
    cls: type[PipelineValue],
    steps: tuple[Step, ...],
    dataset: Dataset | None,
    config: Mapping[str, Any],
    lazy: Mapping[str, Any] | None,
    models: Environment,
    env: Environment | None,
) -> PipelineValue:
    p = object.__new__(cls)
    p._set(steps, dataset, pmap(config), pmap(lazy) if lazy is not None else None, models, env)
    return p
