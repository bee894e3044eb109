"""The interpreter: the one place that gives the step records their meaning.

:func:`compile_program` dispatches over the closed set of steps (``match``): each
per-batch step becomes a :class:`CompiledStep`, a plain function ``batch -> batch``
specialised for the batch class, marked pure or effectful before anything runs;
declarations (variables, models) build the run's starting environment
(:func:`start_env`); ``rebatch`` cuts the program into stages.
:func:`run_compiled` runs one batch through a stage.

>>> import numpy as np
>>> from fpipe import Batch, Pipeline, action
>>> class B(Batch):
...     @action
...     def inc(self):
...         return self.replace(data=self.data + 1)
...     @action(effects=True)
...     def log(self):
...         return self
>>> program = compile_program(Pipeline().inc().log().inc().steps, B)
>>> [s.effectful for s in program.stages[0]], program.pure_prefix
([False, True, False], 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .actions import ActionDefinition, check_result, explain_readonly, mentions_env
from .batch import Batch, SkipBatch
from .dataset import Dataset
from .env import Environment
from .errors import ActionError, ModelError, PipelineDefinitionError
from .expressions import Expr
from .resolve import bind_call, config_count, config_probability, update_value
from .runstate import BatchContext, RunState
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
    Repeat,
    Step,
    UpdateVariable,
    action_definition,
)

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = [
    "CompiledStep",
    "Program",
    "compile_program",
    "compile_steps",
    "run_compiled",
    "start_env",
    "step_error",
]

BatchFn = Callable[[Batch], Batch]


class CompiledStep:
    """One per-batch step, ready to call; ``effectful`` steps run on the driver, in order.

    ``label`` names it in messages: a string, or the step record, whose label is made
    only when a message needs it (formatting every step's arguments was a third of the
    cost of compiling a pipeline).
    """

    __slots__ = ("_label", "effectful", "fn", "path")

    def __init__(
        self, fn: BatchFn, path: tuple[int, ...], label: str | Step, effectful: bool
    ) -> None:
        self.fn = fn
        self.path = path
        self._label = label
        self.effectful = effectful

    @property
    def label(self) -> str:
        label = self._label
        return label if isinstance(label, str) else label.label

    def with_fn(self, fn: BatchFn) -> CompiledStep:
        """This step calling ``fn`` instead (a profiled run times each call)."""
        return CompiledStep(fn, self.path, self._label, self.effectful)

    def __repr__(self) -> str:
        kind = "effectful" if self.effectful else "pure"
        return f"<{kind} step {'.'.join(map(str, self.path))} {self.label}>"


@dataclass(frozen=True)
class Program:
    """A compiled pipeline: its declarations and its per-batch stages."""

    start_steps: tuple[Step, ...]
    stages: tuple[tuple[CompiledStep, ...], ...]
    rebatches: tuple[Rebatch, ...]

    def start_env(
        self, models: Environment | None = None, previous: Environment | None = None
    ) -> Environment:
        return start_env(self.start_steps, models, previous)

    @property
    def pure_prefix(self) -> int:
        """How many leading steps of the first stage may run away from the driver."""
        for i, s in enumerate(self.stages[0]):
            if s.effectful:
                return i
        return len(self.stages[0])


def start_env(
    steps: Sequence[Step], models: Environment | None, previous: Environment | None
) -> Environment:
    """The environment a run starts from: its declarations applied in order.

    ``models`` is the pipeline's model environment (static and imported descriptors);
    ``previous`` the environment of the run whose result is being run again (variables
    declared with ``init_on_each_run=False`` carry over from it).
    """
    env = Environment()
    for step in steps:
        match step:
            case InitVariable(name=name, init_on_each_run=fresh):
                if previous is not None and not fresh and name in previous.variables:
                    env = env.set_variable(name, previous.variables[name])
                else:
                    env = env.set_variable(name, step.value())
            case InitModel(name=name, definition=definition, config=config):
                if definition.mode == "static":
                    env = replace(env, static=env.static.set(name, _held(models, "static", name)))
                else:
                    env = replace(env, declared=env.declared.set(name, (definition, config)))
            case ImportModel(name=name):
                env = replace(env, imported=env.imported.set(name, _held(models, "imported", name)))
    return env


def _held(models: Environment | None, table: str, name: str) -> Any:
    held = getattr(models, table, None) or {}
    if name not in held:
        raise ModelError(
            f"the pipeline declares {table} model {name!r} but holds no descriptor for it: "
            "build pipelines with init_model()/import_model(), not by assembling steps by hand"
        )
    return held[name]


def _declarations(steps: Sequence[Step]) -> Iterator[Step]:
    for s in steps:
        if not s.per_batch:
            yield s
        elif isinstance(s, (Maybe, Repeat)):
            yield from _declarations(s.steps)


# What a profiled run does to each compiled step, nested ones included (see fpipe.profile)
Wrap = Callable[[CompiledStep], CompiledStep]


def compile_step(
    step: Step,
    batch_class: type,
    path: tuple[int, ...],
    extra: _Fetch | None = None,
    wrap: Wrap | None = None,
) -> CompiledStep:
    """Compile one per-batch step (``extra``: the joined batches an action receives;
    ``wrap``: applied to it and to each step nested in it)."""
    match step:
        case ActionStep(name=name, args=args, kwargs=kwargs, save_to=to):
            d = action_definition(batch_class, name)
            # named expressions: a call that resolves them (unchanged if there are none)
            f, args, kwargs, reads = bind_call(d.fn, args, kwargs, to, batch_class, (path, step))
            fn = _call(f, args, kwargs, d.model, d.use_lock, extra)
            effectful = d.effectful or reads
        case ApplyStep(fn=f, args=args, kwargs=kwargs, save_to=to) if isinstance(
            f, ActionDefinition
        ):
            g, args, kwargs, reads = bind_call(f.fn, args, kwargs, to, batch_class, (path, step))
            fn = _call(g, args, kwargs, f.model, f.use_lock, extra)
            effectful = f.effectful or reads
        case ApplyStep(fn=f, args=args, kwargs=kwargs, save_to=to):
            g, args, kwargs, reads = bind_call(f, args, kwargs, to, batch_class, (path, step))
            fn = _call(g, args, kwargs, None, None, extra)
            effectful = mentions_env(f) or reads
        case UpdateVariable(name=name, value=value, mode=mode):
            value = update_value(value, batch_class, (path, step))
            fn, effectful = _update(name, value, mode), True
        case Maybe(steps=steps, prob=prob):
            inner = compile_steps(steps, batch_class, path, wrap=wrap)
            fn, effectful = _maybe(inner, prob, path), any(s.effectful for s in inner)
        case Repeat(steps=steps, times=times):
            fn, effectful = _repeat(steps, times, batch_class, path, wrap)
        case Merge(sources=sources, merge_fn=merge_fn):
            fn, effectful = _merge(sources, merge_fn, path), True
        case Rebatch():
            raise PipelineDefinitionError(
                "rebatch cannot be used inside `pipeline @ prob`; put it in the outer pipeline"
            )
        case _:
            raise TypeError(f"{type(step).__name__} is not a per-batch step")
    if extra is not None:
        effectful = effectful or extra.effectful
    compiled = CompiledStep(fn, path, step, effectful)
    return compiled if wrap is None else wrap(compiled)


def compile_steps(
    steps: Sequence[Step],
    batch_class: type,
    base: tuple[int, ...] = (),
    first: int = 0,
    wrap: Wrap | None = None,
) -> tuple[CompiledStep, ...]:
    """Compile per-batch ``steps`` (no rebatch) for ``batch_class``.

    A step's path is ``(*base, first + its index)``: its place in the whole pipeline,
    which keys its random streams and its per-run resources.
    """
    out: list[CompiledStep] = []
    join: list[Any] | None = None
    sites: list[CompiledStep] = []  # per joined source: its join step, which its errors name
    for i, step in enumerate(steps, start=first):
        if not step.per_batch:
            continue
        if isinstance(step, Join):
            join = [*(join or ()), *step.sources]
            site = CompiledStep(_same_batch, (*base, i), step, False)
            sites += [site] * len(step.sources)
            continue
        if join is not None and not isinstance(step, (ActionStep, ApplyStep)):
            raise PipelineDefinitionError(
                f"join(...) must be followed by an action that takes the joined batches, "
                f"not by {step.label}"
            )
        fetch = _Fetch(tuple(join), (*base, i), tuple(sites)) if join is not None else None
        join, sites = None, []
        out.append(compile_step(step, batch_class, (*base, i), fetch, wrap))
    if join is not None:
        raise PipelineDefinitionError(
            "join(...) is the last step: follow it with the action that receives the joined "
            "batches, e.g. `.join(other).add_masks()`"
        )
    return tuple(out)


def compile_program(steps: Sequence[Step], batch_class: type, wrap: Wrap | None = None) -> Program:
    """Compile a whole pipeline: declarations, then stages split at each rebatch
    (``wrap``: applied to each compiled step; a profiled run times them so)."""
    stages: list[tuple[CompiledStep, ...]] = []
    rebatches: list[Rebatch] = []
    start = 0
    for i, step in enumerate(steps):
        if isinstance(step, Rebatch):
            stages.append(_stage(steps, start, i, batch_class, wrap))
            rebatches.append(step)
            start = i + 1
    stages.append(_stage(steps, start, len(steps), batch_class, wrap))
    return Program(tuple(_declarations(steps)), tuple(stages), tuple(rebatches))


def _stage(
    steps: Sequence[Step], lo: int, hi: int, batch_class: type, wrap: Wrap | None = None
) -> tuple[CompiledStep, ...]:
    return compile_steps(steps[lo:hi], batch_class, first=lo, wrap=wrap)


# -- what each kind of step does to a batch --------------------------------------------------
def _call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    model: str | None,
    lock: str | None,
    extra: _Fetch | None = None,
) -> BatchFn:
    """Specialise one call ``fn(batch, [model], [joined...], *args, **kwargs)``."""
    if model is None and lock is None and extra is None and not kwargs:
        if not args:
            return fn
        if len(args) == 1:  # the common case, without tuple unpacking
            (a0,) = args
            return lambda b: fn(b, a0)
        return lambda b: fn(b, *args)
    kw = dict(kwargs)
    if model is None and lock is None and extra is None:
        return lambda b: fn(b, *args, **kw)
    if extra is None and model is not None:  # a model step (the training loop's hot path)

        def call_model(b: Batch) -> Batch:
            run = b._ctx.run  # type: ignore[union-attr]
            # the run's tables first: a step that trains a model waits on nothing else
            net = run._resolved.get(model)
            if net is None:
                net = run.get_model(model, b)
            if lock is None:
                return fn(b, net, *args, **kw)
            with run._locks.get(lock) or run.lock(lock):
                return fn(b, net, *args, **kw)

        return call_model

    def call(b: Batch) -> Batch:
        ctx: BatchContext = b._ctx  # type: ignore[assignment]
        lead: tuple[Any, ...] = ()
        if model is not None:
            lead = (ctx.get_model_by_name(model, b),)
        if extra is not None:
            lead = (*lead, *extra(b))
        if lock is None:
            return fn(b, *lead, *args, **kw)
        with ctx.lock(lock):
            return fn(b, *lead, *args, **kw)

    return call


def _update(name: str, value: Any, mode: str) -> BatchFn:
    def update(b: Batch) -> Batch:
        v = value(b) if callable(value) else value
        b._ctx.update_variable(name, v, mode)  # type: ignore[union-attr]
        return b

    return update


def _maybe(inner: tuple[CompiledStep, ...], prob: Any, path: tuple[int, ...]) -> BatchFn:
    """Run ``inner`` on a batch when its coin falls under ``prob`` (a number, or
    ``C("key")``: the config says, checked per batch)."""
    chance = config_probability(prob, (path, "@")) if isinstance(prob, Expr) else _const(prob)

    def maybe(b: Batch) -> Batch:
        ctx = b._ctx
        if ctx is None or ctx.coin(path) >= chance(ctx):
            return b
        return _nested(inner, b, ctx)

    return maybe


def _const(value: Any) -> Callable[[Any], Any]:
    return lambda _ctx: value


def _nested(inner: tuple[CompiledStep, ...], b: Batch, ctx: BatchContext) -> Batch:
    """Run a nested step's ``inner`` steps; the nesting step is the context's step again
    afterwards (its errors name it)."""
    outer = ctx.step
    try:
        return run_compiled(inner, b, ctx)
    finally:
        ctx.step = outer


def _repeat(
    steps: tuple[Step, ...],
    times: Any,
    batch_class: type,
    path: tuple[int, ...],
    wrap: Wrap | None,
) -> tuple[BatchFn, bool]:
    """``p * C("n")``: ``p``'s steps n times over, n read from the config per batch.

    Repetition ``r`` runs its steps at paths ``(*path, r, j)`` (their own random
    streams); the steps of each count the config gives are compiled once, when first met.
    """
    count = config_count(times, (path, "*"))
    first = compile_steps(steps, batch_class, (*path, 0), wrap=wrap)
    made: dict[int, tuple[CompiledStep, ...]] = {0: (), 1: first}

    def repeat(b: Batch) -> Batch:
        ctx: BatchContext = b._ctx  # type: ignore[assignment]
        n = count(ctx)
        inner = made.get(n)
        if inner is None:
            more = (compile_steps(steps, batch_class, (*path, r), wrap=wrap) for r in range(1, n))
            inner = made[n] = first + tuple(s for again in more for s in again)
        return _nested(inner, b, ctx) if inner else b

    return repeat, any(s.effectful for s in first)


def _merge(sources: tuple[Any, ...], merge_fn: Any, path: tuple[int, ...]) -> BatchFn:
    key = ("merge", path)

    def merge(b: Batch) -> Batch:
        run = b._ctx.run  # type: ignore[union-attr]
        streams = run.resources.get(key)
        if streams is None:
            streams = run.resources[key] = [
                run.open_stream(src, (*path, i)) for i, src in enumerate(sources)
            ]
        parts = [b, *(next(s) for s in streams)]
        merged = merge_fn(parts) if merge_fn is not None else type(b).merge(parts)
        return check_result("merge_fn", merged)

    return merge


def _same_batch(batch: Batch) -> Batch:
    return batch


class _Fetch:
    """The batches of a join's sources with the ids of the batch at hand."""

    __slots__ = ("effectful", "path", "sites", "sources")

    def __init__(
        self, sources: tuple[Any, ...], path: tuple[int, ...], sites: tuple[CompiledStep, ...]
    ) -> None:
        self.sources = sources
        self.path = path
        self.sites = sites  # the join step of each source
        # a pipeline source runs its own steps and environment: in batch order, on the driver
        self.effectful = not all(isinstance(s, Dataset) for s in sources)

    def __call__(self, batch: Batch) -> tuple[Batch, ...]:
        out = []
        for i, src in enumerate(self.sources):
            dataset = src if isinstance(src, Dataset) else src.dataset
            try:
                positions = dataset.index.get_pos(batch.indices)
            except KeyError as exc:
                cause = self._lacking(i, batch, exc)
                raise step_error(self.sites[i], batch, batch._ctx, cause) from cause  # type: ignore[arg-type]
            if isinstance(src, Dataset):
                out.append(src._batch_at(positions))
            else:
                out.append(_joined(src, batch, (*self.path, i)))
        return tuple(out)

    def _lacking(self, i: int, batch: Batch, exc: KeyError) -> PipelineDefinitionError:
        """What is wrong when source ``i`` lacks some ids of ``batch`` (``exc`` chained)."""
        src = self.sources[i]
        dataset = src if isinstance(src, Dataset) else src.dataset
        ids = np.asarray(batch.indices)
        lacking = ids[~np.isin(ids, dataset.indices)]
        shown = ", ".join(map(repr, lacking[:5].tolist())) + (", ..." if len(lacking) > 5 else "")
        what = repr(src) if isinstance(src, Dataset) else f"a pipeline linked to {dataset!r}"
        cause = PipelineDefinitionError(
            f"join source #{i} ({what}) lacks {len(lacking)} of the batch's {len(ids)} ids: "
            f"[{shown}]. A join source must hold every id of the dataset the pipeline runs "
            "on: build it on the same index, or run the pipeline on the ids they share, "
            "e.g. `dataset.create_subset(ids)`."
        )
        cause.__cause__ = exc
        cause.__suppress_context__ = True
        return cause


