"""The interpreter: compiles a pipeline's steps and runs one batch through them.

Compiling turns each per-batch step into a plain function ``batch -> batch``
specialised for the batch class, so running a batch is a tight loop of calls.
Steps that act once per run (variables, models) are applied to the starting
environment instead. ``rebatch`` cuts the program into stages.

>>> import numpy as np
>>> from fpipe import Batch, Pipeline, action
>>> class B(Batch):
...     @action
...     def inc(self):
...         return self.replace(data=self.data + 1)
>>> program = compile_program((Pipeline().inc().inc())._steps, B)
>>> len(program.stages[0])
2
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .actions import check_result, explain_readonly
from .batch import Batch, SkipBatch
from .env import Environment
from .errors import ActionError, PipelineDefinitionError
from .runstate import NeedsDriver
from .steps import ActionStep, ApplyStep, Join, Maybe, Rebatch, Step

if TYPE_CHECKING:
    from .runstate import BatchContext

__all__ = ["CompiledStep", "Program", "compile_program", "compile_steps", "run_compiled"]


class CompiledStep:
    """One per-batch step, ready to call."""

    __slots__ = ("fn", "label", "needs_env", "path")

    def __init__(self, fn: Any, path: tuple[int, ...], label: str, needs_env: bool) -> None:
        self.fn = fn
        self.path = path
        self.label = label
        self.needs_env = needs_env

    def __repr__(self) -> str:
        return f"<step {'.'.join(map(str, self.path))} {self.label}>"


@dataclass(frozen=True)
class Program:
    """A compiled pipeline: its per-run steps and its per-batch stages."""

    start_steps: tuple[Step, ...]
    stages: tuple[tuple[CompiledStep, ...], ...]
    rebatches: tuple[Rebatch, ...]

    def start_env(self, previous: Environment | None = None) -> Environment:
        env = Environment()
        for step in self.start_steps:
            env = step.start(env, previous)
        return env

    @property
    def pure_prefix(self) -> int:
        """How many leading steps of the first stage can run away from the driver."""
        for i, s in enumerate(self.stages[0]):
            if s.needs_env:
                return i
        return len(self.stages[0])


def _start_steps(steps: Sequence[Step]) -> Iterator[Step]:
    for s in steps:
        if not s.per_batch:
            yield s
        elif isinstance(s, Maybe):
            yield from _start_steps(s.steps)


def compile_steps(
    steps: Sequence[Step], batch_class: type, base: tuple[int, ...] = ()
) -> tuple[CompiledStep, ...]:
    """Compile per-batch ``steps`` (no rebatch) for ``batch_class``."""
    out: list[CompiledStep] = []
    join: Join | None = None
    for i, step in enumerate(steps):
        path = (*base, i)
        if not step.per_batch:
            continue
        if isinstance(step, Rebatch):
            raise PipelineDefinitionError(
                "rebatch cannot be used inside `pipeline @ prob`; put it in the outer pipeline"
            )
        if isinstance(step, Join):
            if join is not None:
                step = Join(join.sources + step.sources)
            join = step
            continue
        if join is not None:
            if not isinstance(step, (ActionStep, ApplyStep)):
                raise PipelineDefinitionError(
                    f"join(...) must be followed by an action that takes the joined batches, "
                    f"not by {step.label}"
                )
            fn = step.compile(batch_class, path, extra=join.joined())
            needs = step.needs_env(batch_class) or join.needs_env(batch_class)
            join = None
        else:
            fn = step.compile(batch_class, path)
            needs = step.needs_env(batch_class)
        out.append(CompiledStep(fn, path, step.label, needs))
    if join is not None:
        raise PipelineDefinitionError(
            "join(...) is the last step: follow it with the action that receives the joined "
            "batches, e.g. `.join(other).add_masks()`"
        )
    return tuple(out)


def compile_program(steps: Sequence[Step], batch_class: type) -> Program:
    """Compile a whole pipeline: per-run steps, then stages split at each rebatch."""
    stages: list[tuple[CompiledStep, ...]] = []
    rebatches: list[Rebatch] = []
    start = 0
    for i, step in enumerate(steps):
        if isinstance(step, Rebatch):
            stages.append(_stage(steps, start, i, batch_class))
            rebatches.append(step)
            start = i + 1
    stages.append(_stage(steps, start, len(steps), batch_class))
    return Program(tuple(_start_steps(steps)), tuple(stages), tuple(rebatches))


def _stage(steps: Sequence[Step], lo: int, hi: int, batch_class: type) -> tuple[CompiledStep, ...]:
    compiled = compile_steps(steps[lo:hi], batch_class)
    # keep each step's position in the whole pipeline, for errors and randomness
    for c in compiled:
        c.path = (c.path[0] + lo, *c.path[1:])
    return compiled


def run_compiled(
    steps: tuple[CompiledStep, ...],
    batch: Batch,
    ctx: BatchContext,
    start: int = 0,
    worker: bool = False,
) -> Any:
    """Run ``batch`` through ``steps[start:]``.

    On the driver, return the output batch. On a worker (``worker=True``), stop before
    the first step that needs the run's environment and return ``(batch, position)``
    so the driver can go on from there.
    """
    i = start
    n = len(steps)
    step = None
    try:
        while i < n:
            step = steps[i]
            if worker and step.needs_env:
                break
            ctx.step = step.path
            ctx.batch = batch
            out = step.fn(batch)
            if out.__class__ is not batch.__class__ and not isinstance(out, Batch):
                check_result(step.label, out)
            if out._ctx is not ctx:
                out = out._with_ctx(ctx)
            batch = out
            i += 1
    except NeedsDriver:
        if not worker:
            raise
    except (SkipBatch, ActionError):
        raise
    except Exception as exc:
        raise step_error(step, batch, ctx, exc) from exc
    finally:
        ctx.batch = None  # else batch -> ctx -> batch: a cycle only the GC would free
    return (batch, i) if worker else batch


def step_error(step: Any, batch: Batch, ctx: BatchContext, exc: BaseException) -> ActionError:
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
