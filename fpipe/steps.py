"""Steps: the immutable values a pipeline is a sequence of.

Each step is a small frozen record with structural equality. It knows how to
*compile* itself for a batch class into a plain function ``batch -> batch`` (the
interpreter's hot path), whether it needs the run's environment (models,
variables, locks: such steps run on the driver, in batch order), and, for steps
that act once per run (``init_variable``, ``init_model``, ``import_model``), how
they change the run's starting environment.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .actions import ActionDefinition, check_result
from .env import Environment
from .errors import ModelError, PipelineDefinitionError, UnknownActionError, did_you_mean
from .models import ModelDefinition

if TYPE_CHECKING:
    from .batch import Batch

__all__ = [
    "ActionStep",
    "ApplyStep",
    "ImportModel",
    "InitModel",
    "InitVariable",
    "Join",
    "Maybe",
    "Merge",
    "Rebatch",
    "Step",
    "UpdateVariable",
    "action_definition",
    "values_equal",
]

BatchFn = Callable[["Batch"], "Batch"]


def values_equal(a: Any, b: Any) -> bool:
    """Structural equality that also handles numpy arrays inside containers."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return False


def _hash(value: Any) -> int:
    """A hash consistent with :func:`values_equal` (coarse for unhashable values)."""
    try:
        return hash(value)
    except TypeError:
        if isinstance(value, (list, tuple)):
            return hash((type(value).__name__, *(_hash(v) for v in value)))
        if isinstance(value, Mapping):
            return hash(("map", frozenset(value.keys())))
        if isinstance(value, np.ndarray):
            return hash(("ndarray", value.shape, str(value.dtype)))
        return hash(type(value).__name__)


def _fmt_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    def short(v: Any) -> str:
        if isinstance(v, np.ndarray):
            return f"<array {v.dtype}{list(v.shape)}>"
        r = repr(v)
        return r if len(r) <= 40 else r[:37] + "..."

    return ", ".join([*map(short, args), *(f"{k}={short(v)}" for k, v in kwargs.items())])


class Step:
    """Base class of pipeline steps (frozen dataclasses)."""

    # Steps with a per-run effect (start) and no per-batch work set this to False.
    per_batch = True

    @property
    def label(self) -> str:
        return type(self).__name__

    def needs_env(self, batch_class: type) -> bool:
        return True

    def start(self, env: Environment, previous: Environment | None) -> Environment:
        return env

    def compile(self, batch_class: type, path: tuple[int, ...]) -> BatchFn:
        raise NotImplementedError

    def action_names(self) -> Iterator[str]:
        return iter(())

    def __repr__(self) -> str:
        return self.label

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return all(
            values_equal(getattr(self, f), getattr(other, f))
            for f in self.__dataclass_fields__  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        fields = self.__dataclass_fields__  # type: ignore[attr-defined]
        return hash((type(self).__name__, *(_hash(getattr(self, f)) for f in fields)))


def action_definition(batch_class: type, name: str) -> ActionDefinition:
    """The ``@action`` called ``name`` on ``batch_class``, or a helpful error."""
    found = getattr(batch_class, name, None)
    if isinstance(found, ActionDefinition):
        return found
    actions = [
        n for n in dir(batch_class) if isinstance(getattr(batch_class, n, None), ActionDefinition)
    ]
    if found is not None and callable(found):
        raise PipelineDefinitionError(
            f"{batch_class.__name__}.{name} is not an action: decorate it with @action to use "
            "it as a pipeline step."
        )
    raise UnknownActionError(
        f"{batch_class.__name__} has no action {name!r}.{did_you_mean(name, actions)} "
        f"Its actions are: {', '.join(sorted(actions)) or '(none)'}."
    )


def _call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    model: str | None,
    lock: str | None,
    extra: Callable[[Batch], tuple[Any, ...]] | None = None,
) -> BatchFn:
    """Specialise one call ``fn(batch, [model], [extra...], *args, **kwargs)``."""
    kw = dict(kwargs)
    if model is None and lock is None and extra is None:
        if not args and not kw:
            return fn
        if not kw:
            if len(args) == 1:  # the common case, without tuple unpacking
                (a0,) = args
                return lambda b: fn(b, a0)
            return lambda b: fn(b, *args)
        return lambda b: fn(b, *args, **kw)

    def call(b: Batch) -> Batch:
        lead: tuple[Any, ...] = ()
        if model is not None:
            lead = (b._ctx.get_model_by_name(model, b),)  # type: ignore[union-attr]
        if extra is not None:
            lead = (*lead, *extra(b))
        if lock is None:
            return fn(b, *lead, *args, **kw)
        with b._ctx.run.lock(lock):  # type: ignore[union-attr]
            return fn(b, *lead, *args, **kw)

    return call


