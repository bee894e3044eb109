"""Pipeline: a persistent value describing what to do with each batch.

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

Algebra (see docs/laws.md): ``+`` concatenates, ``* n`` repeats, ``@ prob`` runs a
pipeline on a batch with probability ``prob``, ``<<`` links a dataset (or merges a
config dict). Running (``gen_batch``, ``iterate``, ``run``) never writes into the
pipeline; ``run()`` returns a new pipeline holding what the run produced.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pyrsistent import PMap, pmap

from .batch import Batch
from .dataset import Dataset
from .env import Environment, lookup_model
from .errors import FpipeError, ModelError, PipelineDefinitionError, did_you_mean
from .models import definitions_of, find_definition, model_config
from .steps import (
    ActionStep,
    ApplyStep,
    ImportModel,
    InitModel,
    InitVariable,
    Join,
    Maybe,
    Merge,
    Rebatch,
    Step,
    UpdateVariable,
    _hash,
    action_definition,
    values_equal,
)

if TYPE_CHECKING:
    from .iterator import PipelineIterator
    from .plan import IterState

__all__ = ["Pipeline"]

_RUN_ORDER = ("batch_size", "shuffle", "n_epochs", "n_iters", "drop_last", "prefetch")
_RUN_DEFAULTS: dict[str, Any] = {
    "batch_size": None,
    "shuffle": False,
    "n_epochs": 1,
    "n_iters": None,
    "drop_last": False,
    "prefetch": 0,
    "seed": None,
    "executor": None,
}


def _freeze_config(config: Mapping[str, Any] | None) -> PMap:
    if config is None:
        return pmap()
    if isinstance(config, Pipeline) or not isinstance(config, Mapping):
        raise TypeError(f"a pipeline config is a dict, not {type(config).__name__}")
    return pmap(config)


class Pipeline:
    """A lazy, immutable description of batch processing; see the module docs.

    >>> import numpy as np
    >>> from fpipe import Dataset
    >>> p = Pipeline().init_variable("n", 0).update_variable("n", lambda b: len(b), mode="a")
    >>> linked = p << Dataset(5)
    >>> linked.run(2).get_variable("n"), linked.get_variable("n")
    ([2, 2, 1], 0)
    >>> Pipeline() + p == p == p + Pipeline(), p * 2 == p + p
    (True, True)
    """

    __slots__ = ("__weakref__", "_config", "_cursor", "_dataset", "_env", "_lazy", "_steps")

    _steps: tuple[Step, ...]
    _dataset: Dataset | None
    _config: PMap
    _lazy: PMap | None
    _env: Environment | None
    _cursor: _Cursor | None

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self._set((), None, _freeze_config(config), None, None)

    def _set(
        self,
        steps: tuple[Step, ...],
        dataset: Dataset | None,
        config: PMap,
        lazy: PMap | None,
        env: Environment | None,
    ) -> None:
        object.__setattr__(self, "_steps", steps)
        object.__setattr__(self, "_dataset", dataset)
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_lazy", lazy)
        object.__setattr__(self, "_env", env)
        object.__setattr__(self, "_cursor", None)

    def _new(self, **changes: Any) -> Pipeline:
        fields: dict[str, Any] = {
            "steps": self._steps,
            "dataset": self._dataset,
            "config": self._config,
            "lazy": self._lazy,
            "env": None,  # a new description: its runs will produce their own results
        }
        fields.update(changes)
        new = object.__new__(Pipeline)
        new._set(**fields)
        return new

    def _with_steps(self, *steps: Step) -> Pipeline:
        if self._dataset is not None:
            self._validate(steps, self._dataset.batch_class)
        return self._new(steps=self._steps + steps)

    def _with_env(self, env: Environment) -> Pipeline:
        return self._new(env=env)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"Pipeline is immutable; cannot set {name!r}. Every method returns a new "
            "pipeline: `p = p.some_action()`."
        )

    # -- value semantics ------------------------------------------------------------------
    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    @property
    def dataset(self) -> Dataset | None:
        return self._dataset

    @property
    def config(self) -> PMap:
        return self._config

    @property
    def batch_class(self) -> type[Batch] | None:
        return self._dataset.batch_class if self._dataset is not None else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return (
            self._steps == other._steps
            and self._dataset == other._dataset
            and values_equal(dict(self._config), dict(other._config))
            and values_equal(dict(self._lazy or {}), dict(other._lazy or {}))
        )

    def __hash__(self) -> int:
        return hash((self._steps, self._dataset, _hash(dict(self._config))))

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
        if not self._steps:
            return f"Pipeline({', '.join(head)})"
        lines = [f"    {i}: {s.label}" for i, s in enumerate(self._steps)]
        return (
            "Pipeline(" + "".join(h + ", " for h in head) + "steps=[\n" + "\n".join(lines) + "\n])"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        lazy = dict(self._lazy) if self._lazy is not None else None
        return (_rebuild, (self._steps, self._dataset, dict(self._config), lazy, self._env))

    # -- algebra --------------------------------------------------------------------------
    def __add__(self, other: object) -> Pipeline:
        if not isinstance(other, Pipeline):
            return NotImplemented
        dataset = self._dataset
        if other._dataset is not None:
            if dataset is not None and dataset != other._dataset:
                raise PipelineDefinitionError(
                    "cannot add two pipelines linked to different datasets; link the sum "
                    "instead: `(template_a + template_b) << dataset`"
                )
            dataset = other._dataset
        if self._lazy is not None and other._lazy is not None and self._lazy != other._lazy:
            raise PipelineDefinitionError(
                "cannot add two pipelines with different lazy run arguments"
            )
        if dataset is not None:
            self._validate(self._steps + other._steps, dataset.batch_class)
        return self._new(
            steps=self._steps + other._steps,
            dataset=dataset,
            config=self._config.update(other._config),
            lazy=self._lazy if self._lazy is not None else other._lazy,
        )

    def __mul__(self, n: object) -> Pipeline:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            if isinstance(n, numbers.Number):
                raise TypeError(
                    f"a pipeline repeats a whole number of times: `pipeline * 3`, not * {n!r}"
                )
            return NotImplemented
        if n < 0:
            raise ValueError(f"a pipeline can be repeated n >= 0 times, not {n}")
        return self._new(steps=self._steps * int(n), env=None)

    __rmul__ = __mul__

    def __matmul__(self, prob: object) -> Pipeline:
        if (
            isinstance(prob, bool)
            or not isinstance(prob, numbers.Real)
            or not 0 <= float(prob) <= 1
        ):
            raise ValueError(f"`pipeline @ prob` takes a probability in [0, 1], not {prob!r}")
        return self._new(steps=(Maybe(self._steps, float(prob)),))

    def __lshift__(self, other: object) -> Pipeline:
        if isinstance(other, Dataset):
            self._validate(self._steps, other.batch_class)
            return self._new(dataset=other)
        if isinstance(other, Mapping):
            return self._new(config=self._config.update(other))
        return NotImplemented

    @staticmethod
    def _validate(steps: tuple[Step, ...], batch_class: type) -> None:
        for step in steps:
            for name in step.action_names():
                action_definition(batch_class, name)

    # -- actions --------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Callable[..., Pipeline]:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._dataset is not None:
            action_definition(self._dataset.batch_class, name)

        def add_step(*args: Any, **kwargs: Any) -> Pipeline:
            return self._with_steps(ActionStep(name, args, kwargs))

        add_step.__name__ = name
        return add_step

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        if self._dataset is not None:
            names.update(
                n
                for n in dir(self._dataset.batch_class)
                if not n.startswith("_") and callable(getattr(self._dataset.batch_class, n, None))
            )
        return sorted(names)

    def action(self, name: str, *args: Any, **kwargs: Any) -> Pipeline:
        """Add the action ``name`` (also for actions named like a Pipeline method)."""
        return self._with_steps(ActionStep(name, args, kwargs))

    def apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pipeline:
        """Add a plain function ``fn(batch, *args, **kwargs) -> batch`` as a step."""
        if not callable(fn):
            raise TypeError(f"apply() takes a function batch -> batch, not {type(fn).__name__}")
        return self._with_steps(ApplyStep(fn, args, kwargs))

    # -- variables ------------------------------------------------------------------------
    def init_variable(
        self,
        name: str,
        default: Any = None,
        init: Callable[[], Any] | None = None,
        init_on_each_run: bool = False,
    ) -> Pipeline:
        """Declare a variable. Each run starts it from ``init()`` or a copy of ``default``.

        With ``init_on_each_run=False``, running a pipeline that ``run()`` returned
        carries the variable over from that run.
        """
        if not isinstance(name, str):
            raise TypeError(f"a variable name is a str, not {type(name).__name__}")
        if init is not None and not callable(init):
            raise TypeError("init must be a callable returning the initial value")
        return self._with_steps(InitVariable(name, default, init, init_on_each_run))

    def set_variable(self, name: str, value: Any) -> Pipeline:
        """A pipeline whose variable ``name`` starts each run as ``value``."""
        steps, found = _edit_inits(
            self._steps, name, lambda s: InitVariable(name, value, None, s.init_on_each_run)
        )
        if not found:
            steps += (InitVariable(name, value),)
        return self._new(steps=steps)

    assign_variable = set_variable

    def update_variable(self, name: str, value: Any, mode: str = "w") -> Pipeline:
        """Add a step that writes (``w``), appends (``a``) or extends (``e``) a variable
        as each batch passes; ``value`` may be a function of the batch."""
        if mode not in ("w", "a", "e", "write", "append", "extend"):
            raise ValueError(f"unknown update mode {mode!r}; use 'w', 'a' or 'e'")
        return self._with_steps(UpdateVariable(name, value, mode))

    def _declared(self) -> dict[str, InitVariable]:
        # in the order a run applies them (also those inside `@ prob`): the last one wins
        return {s.name: s for s in _inits(self._steps)}

    def _current_env(self) -> Environment | None:
        cursor = self._cursor
        if cursor is not None and cursor.iterator is not None:
            return cursor.iterator.env
        return self._env

    def get_variable(self, name: str, *default: Any) -> Any:
        """The variable's value: after a run, its final value; before, its initial value."""
        env = self._current_env()
        if env is not None and name in env.variables:
            return env.variables[name]
        declared = self._declared()
        if name in declared:
            return declared[name].value()
        if default:
            return default[0]
        known = sorted(set(declared) | set(env.variables if env else ()))
        raise KeyError(
            f"pipeline has no variable {name!r}; known variables: {known}."
            f"{did_you_mean(name, known)} Declare it with .init_variable({name!r}, default)."
        )

    def has_variable(self, name: str) -> bool:
        env = self._current_env()
        return name in self._declared() or (env is not None and name in env.variables)

    @property
    def variables(self) -> dict[str, Any]:
        """All variables: final values after a run, else initial values."""
        out = {n: s.value() for n, s in self._declared().items()}
        env = self._current_env()
        if env is not None:
            out.update(env.variables)
        return out

    def del_variable(self, name: str) -> Pipeline:
        """A pipeline without the variable ``name``."""
        if name not in self._declared():
            raise KeyError(
                f"pipeline has no variable {name!r} to delete; known: {sorted(self._declared())}"
            )
        return self._new(steps=_edit_inits(self._steps, name, None)[0])

    delete_variable = del_variable

    def delete_all_variables(self) -> Pipeline:
        """A pipeline without any variable."""
        return self._new(steps=_edit_inits(self._steps, None, None)[0])

    # -- models ---------------------------------------------------------------------------
    def init_model(self, name: Any, config: Mapping[str, Any] | None = None) -> Pipeline:
        """Declare a model: a static one is built now, a dynamic one is configured.

        ``name`` is a model name, ``"BatchClass.name"`` or the ``@model`` method itself.
        """
        definition = find_definition(name, self.batch_class)
        if definition.mode == "global":
            raise ModelError(
                f"{definition.qualname} is a global model: it was built with its class and "
                "needs no init_model. Use it directly with @action(model=...)."
            )
        own = dict(config or {})
        descriptor = None
        if definition.mode == "static":
            descriptor = definition.build(
                _StaticView(self), model_config(self._config, definition.name, own)
            )
        return self._with_steps(InitModel(definition.name, definition, pmap(own), descriptor))

    def import_model(self, name: str, source: Pipeline) -> Pipeline:
        """Use model ``name`` of ``source`` (e.g. the pipeline a training run returned)."""
        if not isinstance(source, Pipeline):
            raise TypeError(f"import_model takes a source Pipeline, not {type(source).__name__}")
        try:  # fail now, naming the model and the source, if it is not there
            source.get_model_by_name(name)
        except ModelError as exc:
            where = f"linked to {source.dataset!r}" if source.dataset is not None else "a template"
            raise ModelError(
                f"import_model({name!r}, source): the source pipeline ({where}, "
                f"{len(source)} step{'s' * (len(source) != 1)}) has no model {name!r}: {exc}"
            ) from exc
        return self._with_steps(ImportModel(name, source))

    def get_model_by_name(self, name: str) -> Any:
        """The model ``name`` this pipeline holds (after a run: the run's final one)."""
        env = self._current_env()
        if env is not None:
            found = lookup_model(env, name, self.batch_class)
            if found is not _missing():
                return found
        for step in reversed(self._steps):  # imported models win over static ones
            if isinstance(step, ImportModel) and step.name == name:
                return step.source.get_model_by_name(name)
        for step in reversed(self._steps):
            if (
                isinstance(step, InitModel)
                and step.name == name
                and step.definition.mode == "static"
            ):
                return step.descriptor
        if self.batch_class is not None:
            definition = definitions_of(self.batch_class).get(name)
            if definition is not None and definition.mode == "global":
                return definition.descriptor
        raise ModelError(
            f"pipeline has no model {name!r}; it has {sorted(self.models)}."
            f"{did_you_mean(name, self.models)} Static models need .init_model({name!r}); "
            "dynamic ones exist only in a run: use the pipeline that run() returned."
        )

    @property
    def models(self) -> dict[str, Any]:
        """The models this pipeline holds, by name (after a run: the run's final ones)."""
        out: dict[str, Any] = {}
        for step in self._steps:
            if isinstance(step, InitModel) and step.definition.mode == "static":
                out[step.name] = step.descriptor
        for step in self._steps:
            if isinstance(step, ImportModel):
                out[step.name] = step.source.get_model_by_name(step.name)
        env = self._current_env()
        if env is not None:
            out.update(env.models)
        return out

    # -- combining sources ----------------------------------------------------------------
    def join(self, *sources: Pipeline | Dataset) -> Pipeline:
        """Pass the batches of ``sources`` with the same ids to the next action."""
        _check_sources("join", sources)
        return self._with_steps(Join(tuple(sources)))

    def merge(
        self, *sources: Pipeline | Dataset, merge_fn: Callable[..., Any] | None = None
    ) -> Pipeline:
        """Concatenate each batch with the next batch of each source."""
        _check_sources("merge", sources)
        return self._with_steps(Merge(tuple(sources), merge_fn))

    def rebatch(self, batch_size: int, merge_fn: Callable[..., Any] | None = None) -> Pipeline:
        """Regroup the items into batches of ``batch_size`` (the last one may be smaller)."""
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1
        ):
            raise ValueError(f"rebatch needs a positive int batch_size, not {batch_size!r}")
        return self._with_steps(Rebatch(int(batch_size), merge_fn))

    def _batch_for(self, ids: Any, ctx: Any) -> Batch:
        """This (source) pipeline's output for the items ``ids`` (used by ``join``)."""
        from .interpreter import compile_program, run_compiled
        from .runstate import BatchContext, RunState

        dataset = self._require_dataset("join source")
        key = ("join", id(self))
        sub = ctx.run.resources.get(key)
        if sub is None:
            program = compile_program(self._steps, dataset.batch_class)
            if program.rebatches:
                raise PipelineDefinitionError("a join source cannot rebatch")
            run = RunState(
                seed=ctx.run.seed,
                env=program.start_env(self._env),
                batch_class=dataset.batch_class,
                config=self._config,
            )
            ctx.run.on_close(run.close)
            sub = ctx.run.resources[key] = (program.stages[0], run)
        steps, run = sub
        sub_ctx = BatchContext(run, ctx.epoch, ctx.iteration)
        return run_compiled(steps, dataset.create_batch(ids)._with_ctx(sub_ctx), sub_ctx)

    # -- running --------------------------------------------------------------------------
    def _require_dataset(self, what: str) -> Dataset:
        if self._dataset is None:
            raise FpipeError(
                f"{what}: this pipeline has no dataset. Link one: `pipeline << dataset` or "
                "`dataset >> pipeline` (a template pipeline never runs by itself)."
            )
        return self._dataset

    def _run_args(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if len(args) > len(_RUN_ORDER):
            raise TypeError(f"too many positional arguments; the order is {', '.join(_RUN_ORDER)}")
        given = dict(zip(_RUN_ORDER, args, strict=False))
        for key, value in kwargs.items():
            if key not in _RUN_DEFAULTS:
                raise TypeError(
                    f"unknown run argument {key!r}.{did_you_mean(key, _RUN_DEFAULTS)} "
                    f"Run arguments: {', '.join(_RUN_DEFAULTS)}"
                )
            if key in given:
                raise TypeError(f"run argument {key!r} given twice")
            given[key] = value
        if given.get("batch_size", 0) is None:
            del given["batch_size"]
        merged = {**_RUN_DEFAULTS, **dict(self._lazy or {}), **given}
        if merged["batch_size"] is None:
            raise TypeError(
                "batch_size is required: pass it, e.g. `run(32)`, or store the run arguments "
                "first with `run(32, ..., lazy=True)`"
            )
        return merged

    def iterate(
        self,
        *args: Any,
        state: IterState | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> PipelineIterator:
        """An iterator over this pipeline's output batches; it can report a resumable state.

        Arguments: ``batch_size, shuffle=False, n_epochs=1, n_iters=None, drop_last=False,
        prefetch=0, seed=None, executor=None`` and ``state=`` to resume.
        """

        return self._iterator(self._run_args(args, kwargs), state=state)

    def _iterator(self, params: dict[str, Any], **extra: Any) -> PipelineIterator:
        from .iterator import PipelineIterator, pipeline_fingerprint
        from .plan import BatchPlan

        dataset = self._require_dataset("cannot run")
        plan = BatchPlan.make(
            len(dataset),
            params["batch_size"],
            shuffle=params["shuffle"],
            n_epochs=params["n_epochs"],
            n_iters=params["n_iters"],
            drop_last=params["drop_last"],
            seed=params["seed"],
            extra_fingerprint=pipeline_fingerprint(self),
        )
        return PipelineIterator(
            self, plan, prefetch=params["prefetch"], executor=params["executor"], **extra
        )

    def gen_batch(self, *args: Any, **kwargs: Any) -> Iterator[Batch]:
        """Iterate over output batches (same arguments as :meth:`iterate`)."""
        return self.iterate(*args, **kwargs)

    def next_batch(self, *args: Any, **kwargs: Any) -> Batch:
        """The next output batch; successive calls continue one iteration.

        The iteration is kept beside this pipeline object, never in its value: it is
        not compared, hashed or pickled. Prefer :meth:`iterate` in library code.
        """
        cursor = self._cursor
        if cursor is None:
            cursor = _Cursor()
            object.__setattr__(self, "_cursor", cursor)
        return cursor.next(self, args[0] if args else None, args[1:], kwargs)

    def reset(self) -> None:
        """Stop the iteration :meth:`next_batch` continues; the next call starts afresh."""
        if self._cursor is not None:
            self._cursor.reset()

    def run(
        self,
        *args: Any,
        lazy: bool = False,
        checkpoint: Any = None,
        **kwargs: Any,
    ) -> Pipeline:
        """Run through all batches and return a new pipeline holding the run's results.

        ``run(..., lazy=True)`` runs nothing: it returns a pipeline that stores the
        arguments for a later ``run()`` or ``next_batch()``. ``checkpoint=`` (a
        :class:`~fpipe.Checkpoint`) saves the iteration state and the environment every
        few batches and resumes from the last save.
        """
        if lazy:
            given = dict(zip(_RUN_ORDER, args, strict=False))
            self._run_args(args, kwargs)  # validate names
            given.update(kwargs)
            return self._new(lazy=pmap({**dict(self._lazy or {}), **given}))
        params = self._run_args(args, kwargs)
        if checkpoint is None:
            with self._iterator(params) as it:
                for _ in it:
                    pass
                return it.result()
        return checkpoint.run(self, params)

    def to_tf_dataset(self, *args: Any, output_signature: Any = None, **kwargs: Any) -> Any:
        """Stream this pipeline's batches as a ``tf.data.Dataset`` (needs the ``tf`` extra)."""
        from .tf import to_tf_dataset

        return to_tf_dataset(self, *args, output_signature=output_signature, **kwargs)


class _StaticView:
    """What a static model factory sees: the pipeline's variables so far and its config."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.config = pipeline.config

    def get_variable(self, name: str, *default: Any) -> Any:
        return self._pipeline.get_variable(name, *default)

    def has_variable(self, name: str) -> bool:
        return self._pipeline.has_variable(name)

    @property
    def dataset(self) -> Dataset | None:
        return self._pipeline.dataset


class _Cursor:
    """The iteration behind ``next_batch``: beside a pipeline or dataset, not part of it."""

    __slots__ = ("iterator", "key")

    def __init__(self) -> None:
        self.iterator: Any = None
        self.key: Any = None

    def next(self, pipeline: Pipeline, batch_size: Any, args: tuple, kwargs: dict) -> Batch:
        key = (batch_size, args, tuple(sorted(kwargs.items(), key=lambda kv: kv[0])))
        try:
            same = self.iterator is not None and values_equal(key, self.key)
        except Exception:
            same = False
        if not same:
            self.reset()
            self.iterator = pipeline.iterate(batch_size, *args, **kwargs)
            self.key = key
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


def _missing() -> Any:
    from .env import _MISSING

    return _MISSING


def _check_sources(what: str, sources: tuple[Any, ...]) -> None:
    if not sources:
        raise ValueError(f"{what}() needs at least one source (a Pipeline or a Dataset)")
    for s in sources:
        if not isinstance(s, (Pipeline, Dataset)):
            raise TypeError(f"{what}() sources are Pipelines or Datasets, not {type(s).__name__}")
        if isinstance(s, Pipeline) and s.dataset is None:
            raise PipelineDefinitionError(
                f"a {what}() source pipeline must be linked to a dataset: `source << dataset`"
            )


def _inits(steps: tuple[Step, ...]) -> Iterator[InitVariable]:
    for s in steps:
        if isinstance(s, InitVariable):
            yield s
        elif isinstance(s, Maybe):
            yield from _inits(s.steps)


def _edit_inits(
    steps: tuple[Step, ...], name: str | None, new: Callable[[InitVariable], Step] | None
) -> tuple[tuple[Step, ...], int]:
    """Replace (``new``) or drop (``None``) the declarations of ``name`` (None: all),
    also inside ``@ prob`` steps; return the new steps and how many were found."""
    out: list[Step] = []
    hits = 0
    for s in steps:
        if isinstance(s, InitVariable) and name in (None, s.name):
            hits += 1
            if new is None:
                continue
            s = new(s)
        elif isinstance(s, Maybe):
            inner, n = _edit_inits(s.steps, name, new)
            if n:
                hits += n
                s = Maybe(inner, s.prob)
        out.append(s)
    return tuple(out), hits


def _rebuild(
    steps: tuple[Step, ...],
    dataset: Dataset | None,
    config: Mapping[str, Any],
    lazy: Mapping[str, Any] | None,
    env: Environment | None,
) -> Pipeline:
    p = object.__new__(Pipeline)
    p._set(steps, dataset, pmap(config), pmap(lazy) if lazy is not None else None, env)
    return p
