"""Executors: where the pure prefix of a pipeline runs while the driver goes on.

A run splits its first stage in two. The *pure prefix* (the steps before the first
effectful one, see :mod:`fpipe.actions`) runs on workers: threads, processes or a
Dask cluster. The rest runs on the driver, one batch at a time and in batch order, so
the run's environment evolves exactly as in a sequential run. Which steps are pure is
known before any of them runs: no step is ever run twice.

>>> resolve_executor(None, prefetch=0) is None   # sequential: everything on the driver
True
>>> type(resolve_executor(None, prefetch=4)).__name__
'ThreadExecutor'
"""

from __future__ import annotations

import pickle
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from . import rng
from .batch import SkipBatch
from .env import Environment
from .errors import FpipeError, PipelineDefinitionError
from .interpreter import compile_program, run_compiled
from .runstate import BatchContext, RunState
from .steps import Join, Rebatch, Step

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = [
    "DaskExecutor",
    "Executor",
    "Job",
    "Prepared",
    "ProcessExecutor",
    "Task",
    "ThreadExecutor",
    "resolve_executor",
    "work",
]


@dataclass(frozen=True)
class Job:
    """What every worker needs once per run (sent once, not per batch)."""

    steps: tuple[Step, ...]
    batch_class: type
    dataset: Any
    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)  # what pure steps may read
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def for_workers(self) -> Job:
        """This job with only the steps up to the pure prefix: the rest stays on the driver.

        Steps keep their positions (their random streams depend on them); a lambda in a
        later, driver-side step (e.g. ``update_variable(name, lambda b: ...)``) is never sent.
        """
        program = compile_program(self.steps, self.batch_class)
        stage = program.stages[0]
        prefix = program.pure_prefix
        if prefix < len(stage):
            cut = stage[prefix].path[0]
        elif program.rebatches:
            cut = next(i for i, s in enumerate(self.steps) if isinstance(s, Rebatch))
        else:
            return self
        while cut > 0 and isinstance(self.steps[cut - 1], Join):
            cut -= 1
        return replace(self, steps=self.steps[:cut])


@dataclass(frozen=True)
class Task:
    """One batch to prepare: where it is in the run and which dataset positions it holds."""

    epoch: int
    iteration: int
    positions: np.ndarray


@dataclass(frozen=True)
class Prepared:
    """A job made ready in one process: its compiled first stage, how many of its steps
    are pure (they run here) and the run state they see."""

    stage: tuple[Any, ...]
    prefix: int
    run: RunState

    @classmethod
    def of(cls, job: Job, run: RunState) -> Prepared:
        program = compile_program(job.steps, job.batch_class)
        return cls(program.stages[0], program.pure_prefix, run)


# Per worker process: job token -> its Prepared. A worker keeps one RunState per run,
# so in-batch parallelism there uses one bounded pool.
_prepared: OrderedDict[str, Prepared] = OrderedDict()


def _prepare(job: Job) -> tuple[Prepared, bool]:
    """The job made ready in this process, and whether that happened just now."""
    prepared = _prepared.get(job.token)
    if prepared is not None:
        return prepared, False
    run = RunState(seed=job.seed, env=Environment(), batch_class=job.batch_class, config=job.config)
    prepared = _prepared[job.token] = Prepared.of(job, run)
    while len(_prepared) > 4:
        _prepared.popitem(last=False)[1].run.close()
    return prepared, True


def work(job: Job, task: Task, local: Prepared | None = None) -> tuple[Any, int, bool]:
    """Load one batch and run it through the pure prefix.

    Return ``(batch, next_step, drew_globally)``: ``batch`` is None when an action
    skipped it; ``drew_globally`` says whether, on the first batch this worker process
    prepared for the run, a step drew from numpy's global generator (the driver warns).
    ``local`` is the job prepared by the driver when the worker is a thread of the
    driver's process (the driver watches the global generator itself).
    """
    first = False
    if local is None:
        local, first = _prepare(job)
    ctx = BatchContext(local.run, task.epoch, task.iteration)
    mark = rng.global_mark() if first else None
    try:
        batch = job.dataset._batch_at(task.positions, ctx)
        out = run_compiled(local.stage, batch, ctx, 0, local.prefix)
        result: tuple[Any, int] = (out._with_ctx(None), local.prefix)
    except SkipBatch:
        result = (None, -1)
    return (*result, mark is not None and rng.global_moved(mark))


class Executor:
    """Base class: ``open`` once per run, ``submit`` one task per batch, ``close`` at the end."""

    window = 1

    def open(self, job: Job, run: RunState) -> None:
        raise NotImplementedError

    def submit(self, task: Task) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ThreadExecutor(Executor):
    """Prepare up to ``workers`` batches ahead on threads of this process."""

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"ThreadExecutor needs at least one worker, got {workers}")
        self.window = workers
        self._pool: ThreadPoolExecutor | None = None

    def open(self, job: Job, run: RunState) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._job = job
        self._local = Prepared.of(job, run)

        self._pool = ThreadPoolExecutor(self.window, thread_name_prefix="fpipe-prefetch")

    def submit(self, task: Task) -> Future:
        assert self._pool is not None
        return self._pool.submit(work, self._job, task, self._local)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_process_job: Job | None = None


def _process_init(payload: bytes) -> None:
    global _process_job
    _process_job = pickle.loads(payload)


def _process_work(task: Task) -> tuple[Any, int, bool]:
    assert _process_job is not None
    return work(_process_job, task)


