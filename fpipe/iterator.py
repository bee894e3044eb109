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

import re
import warnings
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import rng
from .batch import Batch, SkipBatch
from .env import Environment
from .errors import FpipeError, GlobalRandomWarning, ResumeError
from .executors import Job, Task, resolve_executor
from .interpreter import compile_program, run_compiled
from .plan import BatchPlan, IterState
from .runstate import BatchContext, RunState

if TYPE_CHECKING:
    from .dataset import Dataset
    from .pipeline import Pipeline

__all__ = ["PipelineIterator", "pipeline_fingerprint"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]+")


def pipeline_fingerprint(pipeline: Pipeline) -> str:
    """A stable text identity of a pipeline's steps and dataset (for resumable states)."""
    ds = pipeline.dataset
    parts = [s.label for s in pipeline.steps]
    if ds is not None:
        parts.append(f"{ds.batch_class.__qualname__}:{len(ds)}:{_digest(ds.indices)}")
    text = _ADDRESS.sub("", "|".join(parts))
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _digest(ids: Any) -> str:
    import hashlib

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
        self._program = compile_program(pipeline.steps, dataset.batch_class)
        if state is not None:
            if isinstance(state, dict):
                state = IterState.from_dict(state)
            if not isinstance(state, IterState):
                raise ResumeError(f"state must be an IterState or its dict, not {type(state)}")
            plan = plan.resume(state)
            if len(state.carry) not in (0, len(self._program.rebatches)):
                raise ResumeError(
                    f"this state holds the items of {len(state.carry)} rebatch stage(s), but "
                    f"the pipeline has {len(self._program.rebatches)}: it comes from another "
                    "pipeline"
                )
        start = state if state is not None else plan.initial_state()
        env = self._program.start_env(pipeline.model_env, pipeline.result_env)
        if restore is not None:
            env = replace(
                env,
                variables=env.variables.update(restore.variables),
                static=env.static.update(restore.static),
                dynamic=env.dynamic.update(restore.dynamic),
            )
        run = RunState(
            seed=plan.seed,
            env=env,
            batch_class=dataset.batch_class,
            config=pipeline.config,
            batch_size=plan.batch_size,
            streams=_stream_opener(plan.batch_size),
        )
        self._engine = _Engine(
            pipeline,
            dataset,
            self._program,
            plan,
            start,
            run,
            resolve_executor(executor, prefetch),
        )
        # The generator refers to the engine, never to this iterator: when a loop that
        # holds the only reference breaks off, the iterator and then the generator are
        # freed at once, and the generator's cleanup stops the workers (no cycle to wait
        # for the garbage collector).
        self._gen: Generator[Batch, None, None] = self._engine.generate()

    # -- the iterator protocol ------------------------------------------------------------
    def __iter__(self) -> PipelineIterator:
        return self

    def __next__(self) -> Batch:
        return next(self._gen)

    def close(self) -> None:
        """Stop the run: workers are stopped and joined, nothing is left behind."""
        self._gen.close()
        self._engine.run.close()

    def __enter__(self) -> PipelineIterator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what the run has produced --------------------------------------------------------
    @property
    def seed(self) -> int:
        return self._engine.plan.seed

    @property
    def plan(self) -> BatchPlan:
        """The batching plan this run follows."""
        return self._engine.plan

    @property
    def env(self) -> Environment:
        """The run's environment now (variables and models)."""
        return self._engine.run.env

    def get_variable(self, name: str, *default: Any) -> Any:
        """A variable of this run, as it is now."""
        return self._engine.run.env.get_variable(name, *default)

    @property
    def variables(self) -> dict[str, Any]:
        """The run's variables, as they are now."""
        return dict(self._engine.run.env.variables)

    def get_state(self) -> IterState:
        """Where the iteration is: resume from it to get the batches that come next."""
        engine = self._engine
        epoch, in_epoch, iteration = engine.at
        plan = engine.plan
        carry = tuple((tuple(held), produced) for held, produced in engine.held)
        return IterState(plan.seed, epoch, in_epoch, iteration, plan.fingerprint, carry)

    def result(self) -> Pipeline:
        """The pipeline, holding this run's environment (what ``run()`` returns)."""
        return self._pipeline._with_env(self._engine.run.env)