def _joined(source: Pipeline, batch: Batch, key: tuple[int, ...]) -> Batch:
    """A join source pipeline's output for the ids of ``batch`` (a run of its own)."""
    ctx: BatchContext = batch._ctx  # type: ignore[assignment]
    sub = ctx.run.resources.get(("join", key))
    if sub is None:
        dataset = source.dataset
        assert dataset is not None  # join() takes linked pipelines only
        program = compile_program(source.steps, dataset.batch_class)
        if program.rebatches:
            raise PipelineDefinitionError("a join source cannot rebatch")
        run = RunState(
            seed=ctx.run.seed,
            env=program.start_env(source.model_env, source.result_env),
            batch_class=dataset.batch_class,
            config=source.config,
        )
        ctx.run.on_close(run.close)
        sub = ctx.run.resources[("join", key)] = (program.stages[0], run, dataset)
    steps, run, dataset = sub
    sub_ctx = BatchContext(run, ctx.epoch, ctx.iteration, ctx.batch_in_epoch)
    return run_compiled(steps, dataset.create_batch(batch.indices)._with_ctx(sub_ctx), sub_ctx)


# -- running one batch -------------------------------------------------------------------
def run_compiled(
    steps: tuple[CompiledStep, ...],
    batch: Batch,
    ctx: BatchContext,
    start: int = 0,
    stop: int | None = None,
) -> Batch:
    """Run ``batch`` through ``steps[start:stop]`` and return the output batch."""
    i = start
    n = len(steps) if stop is None else stop
    step = None
    try:
        while i < n:
            step = steps[i]
            ctx.step = step
            ctx.batch = batch
            out = step.fn(batch)
            if ctx.violation is not None:  # a pure step reached the environment and
                raise ctx.violation  # caught the error itself: the run stops all the same
            if out.__class__ is not batch.__class__ and not isinstance(out, Batch):
                check_result(step.label, out)
            if out._ctx is not ctx:
                out = out._with_ctx(ctx)
            batch = out
            i += 1
    except (SkipBatch, ActionError):
        raise
    except Exception as exc:
        raise step_error(step, batch, ctx, exc) from exc
    finally:
        ctx.batch = None  # else batch -> ctx -> batch: a cycle only the GC would free
        ctx.step = None  # an output batch's `.pipeline` is the run's, whatever ran last
    return batch


def step_error(step: Any, batch: Batch, ctx: BatchContext, exc: BaseException) -> ActionError:
    """An ActionError naming the step, the batch (number, epoch, first ids) and the cause."""
    ids = np.asarray(batch.indices)
    preview = ", ".join(map(str, ids[:5].tolist())) + (", ..." if len(ids) > 5 else "")
    path = ".".join(map(str, step.path)) if step is not None else "?"
    label = step.label if step is not None else "?"
    explained = explain_readonly(exc, batch)
    detail = str(explained) if explained is not None else f"{type(exc).__name__}: {exc}"
    return ActionError(
        f"step {path} `{label}` failed on batch #{ctx.iteration} (epoch {ctx.epoch}, "
        f"{len(ids)} items: {preview}): {detail}",
        step=label,
        position=step.path[0] if step is not None else -1,
        batch_position=ctx.iteration,
        batch_indices=ids,
    )
