"""PipelineIterator: one run of a pipeline over a dataset, batch by batch.

It owns everything a run needs (the compiled program, the run state, the workers)
and none of it ever reaches the pipeline it came from. ``get_state()`` returns a
small :class:`~fpipe.state.IterState` of plain data; passing it back as
``pipeline.iterate(..., state=state)`` continues with exactly the batches that
would have come next (see :mod:`fpipe.resume` for what is checked).

>>> import numpy as np
>>> from fpipe import Dataset
>>> it = Dataset(10).p.iterate(4, seed=1, shuffle=True)
>>> first = next(it); state = it.get_state()
>>> again = Dataset(10).p.iterate(4, shuffle=True, state=state)
>>> bool((next(it).indices == next(again).indices).all())
True
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from dataclasses import replace
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

from . import rng
from .batch import Batch, SkipBatch
from .env import Environment
from .errors import FpipeError, GlobalRandomWarning, PipelineDefinitionError, did_you_mean
from .executors import Job, Task, driver_ahead, resolve_executor, small_batches
from .interpreter import compile_program, run_compiled
from .plan import BatchPlan
from .plot import History
from .profile import Profile, Profiler
from .progress import SKIPPED, Bar, Progress, Watch
from .resume import Position, RebatchStage, ResumePoint, merge_stages, resume_point, run_identity
from .runstate import BatchContext, RunState
from .state import IterState

if TYPE_CHECKING:
    from .dataset import Dataset
    from .pipeline import Pipeline

__all__ = ["IterPosition", "PipelineIterator"]


class IterPosition(NamedTuple):
    """How far a run is: after its last batch so far, ``iteration`` batches of the plan
    were made in all, ``batch_in_epoch`` of them in epoch ``epoch`` (0-based). Batches an
    action skipped count; after a ``rebatch``, these are the batches of the plan (the
    rebatched ones may lag behind)."""

    epoch: int
    batch_in_epoch: int
    iteration: int


class PipelineIterator:
    """Iterates over the output batches of one run; see :meth:`Pipeline.iterate`.

    ``len(iterator)`` is the number of batches in the run's plan, from its start;
    ``iterator.position`` how far it is (:class:`IterPosition`).

    >>> from fpipe import Dataset
    >>> it = Dataset(10).p.iterate(4, n_epochs=2)
    >>> len(it), it.position
    (6, IterPosition(epoch=0, batch_in_epoch=0, iteration=0))
    >>> _ = next(it), next(it), next(it), next(it)
    >>> it.position
    IterPosition(epoch=1, batch_in_epoch=1, iteration=4)
    """

    def __init__(
        self,
        pipeline: Pipeline,
        plan: BatchPlan,
        *,
        prefetch: int = 0,
        executor: Any = None,
        state: IterState | Mapping[str, Any] | None = None,
        restore: Environment | None = None,
        seed_given: bool = False,
        bar: Bar | None = None,
        profile: bool = False,
        epochs: bool = False,
    ) -> None:
        dataset = pipeline.dataset
        if dataset is None:
            raise FpipeError(
                "this pipeline has no dataset: link one first, e.g. `pipeline << dataset` "
                "or `dataset.p...`"
            )
        self._pipeline = pipeline
        pipeline.check()  # every problem at once, before any batch (see fpipe.check)
        # a profiled run times every step; the others compile without timing (no cost)
        self._profiler = Profiler() if profile else None
        wrap = self._profiler.driver.wrap if self._profiler is not None else None
        self._program = compile_program(pipeline.steps, dataset.batch_class, wrap)
        if epochs and self._program.rebatches:
            raise PipelineDefinitionError(
                "epochs(): the batches after a rebatch span epochs, so the pipeline has no "
                "result at an epoch's end. Iterate with iterate(...) and read "
                "iterator.position, or run one epoch at a time: run(..., n_epochs=1)."
            )
        point: ResumePoint | None = None
        if state is not None:
            plan, point = resume_point(state, pipeline, plan, seed_given=seed_given)
        env = self._program.start_env(pipeline.model_env, pipeline.result_env)
        if restore is not None:
            env = replace(
                env,
                variables=env.variables.update(restore.variables),
                static=env.static.update(restore.static),
                dynamic=env.dynamic.update(restore.dynamic),
            )
        merges = dict(point.merges) if point is not None else {}
        streams: dict[str, PipelineIterator] = {}
        run = RunState(
            seed=plan.seed,
            env=env,
            batch_class=dataset.batch_class,
            config=pipeline.config,
            batch_size=plan.batch_size,
            streams=_stream_opener(plan.batch_size, merges, streams),
        )
        self._engine = _Engine(
            pipeline,
            dataset,
            self._program,
            plan,
            point,
            run,
            resolve_executor(executor, prefetch),
            streams,
            merges,
        )
        self._given = point.state if point is not None else None
        # The generator refers to the engine, never to this iterator: when a loop that
        # holds the only reference breaks off, the iterator and then the generator are
        # freed at once, and the generator's cleanup stops the workers (no cycle to wait
        # for the garbage collector).
        self._gen: Generator[Batch, None, None] = self._engine.generate()
        self._watch: Watch | None = None
        if bar is not None or profile or epochs:  # else no bar or clock code in the loop
            self._watch = self._watch_run(bar, epochs)
            self._gen = self._watch.stream(self._gen)

    def _watch_run(self, bar: Bar | None, epochs: bool) -> Watch:
        """The watch of a run with a bar, a profile or epoch results (see fpipe.progress)."""
        engine = self._engine
        run = engine.run
        engine.profiler = self._profiler
        engine.marks = not self._program.rebatches  # skipped batches are seen: epoch ends

        def variables() -> Mapping[str, Any]:
            # the environment as it is, not `run.env`, which hands the run's growing lists
            # over to the caller (the next append would copy the whole list)
            return run._env.variables

        progress = None
        if bar is not None:
            known = sorted(run._env.variables)
            for name in bar.variables:
                if name not in run._env.variables:
                    raise FpipeError(
                        f"bar: the pipeline has no variable {name!r} to show (its variables: "
                        f"{known}).{did_you_mean(name, known)} Declare it with "
                        f".init_variable({name!r}, []) or show another one."
                    )
            progress = Progress(bar, engine.plan, lambda n: variables().get(n), per_epoch=epochs)
        return Watch(
            lambda: engine.at,
            engine.plan,
            variables,
            progress,
            self._profiler,
            marks=engine.marks,
            events=epochs,
        )

    # -- the iterator protocol ------------------------------------------------------------
    def __iter__(self) -> PipelineIterator:
        return self

    def __next__(self) -> Batch:
        return next(self._gen)

    def __len__(self) -> int:
        """The number of batches in the run's plan, from its start (a resumed run has
        made ``position.iteration`` of them before); a batch an action skips counts."""
        if self._program.rebatches:
            raise TypeError(
                "len() of this iteration is unknown: its pipeline rebatches, so how many "
                "batches come out depends on the items each batch holds. Count them as they "
                "come, or read iterator.position for how many batches of the plan "
                f"({self.plan.total_batches}) were made so far"
            )
        total = self.plan.total_batches
        if total is None:
            raise TypeError(
                "len() of this iteration is unknown: it never ends (n_epochs=None without "
                "n_iters). Give n_iters (the batches to make) or n_epochs, or read "
                "iterator.position to see how far it is"
            )
        return total

    def __bool__(self) -> bool:
        return True  # an iterator is not empty-or-not, whatever its length

    @property
    def position(self) -> IterPosition:
        """How far the run is: :class:`IterPosition` after its last batch so far."""
        return IterPosition(*self._engine.at)

    @property
    def profile(self) -> Profile:
        """Where this run's time went so far (:class:`~fpipe.profile.Profile`)."""
        if self._profiler is None:
            raise FpipeError(
                "this run is not profiled: iterate with iterate(..., profile=True) or "
                "gen_batch(..., profile=True), or run with run(..., profile=True)"
            )
        return self._profiler.profile()

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
        """The run's seed: every random draw of the run derives from it."""
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
        """Where the iteration is: resume from it to get the batches that come next.

        The state is plain data (:class:`~fpipe.state.IterState`); its fingerprint is
        computed on the first call (it hashes the dataset's contents once per array).
        """
        engine = self._engine
        if not engine.started and self._given is not None:
            return self._given
        return engine.state()

    def result(self) -> Pipeline:
        """The pipeline, holding this run's environment (what ``run()`` returns).

        It also carries the run's records, which are not part of its value: its
        ``profile`` (a profiled run) and the history its ``plot()`` reads.
        """
        engine = self._engine
        watch = self._watch
        ends = None
        if watch is not None and watch.epoch_ends is not None and engine.start.iteration == 0:
            ends = tuple(watch.epoch_ends)
        history = History(engine.plan.batches_per_epoch, engine.at[2], ends)
        profile = self._profiler.profile() if self._profiler is not None else None
        return self._pipeline._with_run(engine.run.env, profile, history)