@dataclass(frozen=True, eq=False, repr=False)
class ActionStep(Step):
    """Call the batch class's action ``name`` with the given arguments."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}({_fmt_args(self.args, self.kwargs)})"

    def needs_env(self, batch_class: type) -> bool:
        return action_definition(batch_class, self.name).needs_env

    def compile(self, batch_class: type, path: tuple[int, ...], extra: Any = None) -> BatchFn:
        d = action_definition(batch_class, self.name)
        return _call(d.fn, self.args, self.kwargs, d.model, d.use_lock, extra)

    def action_names(self) -> Iterator[str]:
        yield self.name


@dataclass(frozen=True, eq=False, repr=False)
class ApplyStep(Step):
    """Call a plain function ``fn(batch, *args, **kwargs) -> batch`` (or an ``@action`` one)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        inner = _fmt_args(self.args, self.kwargs)
        return f"apply({name}{', ' + inner if inner else ''})"

    def needs_env(self, batch_class: type) -> bool:
        return isinstance(self.fn, ActionDefinition) and self.fn.needs_env

    def compile(self, batch_class: type, path: tuple[int, ...], extra: Any = None) -> BatchFn:
        f = self.fn
        if isinstance(f, ActionDefinition):
            return _call(f.fn, self.args, self.kwargs, f.model, f.use_lock, extra)
        return _call(f, self.args, self.kwargs, None, None, extra)


def _fresh(value: Any) -> Any:
    """A per-run copy of plain containers, so runs never share a mutable default."""
    if isinstance(value, (list, dict, set, bytearray)):
        return copy.deepcopy(value)
    return value


@dataclass(frozen=True, eq=False, repr=False)
class InitVariable(Step):
    """Declare a variable; it is set when a run starts."""

    name: str
    default: Any = None
    init: Callable[[], Any] | None = None
    init_on_each_run: bool = False
    per_batch = False

    @property
    def label(self) -> str:
        return f"init_variable({self.name!r}, {_fmt_args((self.default,), {})})"

    def value(self) -> Any:
        return self.init() if self.init is not None else _fresh(self.default)

    def start(self, env: Environment, previous: Environment | None) -> Environment:
        if previous is not None and not self.init_on_each_run and self.name in previous.variables:
            return env.set_variable(self.name, previous.variables[self.name])
        return env.set_variable(self.name, self.value())


@dataclass(frozen=True, eq=False, repr=False)
class InitModel(Step):
    """Declare a static model (built now, kept in the step) or configure a dynamic one."""

    name: str
    definition: ModelDefinition
    config: Mapping[str, Any] = field(default_factory=dict)
    descriptor: Any = None
    per_batch = False

    @property
    def label(self) -> str:
        cfg = f", config={dict(self.config)!r}" if self.config else ""
        return f"init_model({self.definition.qualname!r}{cfg})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not InitModel:
            return NotImplemented
        return (
            self.name == other.name
            and self.definition is other.definition
            and values_equal(self.config, other.config)
            and self.descriptor is other.descriptor
        )

    def __hash__(self) -> int:
        return hash(("InitModel", self.name, id(self.definition), id(self.descriptor)))

    def start(self, env: Environment, previous: Environment | None) -> Environment:
        if self.definition.mode == "static":
            return replace(env, static=env.static.set(self.name, self.descriptor))
        return replace(
            env, declared=env.declared.set(self.name, (self.definition, dict(self.config)))
        )


@dataclass(frozen=True, eq=False, repr=False)
class ImportModel(Step):
    """Take model ``name`` from another pipeline (typically a training run's result)."""

    name: str
    source: Any
    per_batch = False

    @property
    def label(self) -> str:
        return f"import_model({self.name!r}, <pipeline {id(self.source):#x}>)"

    def __eq__(self, other: object) -> bool:
        if type(other) is not ImportModel:
            return NotImplemented
        return self.name == other.name and self.source is other.source

    def __hash__(self) -> int:
        return hash(("ImportModel", self.name, id(self.source)))

    def start(self, env: Environment, previous: Environment | None) -> Environment:
        try:
            descriptor = self.source.get_model_by_name(self.name)
        except ModelError as exc:
            raise ModelError(
                f"import_model({self.name!r}): the source pipeline has no model {self.name!r} "
                f"({exc}). Import from the pipeline that built it, usually the value its "
                "run() returned."
            ) from exc
        return replace(env, imported=env.imported.set(self.name, descriptor))


