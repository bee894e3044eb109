"""PipelineIterator: one run of a pipeline over a dataset, batch by batch.

It owns everything a run needs (the compiled program, the run state, the workers)
and none of it ever reaches the pipeline it came from. ``get_state()`` returns a
small serialisable :class:`~fpipe.plan.IterState`; passing it back as
``pipeline.iterate(..., state=state)`` continues with exactly the batches that
would have come next.

>>> import numpy as np
>>> from fpipe import Dataset
>>> it = Dataset(10).p.iterate(4, seed=1, shuffle=True)
>>> first = next(it); state = it.get_state()
>>> again = Dataset(10).p.iterate(4, seed=1, shuffle=True, state=state)
>>> bool((next(it).indices == next(again).indices).all())
True
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .batch import Batch, SkipBatch
from .env import Environment
from .errors import FpipeError, ResumeError
from .executors import Job, Task, resolve_executor
from .interpreter import compile_program, run_compiled
from .plan import BatchPlan, IterState
from .runstate import BatchContext, RunState

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["PipelineIterator", "pipeline_fingerprint"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]+")


def pipeline_fingerprint(pipeline: Pipeline) -> str:
    """A stable text identity of a pipeline's steps and dataset (for resumable states)."""
    ds = pipeline.dataset
    parts = [s.label for s in pipeline._steps]
    if ds is not None:
        parts.append(f"{ds.batch_class.__qualname__}:{len(ds)}:{_digest(ds.indices)}")
    text = _ADDRESS.sub("", "|".join(parts))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _digest(ids: Any) -> str:
    if ids.dtype.kind in "iuf":
        return hashlib.sha1(ids.tobytes()).hexdigest()[:16]
    return hashlib.sha1("\x00".join(map(str, ids.tolist())).encode()).hexdigest()[:16]