def check_picklable(job: Job) -> bytes:
    """Pickle ``job``, or say which step (or the dataset) cannot be sent to a worker."""
    try:
        return pickle.dumps(job)
    except Exception as exc:
        culprit = "the dataset"
        try:
            pickle.dumps(job.batch_class)
        except Exception:
            culprit = f"the batch class {job.batch_class.__qualname__}"
        for i, step in enumerate(job.steps):
            try:
                pickle.dumps(step)
            except Exception:
                culprit = f"step {i} `{step.label}`"
                break
        raise PipelineDefinitionError(
            f"{culprit} cannot be sent to worker processes ({type(exc).__name__}: {exc}). "
            "Processes receive the pipeline by pickling: use module-level functions and "
            "batch classes (no lambdas or local classes), or run with threads "
            "(executor='threads')."
        ) from exc


class ProcessExecutor(Executor):
    """Prepare batches in ``workers`` separate processes (started with ``spawn``).

    If a worker process dies (killed, out of memory, a crash in native code), the pool
    is started again and the batches it held are computed again, up to
    ``max_restarts`` times in a run; then the run fails with an error that says so.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        window: int | None = None,
        start_method: str = "spawn",
        max_restarts: int = 3,
    ):
        if workers < 1:
            raise ValueError(f"ProcessExecutor needs at least one worker, got {workers}")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        self.workers = workers
        self.window = window or 2 * workers
        self.start_method = start_method
        self.max_restarts = max_restarts
        self._pool: Any = None
        self._payload: Any = None
        self._generation = 0  # how many pools this run has started, minus one
        self._mutex = threading.Lock()

    def open(self, job: Job, run: RunState) -> None:
        self._payload = check_picklable(job.for_workers())
        self._generation = 0
        self._pool = self._start_pool()

    def _start_pool(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context(self.start_method),
            initializer=_process_init,
            initargs=(self._payload,),
        )

    def submit(self, task: Task) -> _ProcessTask:
        assert self._pool is not None
        return _ProcessTask(self, task)

    def _resubmit(self, handle: _ProcessTask, exc: BaseException) -> None:
        """A worker died: start a new pool (once per death) and send the task again."""
        with self._mutex:
            if handle.generation == self._generation:  # the first to see this pool broken
                if self._generation >= self.max_restarts:
                    raise FpipeError(
                        f"a worker process died {self._generation + 1} times in this run "
                        f"(batch #{handle.task.iteration} was being prepared the last time): "
                        "the pure steps may crash the interpreter (native code, memory). "
                        "A common cause is a script that starts the run at import time: "
                        "worker processes import the script, so guard the run with "
                        "`if __name__ == '__main__':`. Otherwise run with executor='threads' "
                        "or prefetch=0 to see the error itself."
                    ) from exc
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._start_pool()
                self._generation += 1
            handle.send()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class _ProcessTask:
    """A batch being prepared in a worker process; sent again if its pool breaks."""

    __slots__ = ("executor", "future", "generation", "task")

    def __init__(self, executor: ProcessExecutor, task: Task) -> None:
        self.executor = executor
        self.task = task
        self.send()

    def send(self) -> None:
        ex = self.executor
        self.generation = ex._generation
        self.future = ex._pool.submit(_process_work, self.task)

    def result(self) -> Any:
        from concurrent.futures import CancelledError
        from concurrent.futures.process import BrokenProcessPool

        while True:
            try:
                return self.future.result()
            except BrokenProcessPool as exc:
                self.executor._resubmit(self, exc)
            except CancelledError as exc:
                if self.generation == self.executor._generation:
                    raise  # cancelled for good, not by a pool restart
                self.executor._resubmit(self, exc)

    def cancel(self) -> bool:
        return self.future.cancel()


class DaskExecutor(Executor):
    """Prepare batches on a Dask ``distributed`` cluster through ``client``.

    The job is scattered to the workers once; each batch is one task, retried on
    another worker if its worker dies.
    """

    def __init__(self, client: Any, *, window: int | None = None, retries: int = 0) -> None:
        self.client = client
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.window = window or 2 * n_workers
        self.retries = retries
        self._job: Any = None

    def open(self, job: Job, run: RunState) -> None:
        job = job.for_workers()
        check_picklable(job)
        self._job = self.client.scatter(job, broadcast=True, hash=False)

    def submit(self, task: Task) -> Any:
        return self.client.submit(work, self._job, task, pure=False, retries=self.retries)

    def close(self) -> None:
        if self._job is not None:
            self._job.release()
            self._job = None


def _is_dask_client(obj: Any) -> bool:
    return type(obj).__module__.startswith("distributed") and hasattr(obj, "submit")


def resolve_executor(executor: Any, prefetch: int = 0) -> Executor | None:
    """Turn ``executor=`` and ``prefetch=`` into an Executor, or None for a sequential run.

    ``executor`` is None or ``"threads"`` (threads, ``prefetch`` of them), ``"processes"``,
    a ``distributed.Client``, or an :class:`Executor`.
    """
    if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
        raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
    window = int(prefetch) or None
    if isinstance(executor, Executor):
        return executor
    if executor is None or executor == "threads":
        return ThreadExecutor(window) if window else None
    if executor == "processes":
        return ProcessExecutor(workers=2, window=window)
    if _is_dask_client(executor):
        return DaskExecutor(executor, window=window)
    if executor == "sequential":
        return None
    choices: Sequence[str] = ("'threads'", "'processes'", "'sequential'", "a distributed.Client")
    raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(choices)}")