class _Engine:
    """What one run of a pipeline iterates with: its program, plan, run state and workers."""

    def __init__(
        self,
        pipeline: Pipeline,
        dataset: Dataset,
        program: Any,
        plan: BatchPlan,
        start: IterState,
        run: RunState,
        executor: Any,
    ) -> None:
        self.pipeline = pipeline
        self.dataset = dataset
        self.program = program
        self.plan = plan
        self.start = start
        # (epoch, batch_in_epoch, iteration) after the last batch handed out
        self.at = (start.epoch, start.batch_in_epoch, start.iteration)
        self.run = run
        self.executor = executor
        self.rng_blame: list[str] = []  # steps seen drawing from numpy's global RNG
        self.warned_rng = False  # warned already: once per run is enough
        # per rebatch stage: the items it holds (batches, bare of run context) and the
        # number of batches it has produced; part of the state, so a run resumes exactly
        n_stages = len(program.rebatches)
        carry = start.carry or tuple(((), 0) for _ in range(n_stages))
        self.held: list[tuple[list[Batch], int]] = [(list(b), n) for b, n in carry]

    def generate(self) -> Generator[Batch, None, None]:
        stream: Any = None
        try:
            stream = self._first_stage()
            for k, rb in enumerate(self.program.rebatches, start=1):
                stream = self._rebatch(stream, rb, self.program.stages[k], k - 1)
            # The first output batch only (the hot path stays free): did any step draw
            # from numpy's global generator? Such a run cannot be reproduced.
            mark = rng.global_mark()
            first = next(stream, None)
            if rng.global_moved(mark) and not self.warned_rng:
                self.warned_rng = True
                self._warn_global_rng()
            if first is None:
                return
            yield first
            yield from stream
        finally:
            if stream is not None:
                stream.close()
            self.run.close()

    def _warn_global_rng(self) -> None:
        if self.rng_blame:
            where = "step(s) " + ", ".join(f"`{label}`" for label in self.rng_blame)
        else:
            labels = [s.label for stage in self.program.stages for s in stage]
            where = "one of the steps " + ", ".join(f"`{label}`" for label in labels)
        warnings.warn(
            f"{where} drew from numpy's global random generator (np.random.rand, "
            "np.random.shuffle, ...) on the first batch of this run: the results depend on "
            "global state, threads and processes, so the run is not reproducible from its "
            "seed. Draw from `batch.random` (or `batch.random_for(item)`) instead.",
            GlobalRandomWarning,
            stacklevel=3,
        )

    def _watched(self, steps: Any, batch: Batch, ctx: BatchContext) -> Batch:
        """Run the first batch step by step, noting the steps that use the global RNG."""
        for i in range(len(steps)):
            mark = rng.global_mark()
            try:
                batch = run_compiled(steps[: i + 1], batch, ctx, i)
            finally:
                if rng.global_moved(mark) and steps[i].label not in self.rng_blame:
                    self.rng_blame.append(steps[i].label)
        return batch

    def _first_stage(self) -> Iterator[Batch]:
        steps = self.program.stages[0]
        run, dataset = self.run, self.dataset
        source = self.plan.coordinates(self.start)
        executor = self.executor
        if executor is None:
            batch_at = dataset._batch_at
            run_first: Any = self._watched  # the first batch runs step by step
            for epoch, in_epoch, after, positions in source:
                ctx = BatchContext(run, epoch, after - 1)
                try:
                    out = run_first(steps, batch_at(positions, ctx), ctx)
                    run_first = run_compiled
                except SkipBatch:
                    out = None
                self.at = (epoch, in_epoch, after)
                if out is not None:
                    yield out
            return
        job = Job(
            self.pipeline.steps, dataset.batch_class, dataset, self.plan.seed, self.run.config
        )
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
        batch, position, drew_globally = future.result()
        self.at = at
        if drew_globally and not self.warned_rng:
            self.warned_rng = True
            self._warn_global_rng()
        if batch is None:
            return None
        ctx = BatchContext(self.run, at[0], at[2] - 1)
        try:
            return run_compiled(self.program.stages[0], batch._with_ctx(ctx), ctx, position)
        except SkipBatch:
            return None

    def _rebatch(self, stream: Iterator[Batch], rb: Any, steps: Any, stage: int) -> Iterator[Batch]:
        size = rb.batch_size
        merge = rb.merge_fn
        start, produced = self.held[stage]
        buffer: list[Batch] = list(start)
        held = sum(len(b) for b in buffer)

        def emit(batch: Batch) -> Batch | None:
            nonlocal produced
            ctx = BatchContext(self.run, 0, produced)
            produced += 1
            # what this stage still holds once `batch` is out (the state after it)
            self.held[stage] = ([_bare(b) for b in buffer], produced)
            try:
                return run_compiled(steps, batch._with_ctx(ctx), ctx)
            except SkipBatch:
                return None

        def full_batches() -> Iterator[Batch]:
            nonlocal buffer, held
            while held >= size:
                whole = buffer[0] if len(buffer) == 1 else (merge or type(buffer[0]).merge)(buffer)
                head, tail = whole.select(slice(0, size)), whole.select(slice(size, None))
                buffer = [tail] if len(tail) else []
                held = len(tail)
                out = emit(head)
                if out is not None:
                    yield out

        yield from full_batches()  # a resumed stage may start with more than `size` items
        for batch in stream:
            buffer.append(batch)
            held += len(batch)
            yield from full_batches()
        if held:
            whole = buffer[0] if len(buffer) == 1 else (merge or type(buffer[0]).merge)(buffer)
            buffer, held = [], 0
            out = emit(whole)
            if out is not None:
                yield out


def _stream_opener(batch_size: int) -> Any:
    """How a run's ``merge`` steps open their sources: an endless run of each, seeded."""

    def open_stream(source: Pipeline, seed: int) -> Iterator[Batch]:
        return source._iterator({**source._run_args((batch_size,)), "n_epochs": None, "seed": seed})

    return open_stream


def _bare(batch: Batch) -> Batch:
    """The batch without its run context: what a saved state may hold."""
    return batch._with_ctx(None)