class PipelineIterator:
    """Iterates over the output batches of one run; see :meth:`Pipeline.iterate`."""

    def __init__(
        self,
        pipeline: Pipeline,
        plan: BatchPlan,
        *,
        prefetch: int = 0,
        executor: Any = None,
        state: IterState | dict[str, Any] | None = None,
        restore: Environment | None = None,
    ) -> None:
        dataset = pipeline.dataset
        if dataset is None:
            raise FpipeError(
                "this pipeline has no dataset: link one first, e.g. `pipeline << dataset` "
                "or `dataset.p...`"
            )
        self._pipeline = pipeline
        self._dataset = dataset
        self._program = compile_program(pipeline._steps, dataset.batch_class)
        if state is not None:
            if isinstance(state, dict):
                state = IterState.from_dict(state)
            if not isinstance(state, IterState):
                raise ResumeError(f"state must be an IterState or its dict, not {type(state)}")
            if self._program.rebatches:
                raise ResumeError(
                    "a pipeline with rebatch cannot resume from a state yet: the items "
                    "buffered by rebatch are not part of the state"
                )
            plan = plan.resume(state)
        self._plan = plan
        self._start = state if state is not None else plan.initial_state()
        # (epoch, batch_in_epoch, iteration) after the last batch handed out
        self._at = (self._start.epoch, self._start.batch_in_epoch, self._start.iteration)
        env = self._program.start_env(previous=pipeline._env)
        if restore is not None:
            env = replace(
                env,
                variables=env.variables.update(restore.variables),
                static=env.static.update(restore.static),
                dynamic=env.dynamic.update(restore.dynamic),
            )
        self._run = RunState(
            seed=plan.seed,
            env=env,
            batch_class=dataset.batch_class,
            config=pipeline.config,
            batch_size=plan.batch_size,
        )
        self._executor = resolve_executor(executor, prefetch)
        self._gen: Generator[Batch, None, None] = self._generate()

    # -- the iterator protocol ------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        return self._gen

    def __next__(self) -> Batch:
        return next(self._gen)

    def close(self) -> None:
        """Stop the run: workers are stopped and joined, nothing is left behind."""
        self._gen.close()
        self._run.close()

    def __enter__(self) -> PipelineIterator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what the run has produced --------------------------------------------------------
    @property
    def seed(self) -> int:
        return self._plan.seed

    @property
    def env(self) -> Environment:
        """The run's environment now (variables and models)."""
        return self._run.env

    def get_state(self) -> IterState:
        """Where the iteration is: resume from it to get the batches that come next."""
        if self._program.rebatches:
            raise ResumeError(
                "get_state() is not available for a pipeline with rebatch: the items it "
                "buffers between batches are not part of the state"
            )
        epoch, in_epoch, iteration = self._at
        plan = self._plan
        return IterState(plan.seed, epoch, in_epoch, iteration, plan.fingerprint)

    def result(self) -> Pipeline:
        """The pipeline, holding this run's environment (what ``run()`` returns)."""
        return self._pipeline._with_env(self._run.env)

    # -- the engine -----------------------------------------------------------------------
    def _generate(self) -> Generator[Batch, None, None]:
        try:
            stream = self._first_stage()
            for k, rb in enumerate(self._program.rebatches, start=1):
                stream = self._rebatch(stream, rb, self._program.stages[k])
            yield from stream
        finally:
            self._run.close()

    def _first_stage(self) -> Iterator[Batch]:
        steps = self._program.stages[0]
        run, dataset = self._run, self._dataset
        source = self._plan.coordinates(self._start)
        executor = self._executor
        if executor is None:
            batch_at = dataset._batch_at
            for epoch, in_epoch, after, positions in source:
                ctx = BatchContext(run, epoch, after - 1)
                try:
                    out = run_compiled(steps, batch_at(positions, ctx), ctx)
                except SkipBatch:
                    out = None
                self._at = (epoch, in_epoch, after)
                if out is not None:
                    yield out
            return
        job = Job(self._pipeline._steps, dataset.batch_class, dataset, self._plan.seed)
        executor.open(job, run)
        pending: deque[tuple[tuple[int, int, int], Any]] = deque()
        try:
            for epoch, in_epoch, after, positions in source:
                task = Task(epoch, after - 1, positions)
                pending.append(((epoch, in_epoch, after), executor.submit(task)))
                if len(pending) > executor.window:
                    out = self._finish(*pending.popleft())
                    if out is not None:
                        yield out
            while pending:
                out = self._finish(*pending.popleft())
                if out is not None:
                    yield out
        finally:
            for *_, future in pending:
                future.cancel()
            executor.close()

    def _finish(self, at: tuple[int, int, int], future: Any) -> Batch | None:
        batch, position = future.result()
        self._at = at
        if batch is None:
            return None
        ctx = BatchContext(self._run, at[0], at[2] - 1)
        try:
            return run_compiled(self._program.stages[0], batch._with_ctx(ctx), ctx, position)
        except SkipBatch:
            return None

    def _rebatch(self, stream: Iterator[Batch], rb: Any, steps: Any) -> Iterator[Batch]:
        size = rb.batch_size
        merge = rb.merge_fn
        buffer: list[Batch] = []
        held = 0
        produced = 0

        def emit(batch: Batch) -> Batch | None:
            nonlocal produced
            ctx = BatchContext(self._run, 0, produced)
            produced += 1
            try:
                return run_compiled(steps, batch._with_ctx(ctx), ctx)
            except SkipBatch:
                return None

        for batch in stream:
            buffer.append(batch)
            held += len(batch)
            while held >= size:
                whole = buffer[0] if len(buffer) == 1 else (merge or type(buffer[0]).merge)(buffer)
                head, tail = whole.select(slice(0, size)), whole.select(slice(size, None))
                buffer = [tail] if len(tail) else []
                held = len(tail)
                out = emit(head)
                if out is not None:
                    yield out
        if held:
            whole = buffer[0] if len(buffer) == 1 else (merge or type(buffer[0]).merge)(buffer)
            out = emit(whole)
            if out is not None:
                yield out