class _Engine:
    """What one run of a pipeline iterates with: its program, plan, run state and workers."""

    def __init__(
        self,
        pipeline: Pipeline,
        dataset: Dataset,
        program: Any,
        plan: BatchPlan,
        point: ResumePoint | None,
        run: RunState,
        executor: Any,
        streams: dict[str, PipelineIterator],
        merges: dict[str, Any],
    ) -> None:
        self.pipeline = pipeline
        self.dataset = dataset
        self.program = program
        self.plan = plan
        self.start = point.start if point is not None else plan.initial_state()
        # (epoch, batch_in_epoch, iteration) of the source after the last batch it made
        self.at = (self.start.epoch, self.start.batch_in_epoch, self.start.iteration)
        # source batches up to this iteration were made before the state was taken: a
        # resumed run remakes them (for the rebatch stages) with a replica of the run
        self.present = point.present if point is not None else 0
        self.run = run
        self._replica: RunState | None = None
        self.executor = executor
        self.started = False  # has an output batch been handed out?
        self.rng_blame: list[str] = []  # steps seen drawing from numpy's global RNG
        self.warned_rng = False  # warned already: once per run is enough
        self.streams = streams  # merge streams opened so far, by path
        self.merges = merges  # the resumed state of each merge stream, by path
        self.merge_stage = merge_stages(pipeline.steps)
        self.identity: tuple[dict[str, Any], str] | None = None
        self.profiler: Profiler | None = None  # a profiled run's (see fpipe.profile)
        self.marks = False  # yield SKIPPED for a skipped batch (a watched run)
        self.stages = [
            RebatchStage(
                k,
                rb,
                program.stages[k],
                point.stages[k - 1] if point is not None else None,
                point.produced[k - 1] if point is not None else 0,
            )
            for k, rb in enumerate(program.rebatches, start=1)
        ]

    def run_for(self, remade: bool) -> RunState:
        """The run a batch's steps use: a replica for batches made again on resume."""
        if not remade:
            return self.run
        if self._replica is None:
            self._replica = self.run.replica()
        return self._replica

    # -- where the run stands ----------------------------------------------------------
    def state(self) -> IterState:
        if self.identity is None:
            self.identity = run_identity(self.pipeline, self.plan)
        identity, fingerprint = self.identity
        last = len(self.stages)
        position: Position | None = self.position(last)
        if not self.stages and "merges" not in position:  # type: ignore[operator]
            position = None
        epoch, in_epoch, iteration = self.at
        return IterState(
            self.plan.seed,
            epoch,
            in_epoch,
            iteration,
            fingerprint,
            identity,
            position,
            tuple(s.produced for s in self.stages),
        )

    def position(self, stage: int) -> Position:
        """Where stage ``stage`` stands now (0: the source), as plain data."""
        if stage == 0:
            epoch, in_epoch, iteration = self.at
            pos: Position = {"epoch": epoch, "batch_in_epoch": in_epoch, "iteration": iteration}
        else:
            pos = self.stages[stage - 1].position(lambda: self.position(stage - 1))
        merges = {
            path: self.streams[path].get_state().to_dict()
            if path in self.streams
            else self.merges[path]
            for path, at in self.merge_stage.items()
            if at == stage and (path in self.streams or path in self.merges)
        }
        if merges:
            pos["merges"] = merges
        return pos

    # -- making batches ------------------------------------------------------------------
    def generate(self) -> Generator[Batch, None, None]:
        stream: Any = None
        try:
            stream = self._first_stage()
            for k, stage in enumerate(self.stages, start=1):
                stream = stage.run(stream, self._upstream(k - 1), self.run_for)
            # The first output batch only (the hot path stays free): did any step draw
            # from numpy's global generator? Such a run cannot be reproduced.
            self.rng_mark = mark = rng.global_mark()  # also where `_watched` starts from
            first = next(stream, None)
            if rng.global_moved(mark) and not self.warned_rng:
                self.warned_rng = True
                self._warn_global_rng()
            if first is None:
                return
            self.started = True
            yield first
            del first  # the consumer has it: this frame must not keep it for the whole run
            yield from stream
        finally:
            if stream is not None:
                stream.close()
            self.run.close()

    def _upstream(self, stage: int) -> Any:
        return lambda: self.position(stage)

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
        """Run the first batch step by step, noting the steps that use the global RNG.

        A look between steps costs ~0.3 us while nothing draws (see :mod:`fpipe.rng`); it
        starts from the mark ``generate`` took (loading the batch may have drawn).
        """
        _, mark = rng.global_step(self.rng_mark)
        for i in range(len(steps)):
            try:
                batch = run_compiled(steps, batch, ctx, i, i + 1)
            finally:
                moved, mark = rng.global_step(mark)
                if moved and steps[i].label not in self.rng_blame:
                    self.rng_blame.append(steps[i].label)
        return batch

    def _first_stage(self) -> Iterator[Batch]:
        """The first stage's output batches: each made when it is due, made on the driver
        a few in a row, or prepared by the executor's workers (no generator of its own:
        a level less for every batch to pass through)."""
        steps = self.program.stages[0]
        source = self.plan.coordinates(self.start)
        if self.executor is None:
            if self._ahead():  # a driver step first: made ahead
                ahead = driver_ahead(self.dataset, self.plan.batch_size)
                return self._made_ahead(steps, source, ahead)
            return self._when_due(steps, source)
        profiler = self.profiler
        job = Job(
            self.pipeline.steps,
            self.dataset.batch_class,
            self.dataset,
            self.plan.seed,
            self.run.config,
            profile=profiler.workers if profiler is not None else None,
        )
        session = self.executor.open(job, self.run)  # this run's workers: executors are shared
        if session.inline:  # nothing for a worker to do: the driver makes the batches
            session.close()
            return self._made_ahead(steps, source, session.window)
        # The run's end stops the workers whatever becomes of the stream (an error after
        # this stage leaves it suspended, kept by the traceback; or it never starts).
        self.run.on_close(lambda: session.close(wait=False))
        return self._from_workers(steps, source, session)

    def _when_due(self, steps: Any, source: Iterator[Any]) -> Iterator[Batch]:
        """A sequential run's batches, each made when it is due."""
        batch_at = self.dataset._batch_at
        marks = self.marks
        run_first: Any = self._watched  # the first batch runs step by step
        for epoch, in_epoch, after, positions in source:
            ctx = BatchContext(self.run_for(after <= self.present), epoch, after - 1, in_epoch - 1)
            try:
                out = run_first(steps, batch_at(positions, ctx), ctx)
                run_first = run_compiled
            except SkipBatch:
                out = None
            self.at = (epoch, in_epoch, after)
            if out is not None:
                yield out
                out = None  # the consumer has it: not kept while the next batch is made
            elif marks:  # a watched run sees every batch of the plan
                yield SKIPPED

    def _from_workers(self, steps: Any, source: Iterator[Any], session: Any) -> Iterator[Batch]:
        """The batches the workers of ``session`` prepare, finished on the driver."""
        marks, profiler = self.marks, self.profiler
        # the session yields each batch's coordinates and its result from the workers
        results = session.stream(
            ((epoch, in_epoch, after), Task(epoch, after - 1, positions, in_epoch - 1))
            for epoch, in_epoch, after, positions in source
        )
        if profiler is not None:  # the workers run the pure prefix: their timings
            prefix = frozenset(s.path[0] for s in steps[: self.program.pure_prefix])
            profiler.opened(session.where, prefix)
            results = profiler.collect(results)
        wait = False  # an error reaches the caller at once, whatever batch still runs
        try:
            for at, (batch, position, drew_globally) in results:
                out = self._finish(at, batch, position, drew_globally)
                batch = None
                if out is not None:
                    yield out
                    out = None  # not kept while the next batch is finished
                elif marks:
                    yield SKIPPED
            wait = True
        except GeneratorExit:
            wait = True  # the consumer stopped: the workers are gone when it goes on
            raise
        finally:
            results.close()  # cancels what is still pending
            session.close(wait=wait)

    def _ahead(self) -> bool:
        """Whether a sequential run makes its batches a few in a row, ahead of their steps,
        as a prefetch run with nothing for a worker does: when its first step needs the
        driver (a model, a lock, a variable) and its batches are small. Heavy driver steps
        (a Keras step) leave the CPU caches cold, and making one batch between two of them
        costs several times what it costs in a row."""
        steps = self.program.stages[0]
        return (
            bool(steps)
            and self.program.pure_prefix == 0
            and small_batches(self.dataset, self.plan.batch_size)
        )

    def _made_ahead(self, steps: Any, source: Iterator[Any], ahead: int) -> Iterator[Batch]:
        """The batches of a run whose first step needs the driver (sequential, or with
        nothing for a worker): the driver makes them ``ahead`` at a time, with one gather
        per component (see :func:`fpipe.executors.driver_ahead` and
        ``Dataset._batches_at``), then runs each batch's steps, one batch at a time in
        batch order; the position advances batch by batch."""
        batches_at = self.dataset._batches_at
        run_first: Any = self._watched  # the first batch runs step by step
        marks = self.marks
        while True:
            ats, ctxs, positions = [], [], []
            for epoch, in_epoch, after, rows in islice(source, ahead):
                ats.append((epoch, in_epoch, after))
                ctxs.append(
                    BatchContext(
                        self.run_for(after <= self.present), epoch, after - 1, in_epoch - 1
                    )
                )
                positions.append(rows)
            if not ats:
                return
            chunk = deque(zip(ats, ctxs, batches_at(positions, ctxs), strict=True))
            del ats, ctxs, positions
            while chunk:  # popped: a batch the steps are done with is not kept here
                at, ctx, batch = chunk.popleft()
                try:
                    out = run_first(steps, batch, ctx)
                    run_first = run_compiled
                except SkipBatch:
                    out = None
                del batch
                self.at = at
                if out is not None:
                    yield out
                    out = None  # not kept while the next batch runs
                elif marks:  # a watched run sees every batch of the plan
                    yield SKIPPED

    def _finish(
        self, at: tuple[int, int, int], batch: Batch | None, position: int, drew_globally: bool
    ) -> Batch | None:
        """The driver's part of a batch the workers prepared (None: it was skipped)."""
        self.at = at
        if drew_globally and not self.warned_rng:
            self.warned_rng = True
            self._warn_global_rng()
        if batch is None:
            return None
        ctx = BatchContext(self.run_for(at[2] <= self.present), at[0], at[2] - 1, at[1] - 1)
        try:
            return run_compiled(self.program.stages[0], batch._with_ctx(ctx), ctx, position)
        except SkipBatch:
            return None


def _stream_opener(
    batch_size: int, resumed: Mapping[str, Any], opened: dict[str, PipelineIterator]
) -> Any:
    """How a run's ``merge`` steps open their sources: an endless run of each, seeded,
    continuing from its resumed state; the run keeps each one to record its state."""

    def open_stream(source: Pipeline, seed: int, path: tuple[int, ...]) -> Iterator[Batch]:
        key = ".".join(map(str, path))
        if source.dataset is not None and len(source.dataset) < batch_size:
            raise FpipeError(
                f"merge: the merged pipeline's dataset has {len(source.dataset)} items, fewer "
                f"than one batch of {batch_size}: each batch takes the next {batch_size} items "
                "of every merged source. Merge a larger source or use a smaller batch_size."
            )
        params = {**source._run_args((batch_size,), None, "merge"), "n_epochs": None, "seed": seed}
        stream = source._iterator(params, state=resumed.get(key))
        opened[key] = stream
        return stream

    return open_stream
