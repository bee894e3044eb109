"""Executors: where the pure prefix of a pipeline runs while the driver goes on.

A run splits its first stage in two. The *pure prefix* (the steps before the first
effectful one, see :mod:`fpipe.actions`) runs on workers: threads, processes or a
Dask cluster. The rest runs on the driver, one batch at a time and in batch order, so
the run's environment evolves exactly as in a sequential run. Which steps are pure is
known before any of them runs: no step is ever run twice.

An executor holds configuration only. Each run opens a :class:`Session` of its own
(its workers, its job), so one executor serves runs in several threads at once and a
run nested in a step of another. An error reaches the caller when its batch is due,
without waiting for later batches still in flight; their workers go once they finish.

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
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from . import rng
from .batch import SkipBatch
from .env import Environment
from .errors import FpipeError, PipelineDefinitionError
from .interpreter import compile_program, run_compiled
from .runstate import BatchContext, RunState
from .steps import Join, Rebatch, Step

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = [
    "DaskExecutor",
    "Executor",
    "Job",
    "Prepared",
    "ProcessExecutor",
    "Session",
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


class Session:
    """One run's use of an executor: ``submit`` one task per batch (a handle with
    ``result()`` and ``cancel()``), at most ``window`` ahead, then ``close``.

    Everything a run needs from its workers lives here, never in the executor, so one
    executor serves any number of runs at once, nested ones included.
    """

    window = 1

    def submit(self, task: Task) -> Any:
        raise NotImplementedError

    def close(self, wait: bool = True) -> None:
        """Stop the workers; with ``wait``, until they have stopped. Later calls do nothing.

        After an error a run closes without waiting: a batch still running finishes
        on its own, and its worker then goes.
        """
        raise NotImplementedError


class Executor:
    """Base class: where batches are prepared. It holds configuration only;
    ``open(job, run)`` starts a :class:`Session` for one run."""

    window = 1

    def open(self, job: Job, run: RunState) -> Session:
        raise NotImplementedError


class _ByConfig:
    """Equal (and hashed) by class and configuration: an executor is a value."""

    def _config(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _ByConfig)
        return self._config() == other._config()

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, self._config()))


class ThreadExecutor(_ByConfig, Executor):
    """Prepare up to ``workers`` batches ahead on threads of this process (each run
    starts threads of its own).

    >>> ThreadExecutor(3)
    ThreadExecutor(workers=3)
    """

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"ThreadExecutor needs at least one worker, got {workers}")
        self.window = workers

    @property
    def workers(self) -> int:
        return self.window

    def open(self, job: Job, run: RunState) -> Session:
        return _ThreadSession(job, run, self.window)

    def _config(self) -> tuple[Any, ...]:
        return (self.window,)

    def __repr__(self) -> str:
        return f"ThreadExecutor(workers={self.window})"


class _ThreadSession(Session):
    """A run's thread pool; the workers share the driver's run state."""

    def __init__(self, job: Job, run: RunState, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.window = workers
        self._job = job
        self._local = Prepared.of(job, run)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fpipe-prefetch")
        self._closed = False

    def submit(self, task: Task) -> Future:
        return self._pool.submit(work, self._job, task, self._local)

    def close(self, wait: bool = True) -> None:
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=wait, cancel_futures=True)


_process_job: Job | None = None


def _process_init(payload: bytes) -> None:
    global _process_job
    _process_job = pickle.loads(payload)


def _process_work(task: Task) -> tuple[Any, int, bool]:
    assert _process_job is not None
    try:
        return work(_process_job, task)
    except Exception as exc:
        raise _WorkerError.of(exc) from None


class _WorkerError(Exception):
    """An error in a worker process, with what pickling it would lose: its cause (the
    action's own exception) and the worker's traceback. The driver raises ``error``
    from ``cause``, as a thread would have."""

    def __init__(self, error: BaseException, cause: BaseException | None, trace: str) -> None:
        super().__init__(error, cause, trace)
        self.error, self.cause, self.trace = error, cause, trace

    def __reduce__(self) -> tuple[Any, ...]:
        return (_WorkerError, (self.error, self.cause, self.trace))

    @classmethod
    def of(cls, exc: BaseException) -> _WorkerError:
        import traceback

        def sendable(e: BaseException) -> BaseException:
            try:
                pickle.loads(pickle.dumps(e))
                return e
            except Exception:
                return FpipeError(f"{type(e).__qualname__}: {e}")  # could not be sent back

        trace = "".join(traceback.format_exception(exc))
        cause = exc.__cause__
        return cls(sendable(exc), None if cause is None else sendable(cause), trace)

    def reraise(self) -> NoReturn:
        note = f"Traceback in the worker process:\n{self.trace.rstrip()}"
        add_note = getattr(self.error, "add_note", None)  # Python 3.11+
        if add_note is not None:
            add_note(note)
        raise self.error from self.cause


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


class ProcessExecutor(_ByConfig, Executor):
    """Prepare batches in ``workers`` separate processes (started with ``spawn``); each
    run starts a pool of its own.

    If a worker process dies (killed, out of memory, a crash in native code), the pool
    is started again and the batches it held are computed again, up to
    ``max_restarts`` times in a run; then the run fails with an error that says so.

    >>> ProcessExecutor(2) == ProcessExecutor(2, window=4)
    True
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

    def open(self, job: Job, run: RunState) -> Session:
        return _ProcessSession(self, check_picklable(job.for_workers()))

    def _config(self) -> tuple[Any, ...]:
        return (self.workers, self.window, self.start_method, self.max_restarts)

    def __repr__(self) -> str:
        return (
            f"ProcessExecutor({self.workers}, window={self.window}, "
            f"start_method={self.start_method!r}, max_restarts={self.max_restarts})"
        )


class _ProcessSession(Session):
    """A run's process pool, started again (up to ``max_restarts`` times) when it breaks."""

    def __init__(self, executor: ProcessExecutor, payload: bytes) -> None:
        self.window = executor.window
        self.executor = executor
        self._payload = payload
        self._mutex = threading.Lock()
        self.generation = 0  # how many pools this run has started, minus one
        self._closed = False
        self.pool = self._start_pool()

    def _start_pool(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(
            self.executor.workers,
            mp_context=multiprocessing.get_context(self.executor.start_method),
            initializer=_process_init,
            initargs=(self._payload,),
        )

    def submit(self, task: Task) -> _ProcessTask:
        return _ProcessTask(self, task)

    def resubmit(self, handle: _ProcessTask, exc: BaseException) -> None:
        """A worker died: start a new pool (once per death) and send the task again."""
        with self._mutex:
            if self._closed:
                raise exc
            if handle.generation == self.generation:  # the first to see this pool broken
                if self.generation >= self.executor.max_restarts:
                    raise FpipeError(
                        f"a worker process died {self.generation + 1} times in this run "
                        f"(batch #{handle.task.iteration} was being prepared the last time): "
                        "the pure steps may crash the interpreter (native code, memory). "
                        "A common cause is a script that starts the run at import time: "
                        "worker processes import the script, so guard the run with "
                        "`if __name__ == '__main__':`. Otherwise run with executor='threads' "
                        "or prefetch=0 to see the error itself."
                    ) from exc
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = self._start_pool()
                self.generation += 1
            handle.send()

    def close(self, wait: bool = True) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            pool = self.pool
        pool.shutdown(wait=wait, cancel_futures=True)


class _ProcessTask:
    """A batch being prepared in a worker process; sent again if its pool breaks."""

    __slots__ = ("future", "generation", "session", "task")

    def __init__(self, session: _ProcessSession, task: Task) -> None:
        self.session = session
        self.task = task
        self.send()

    def send(self) -> None:
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool

        self.generation = self.session.generation
        try:
            self.future = self.session.pool.submit(_process_work, self.task)
        except BrokenProcessPool as exc:
            # a worker died before this batch was even sent: result() restarts the pool
            failed: Future[Any] = Future()
            failed.set_exception(exc)
            self.future = failed

    def result(self) -> Any:
        from concurrent.futures import CancelledError
        from concurrent.futures.process import BrokenProcessPool

        while True:
            try:
                return self.future.result()
            except _WorkerError as remote:
                remote.reraise()
            except BrokenProcessPool as exc:
                self.session.resubmit(self, exc)
            except CancelledError as exc:
                if self.generation == self.session.generation:
                    raise  # cancelled for good, not by a pool restart
                self.session.resubmit(self, exc)

    def cancel(self) -> bool:
        return self.future.cancel()


class DaskExecutor(_ByConfig, Executor):
    """Prepare batches on a Dask ``distributed`` cluster through ``client``.

    Each run scatters its job to the workers once; each batch is one task, retried
    on another worker if its worker dies.
    """

    def __init__(self, client: Any, *, window: int | None = None, retries: int = 0) -> None:
        self.client = client
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.window = window or 2 * n_workers
        self.retries = retries

    def open(self, job: Job, run: RunState) -> Session:
        job = job.for_workers()
        check_picklable(job)
        return _DaskSession(self, self.client.scatter(job, broadcast=True, hash=False))

    def _config(self) -> tuple[Any, ...]:
        return (id(self.client), self.window, self.retries)

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r}, window={self.window}, retries={self.retries})"


class _DaskSession(Session):
    """A run's job, scattered to the cluster's workers and released at the end."""

    def __init__(self, executor: DaskExecutor, job: Any) -> None:
        self.window = executor.window
        self._executor = executor
        self._job = job

    def submit(self, task: Task) -> Any:
        ex = self._executor
        return ex.client.submit(work, self._job, task, pure=False, retries=ex.retries)

    def close(self, wait: bool = True) -> None:
        job, self._job = self._job, None
        if job is not None:
            job.release()


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