@dataclass(frozen=True, eq=False, repr=False)
class UpdateVariable(Step):
    """Write, append or extend a variable as each batch passes.

    ``value`` may be a callable ``value(batch)`` evaluated on the batch.
    """

    name: str
    value: Any
    mode: str = "w"

    @property
    def label(self) -> str:
        return f"update_variable({self.name!r}, {_fmt_args((self.value,), {})}, mode={self.mode!r})"

    def compile(self, batch_class: type, path: tuple[int, ...]) -> BatchFn:
        name, value, mode = self.name, self.value, self.mode

        def update(b: Batch) -> Batch:
            v = value(b) if callable(value) else value
            b._ctx.update_variable(name, v, mode)  # type: ignore[union-attr]
            return b

        return update


@dataclass(frozen=True, eq=False, repr=False)
class Maybe(Step):
    """Run ``steps`` on a batch with probability ``prob`` (``pipeline @ prob``)."""

    steps: tuple[Step, ...]
    prob: float

    @property
    def label(self) -> str:
        inner = " + ".join(s.label for s in self.steps) or "<empty>"
        return f"({inner}) @ {self.prob}"

    def needs_env(self, batch_class: type) -> bool:
        return any(s.needs_env(batch_class) for s in self.steps if s.per_batch)

    def compile(self, batch_class: type, path: tuple[int, ...]) -> BatchFn:
        from .interpreter import compile_steps, run_compiled

        inner = compile_steps(self.steps, batch_class, path)
        prob = self.prob

        def maybe(b: Batch) -> Batch:
            ctx = b._ctx
            if ctx is None or ctx.coin(path) >= prob:
                return b
            return run_compiled(inner, b, ctx)

        return maybe

    def action_names(self) -> Iterator[str]:
        for s in self.steps:
            yield from s.action_names()


@dataclass(frozen=True, eq=False, repr=False)
class Join(Step):
    """Pass the batches of ``sources`` with the same ids to the next action."""

    sources: tuple[Any, ...]

    @property
    def label(self) -> str:
        return f"join({len(self.sources)} source{'s' * (len(self.sources) != 1)})"

    def needs_env(self, batch_class: type) -> bool:
        from .dataset import Dataset

        return not all(isinstance(s, Dataset) for s in self.sources)

    def joined(self) -> Callable[[Batch], tuple[Any, ...]]:
        sources = self.sources

        def fetch(b: Batch) -> tuple[Any, ...]:
            return tuple(_source_batch(src, b) for src in sources)

        return fetch


def _source_batch(source: Any, batch: Batch) -> Batch:
    from .dataset import Dataset

    if isinstance(source, Dataset):
        return source.create_batch(batch.indices)
    return source._batch_for(batch.indices, batch._ctx)


@dataclass(frozen=True, eq=False, repr=False)
class Merge(Step):
    """Concatenate each batch with the next batch of every source."""

    sources: tuple[Any, ...]
    merge_fn: Callable[[list[Any]], Any] | None = None

    @property
    def label(self) -> str:
        return f"merge({len(self.sources)} source{'s' * (len(self.sources) != 1)})"

    def compile(self, batch_class: type, path: tuple[int, ...]) -> BatchFn:
        sources, merge_fn = self.sources, self.merge_fn
        key = ("merge", path)

        def merge(b: Batch) -> Batch:
            run = b._ctx.run  # type: ignore[union-attr]
            iters = run.resources.get(key)
            if iters is None:
                iters = run.resources[key] = [
                    _endless(src, run, path, i) for i, src in enumerate(sources)
                ]
            parts = [b, *(next(it) for it in iters)]
            merged = merge_fn(parts) if merge_fn is not None else type(b).merge(parts)
            return check_result("merge_fn", merged)

        return merge


def _endless(source: Any, run: Any, path: tuple[int, ...], i: int) -> Iterator[Any]:
    from . import rng
    from .dataset import Dataset

    pipeline = source.p if isinstance(source, Dataset) else source
    it = pipeline.iterate(
        run.batch_size or 1, n_epochs=None, seed=int(rng.derive(run.seed, *path, i).integers(2**62))
    )
    run.on_close(it.close)
    return iter(it)


@dataclass(frozen=True, eq=False, repr=False)
class Rebatch(Step):
    """Regroup the stream of items into batches of ``batch_size`` (a barrier)."""

    batch_size: int
    merge_fn: Callable[[list[Any]], Any] | None = None

    @property
    def label(self) -> str:
        return f"rebatch({self.batch_size})"
