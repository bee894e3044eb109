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

``prefetch=N`` keeps N batches in flight on at most as many threads as the process may
use cores: more threads than cores only fight over the cores and the GIL. Threads hand
batches to the driver in *chunks* of consecutive batches when batches are cheap to make
(a chunk carries about half a millisecond of a worker's CPU time), so a fast batch does
not pay a thread hand-off of its own; a batch that takes longer travels alone. A run
whose first step needs the driver anyway (a model, a lock, a variable) and whose batches
hold under ``INLINE_BYTES`` of preloaded rows gives a worker nothing worth handing over:
it makes its batches on the driver, as a sequential run does.

>>> resolve_executor(None, prefetch=0) is None   # sequential: everything on the driver
True
>>> resolve_executor(None, prefetch=1)
ThreadExecutor(workers=1)
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import numpy as np

from . import rng
from .batch import SkipBatch
from .env import Environment
from .errors import FpipeError, PipelineDefinitionError
from .interpreter import compile_program, run_compiled
from .profile import Recorder
from .runstate import BatchContext, RunState
from .steps import Join, Rebatch, Step

if TYPE_CHECKING:
    from concurrent.futures import Future

K = TypeVar("K")

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
    "usable_cores",
    "work",
    "work_timed",
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
    # a profiled run: the Recorder its worker threads time the steps into (it pickles
    # empty: worker processes send their timings back with each batch, see work_timed)
    profile: Recorder | None = field(default=None, compare=False)

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
    batch_in_epoch: int | None = None


@dataclass(frozen=True)
class Prepared:
    """A job made ready in one process: its compiled first stage, how many of its steps
    are pure (they run here) and the run state they see."""

    stage: tuple[Any, ...]
    prefix: int
    run: RunState
    recorder: Recorder | None = None  # a profiled run's: times every step of ``stage``

    @classmethod
    def of(cls, job: Job, run: RunState, recorder: Recorder | None = None) -> Prepared:
        wrap = None if recorder is None else recorder.wrap
        program = compile_program(job.steps, job.batch_class, wrap)
        return cls(program.stages[0], program.pure_prefix, run, recorder)


# Per worker process: job token -> its Prepared. A worker keeps one RunState per run,
# so in-batch parallelism there uses one bounded pool.
_prepared: OrderedDict[str, Prepared] = OrderedDict()


def _prepare(job: Job) -> tuple[Prepared, bool]:
    """The job made ready in this process, and whether that happened just now."""
    prepared = _prepared.get(job.token)
    if prepared is not None:
        return prepared, False
    run = RunState(seed=job.seed, env=Environment(), batch_class=job.batch_class, config=job.config)
    recorder = None if job.profile is None else Recorder()  # this process's own
    prepared = _prepared[job.token] = Prepared.of(job, run, recorder)
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
    ctx = BatchContext(local.run, task.epoch, task.iteration, task.batch_in_epoch)
    mark = rng.global_mark() if first else None
    try:
        # the batch is handed over, not kept here: its rows go once the steps replace them
        out = run_compiled(
            local.stage, job.dataset._batch_at(task.positions, ctx), ctx, 0, local.prefix
        )
        # the batch leaves fully made: gathering a component does not fall to the driver
        result: tuple[Any, int] = (out._with_ctx(None)._gather_all(), local.prefix)
    except SkipBatch:
        result = (None, -1)
    return (*result, mark is not None and rng.global_moved(mark))


def work_timed(job: Job, task: Task) -> tuple[Any, int, bool, dict[tuple[int, ...], list[float]]]:
    """:func:`work` for a profiled run in a worker process or on Dask: its result and
    the durations of the steps this worker timed since its last batch (the driver adds
    them to the run's profile)."""
    out = work(job, task)
    recorder = _prepared[job.token].recorder
    return (*out, recorder.drain() if recorder is not None else {})


class Session:
    """One run's use of an executor: ``stream`` the run's tasks through it, then
    ``close``. By default ``stream`` calls ``submit`` once per task (a handle with
    ``result()`` and ``cancel()``), at most ``window`` ahead; a session may stream
    otherwise (threads hand over chunks of tasks).

    Everything a run needs from its workers lives here, never in the executor, so one
    executor serves any number of runs at once, nested ones included.
    """

    window = 1
    # True: the run has nothing to hand a worker and makes its batches on the driver, as
    # a sequential run does (the iterator then runs it as one)
    inline = False
    # where the pure steps run, as a profile names it; None: somewhere that does not
    # report their timings (a profile says "not measured")
    where: str | None = None

    def submit(self, task: Task) -> Any:
        raise NotImplementedError

    def stream(self, tasks: Iterable[tuple[K, Task]]) -> Iterator[tuple[K, tuple[Any, int, bool]]]:
        """Each task's key and the result of :func:`work` on it, in the tasks' order,
        with ``window`` tasks submitted ahead of the one due. A task's error is raised
        when its result is due; closing the stream cancels the tasks still pending."""
        pending: deque[tuple[K, Any]] = deque()
        try:
            for key, task in tasks:
                pending.append((key, self.submit(task)))
                if len(pending) > self.window:
                    due, handle = pending.popleft()
                    yield due, handle.result()
            while pending:
                due, handle = pending.popleft()
                yield due, handle.result()
        finally:
            for _, handle in pending:
                handle.cancel()

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
        """Start the :class:`Session` that computes ``job``'s batches for one run.

        A run calls this itself; a subclass implements it. The executor keeps nothing
        of the run, so one executor serves any number of runs at once.
        """
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


def usable_cores() -> int:
    """How many cores this process may run on (its CPU affinity, where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ThreadExecutor(_ByConfig, Executor):
    """Prepare batches on ``workers`` threads of this process, ``window`` hand-offs
    ahead of the driver (default: ``workers``); each run starts threads of its own.

    ``prefetch=N`` is ``ThreadExecutor(min(N, cores), window=N)``. More threads than
    cores pay when the pure steps mostly wait (files, network): ask for them here.

    >>> ThreadExecutor(3)
    ThreadExecutor(workers=3)
    >>> ThreadExecutor(2, window=4)
    ThreadExecutor(workers=2, window=4)
    """

    def __init__(self, workers: int = 2, *, window: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"ThreadExecutor needs at least one worker, got {workers}")
        if window is not None and window < 1:
            raise ValueError(f"ThreadExecutor needs a window of at least 1, got {window}")
        self.workers = workers
        self.window = window or workers

    def open(self, job: Job, run: RunState) -> Session:
        """Start this run's worker threads (a run calls it; see :meth:`Executor.open`).

        A run with no pure step to hand a worker, over small rows, runs on the driver.
        """
        prepared = Prepared.of(job, run, job.profile)
        if prepared.prefix == 0 and small_batches(job.dataset, run.batch_size):
            return _DriverSession(max(self.window, driver_ahead(job.dataset, run.batch_size)))
        return _ThreadSession(job, prepared, self.workers, self.window)

    def _config(self) -> tuple[Any, ...]:
        return (self.workers, self.window)

    def __repr__(self) -> str:
        window = f", window={self.window}" if self.window != self.workers else ""
        return f"ThreadExecutor(workers={self.workers}{window})"


# A run whose pure prefix is empty (its first step needs the driver: a model, a lock, a
# variable) leaves its workers nothing to do but copy each batch's preloaded rows. Under
# this many bytes a batch, that copy costs less than what a thread beside the driver
# does to it (a hand-off, turns at the GIL), and the run makes its batches on the driver,
# several in a row: between two steps of a model (a Keras step evicts the driver's Python
# from the CPU caches) making one batch costs several times what it costs in a row.
INLINE_BYTES = 1 << 20


def driver_ahead(dataset: Any, batch_size: int | None) -> int:
    """How many batches the driver of a prefetch run with nothing for a worker makes in
    a row before it runs their steps: as many as hold INLINE_BYTES of preloaded rows, at
    most MAX_CHUNK.

    Making a batch between two heavy steps (a Keras step leaves TensorFlow's data in the
    CPU caches) costs several times what it costs in a row; the steps still run one
    batch at a time, in batch order.
    """
    batch_bytes = _row_bytes(dataset) * (batch_size or 1)
    return max(1, min(MAX_CHUNK, INLINE_BYTES // max(batch_bytes, 1)))


def small_batches(dataset: Any, batch_size: int | None) -> bool:
    """Whether a batch's preloaded rows take under INLINE_BYTES."""
    return _row_bytes(dataset) * (batch_size or 1) < INLINE_BYTES


def _row_bytes(dataset: Any) -> int:
    """The bytes of one item's preloaded rows (0: nothing preloaded)."""
    preloaded = getattr(dataset, "preloaded", None) or {}
    return sum(a.nbytes // max(len(a), 1) for a in preloaded.values())


class _DriverSession(Session):
    """A thread executor's run with nothing for a worker to do (``inline``): the iterator
    makes the batches on the driver, ``window`` at a time, and runs their steps there in
    batch order. Nothing is ever streamed through it, and no thread starts."""

    inline = True
    where = "driver"

    def __init__(self, window: int) -> None:
        self.window = window

    def close(self, wait: bool = True) -> None:
        pass


# A chunk of cheap batches carries about CHUNK_SECONDS of a worker's CPU time: a thread
# hand-off costs tens of microseconds, and far more when it lets a worker grab the GIL
# in the middle of the driver's work (a thread that wants the GIL back may wait out the
# switch interval). CPU time, not wall time: a worker's wall time counts its waits for
# the GIL, the highest exactly when hand-offs cost most; and what a batch holds took CPU
# time to write, so a chunk also stays small in bytes. A chunk also spans at most
# CHUNK_WALL_SECONDS of the worker's wall time (batches that wait on I/O come soon) and
# MAX_CHUNK batches, and grows at most twofold from one to the next.
CHUNK_SECONDS = 0.0005
CHUNK_WALL_SECONDS = 0.01
MAX_CHUNK = 64


class _Chunk:
    """Consecutive tasks handed to one worker thread at once, and what became of them."""

    __slots__ = ("_done", "cancelled", "cpu", "error", "items", "results", "wall")

    def __init__(self, items: list[tuple[Any, Task]]) -> None:
        self.items = items
        self.results: list[tuple[Any, int, bool]] = []
        self.error: BaseException | None = None
        self.cpu = self.wall = 0.0  # the worker's CPU and wall time on the chunk
        self.cancelled = False
        self._done = threading.Lock()  # held until the worker is done with the chunk
        self._done.acquire()

    def run(self, job: Job, local: Prepared, session: _ThreadSession) -> None:
        """On a worker: prepare the batches in order, up to the first error."""
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            for _, task in self.items:
                if self.cancelled or session.closed:
                    break
                self.results.append(work(job, task, local))
        except BaseException as exc:  # raised on the driver when its batch is due
            self.error = exc
        finally:
            self.cpu = time.thread_time() - cpu
            self.wall = time.perf_counter() - wall
            self._done.release()

    def next_size(self, size: int) -> int:
        """The size of the chunks after this one, which held ``size`` at most."""
        n = len(self.results)
        if not n:
            return size
        fits = min(CHUNK_SECONDS * n / max(self.cpu, 1e-9), CHUNK_WALL_SECONDS * n / self.wall)
        return max(1, min(int(fits), 2 * size, MAX_CHUNK))

    def outputs(self) -> Iterator[tuple[Any, tuple[Any, int, bool]]]:
        """On the driver: wait for the worker, then each batch's key and result."""
        self._done.acquire()
        for (key, _), result in zip(self.items, self.results, strict=False):
            yield key, result
        if self.error is not None:
            error, self.error = self.error, None  # the chunk does not keep the traceback
            raise error


class _ThreadSession(Session):
    """A run's worker threads; they share the driver's run state.

    The driver cuts the tasks into chunks (one batch at first), keeps ``window`` chunks
    queued ahead of the one due, and sizes each new chunk from the worker's time per batch
    in the chunk just collected (see ``CHUNK_SECONDS``). A batch is the same whichever
    chunk carries it (it depends on its position only), so the outputs never depend on
    the timing.
    """

    where = "threads"

    def __init__(self, job: Job, prepared: Prepared, workers: int, window: int) -> None:
        self.window = window
        self.workers = workers
        self._job = job
        self._local = prepared
        self._todo: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.closed = False

    def _serve(self) -> None:
        todo, job, local = self._todo, self._job, self._local
        while (chunk := todo.get()) is not None:
            chunk.run(job, local, self)

    def _hand(self, chunk: _Chunk) -> None:
        self._todo.put(chunk)
        if len(self._threads) < self.workers:  # threads start as the first chunks come
            name = f"fpipe-prefetch_{len(self._threads)}"
            thread = threading.Thread(target=self._serve, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def submit(self, task: Task) -> Any:
        raise NotImplementedError("a thread session hands out chunks: use stream()")

    def stream(self, tasks: Iterable[tuple[K, Task]]) -> Iterator[tuple[K, tuple[Any, int, bool]]]:
        source = iter(tasks)
        pending: deque[_Chunk] = deque()
        size, more = 1, True
        try:
            while True:
                while more and len(pending) <= self.window:  # the one due and `window` more
                    items = list(islice(source, size))
                    more = len(items) == size
                    if items:
                        pending.append(_Chunk(items))
                        self._hand(pending[-1])
                if not pending:
                    return
                chunk = pending.popleft()
                yield from chunk.outputs()
                size = chunk.next_size(size)
        finally:
            for chunk in pending:
                chunk.cancelled = True

    def close(self, wait: bool = True) -> None:
        if self.closed:
            return
        self.closed = True  # a worker leaves the chunks still queued undone
        for _ in self._threads:
            self._todo.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


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


def _process_work_timed(task: Task) -> tuple[Any, ...]:
    assert _process_job is not None
    try:
        return work_timed(_process_job, task)
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
        """Start this run's worker processes, after checking that the job pickles
        (a run calls it; see :meth:`Executor.open`)."""
        return _ProcessSession(self, check_picklable(job.for_workers()), job.profile is not None)

    def _config(self) -> tuple[Any, ...]:
        return (self.workers, self.window, self.start_method, self.max_restarts)

    def __repr__(self) -> str:
        return (
            f"ProcessExecutor({self.workers}, window={self.window}, "
            f"start_method={self.start_method!r}, max_restarts={self.max_restarts})"
        )


class _ProcessSession(Session):
    """A run's process pool, started again (up to ``max_restarts`` times) when it breaks."""

    where = "processes"

    def __init__(self, executor: ProcessExecutor, payload: bytes, timed: bool = False) -> None:
        self.window = executor.window
        self.executor = executor
        self._payload = payload
        # a profiled run's workers send each batch's step timings back with it
        self.work = _process_work_timed if timed else _process_work
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
            self.future = self.session.pool.submit(self.session.work, self.task)
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
        """Scatter the job to the cluster's workers once, for this run's tasks (a run
        calls it; see :meth:`Executor.open`)."""
        job = job.for_workers()
        check_picklable(job)
        scattered = self.client.scatter(job, broadcast=True, hash=False)
        return _DaskSession(self, scattered, job.profile is not None)

    def _config(self) -> tuple[Any, ...]:
        return (id(self.client), self.window, self.retries)

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r}, window={self.window}, retries={self.retries})"


class _DaskSession(Session):
    """A run's job, scattered to the cluster's workers and released at the end."""

    where = "dask"

    def __init__(self, executor: DaskExecutor, job: Any, timed: bool = False) -> None:
        self.window = executor.window
        self._executor = executor
        self._job = job
        self._work = work_timed if timed else work  # timed: a profiled run's

    def submit(self, task: Task) -> Any:
        ex = self._executor
        return ex.client.submit(self._work, self._job, task, pure=False, retries=ex.retries)

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
        return ThreadExecutor(min(window, usable_cores()), window=window) if window else None
    if executor == "processes":
        return ProcessExecutor(workers=2, window=window)
    if _is_dask_client(executor):
        return DaskExecutor(executor, window=window)
    if executor == "sequential":
        return None
    choices: Sequence[str] = ("'threads'", "'processes'", "'sequential'", "a distributed.Client")
    raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(choices)}")
