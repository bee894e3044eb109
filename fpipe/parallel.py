"""``@inbatch_parallel``: run a method once per item of a batch and assemble the results.

>>> import numpy as np
>>> from fpipe import Batch, action, inbatch_parallel
>>> class Squares(Batch):
...     @action
...     @inbatch_parallel(init="indices", post="_collect", target="threads")
...     def square(self, item_id):
...         return item_id * item_id
...     def _collect(self, results):
...         return self.replace(data=np.array(results))
>>> Squares(np.arange(4), preloaded=np.zeros(4)).square().data
array([0, 1, 4, 9])

``init`` says what to call the method for: ``"indices"`` (each item id), ``"items"``
(each item view), ``"run_once"`` (one call, no item), the name of a batch method or
a function ``init(batch, *args, **kwargs)`` returning a list. ``post`` (a method name
or a function ``post(batch, results, *args, **kwargs)``) turns the list of results into
the returned batch; without ``post`` the batch itself is returned. A method with an
``rng`` parameter gets a generator of its own per item (see :meth:`Batch.random_for`).

``target`` says where the items run:

- ``"threads"``: on the run's one bounded thread pool, the calling thread taking items
  too: items run on all the pool's threads at once (when they are free) and on the
  caller's. No item starts after one has failed. It pays when items wait (I/O) or release the GIL
  for long (big numpy calls, decoders); on items that hold the GIL (Python code, numpy
  calls on small arrays) the threads take turns and their hand-offs make it slower than
  a loop (1.3-2.5x in ``benchmarks/bench_inbatch.py``).
- ``"auto"``: a plain loop or ``"threads"``, whichever it measures to be faster, for
  each method in each run. After a few items that start the pool's threads, the run's
  first batches alternate windows of items (about a millisecond each) run on the
  calling thread and on the pool. A window where the pool
  is clearly slower (an item takes 1.25 times as long or more) settles it for the loop;
  else, after five pairs, the pool is kept if the median pair gave it at most 0.8 of the
  time, else the loop. So GIL-bound items end up in a loop, and items that wait, or
  release the GIL on a machine with cores to spare, on threads. Outside a run (a batch
  called by hand) it is a plain loop. Items must not wait for one another (use
  ``"threads"`` for that).
- ``"for"``: a plain loop on the calling thread, stopping at the first failing item.
- ``"async"``: an ``async def`` method, its items gathered on an event loop.

Results are the same whatever the target (each item's ``rng`` depends on its position
only); with ``"threads"`` or ``"auto"``, what items do to the run's variables may happen
in any order.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .actions import ActionDefinition
from .errors import FpipeError

if TYPE_CHECKING:
    from concurrent.futures import Executor

__all__ = ["inbatch_parallel"]

TARGETS = ("threads", "async", "for", "auto")
_STANDARD_INITS = ("indices", "items", "run_once")
_POOL_THREAD = threading.local()  # marks the run pool's threads

# target="auto": first one item per pool thread on the pool, untimed, to start the
# threads; then pairs of windows: items on the calling thread for at least _WINDOW
# seconds (or half the batch's items left, if less), then as many on the pool (at least
# one per thread). A pair where an item takes _LOSS times its time on the calling thread
# or more on the pool decides for the loop at once (items that hold the GIL: 1.5-5x in
# benchmarks/bench_inbatch.py); else, after _PROBES pairs, the pool stays if the median
# pair gives it at most _GAIN of the time (items that wait, or that release the GIL:
# 0.4-0.9 on 2 cores), else the loop.
_WINDOW = 0.001
_LOSS = 1.25
_PROBES = 5
_GAIN = 0.8

Call = Callable[[int, Any], Any]  # (position, item) -> the method's result
Failure = tuple[int, Exception]  # an item's position and its exception


def _in_pool(call: Callable[..., Any], *args: Any) -> Any:
    _POOL_THREAD.active = True  # pool threads only ever run these calls
    return call(*args)


def _items(batch: Any, init: Any, args: tuple, kwargs: dict) -> Sequence[Any] | None:
    if init == "indices":
        return batch.indices.tolist()
    if init == "items":
        # by position: no id lookup, and ids repeated in a batch are no trouble
        make = type(batch)._item_type
        return [make(batch, pos) for pos in range(len(batch))]
    if init == "run_once":
        return None
    fn = getattr(batch, init) if isinstance(init, str) else functools.partial(init, batch)
    items = fn(*args, **kwargs)
    if items is None or isinstance(items, (str, bytes)):
        raise TypeError(
            f"inbatch_parallel init {init!r} must return a list of items, got {items!r}"
        )
    return list(items)


def _resolve(batch: Any, fn: Any) -> Callable[..., Any]:
    if isinstance(fn, str):
        found = getattr(type(batch), fn, None)
        if found is None:
            raise AttributeError(
                f"inbatch_parallel post {fn!r} is not a method of {type(batch).__name__}"
            )
        fn = found.fn if isinstance(found, ActionDefinition) else found
    return fn


def _caller(
    method: Callable[..., Any], batch: Any, once: bool, wants_rng: bool, args: tuple, kwargs: dict
) -> Call:
    """The call for one item: the method with the item (unless ``once``), the arguments and,
    if it takes one, the item's own ``rng``."""
    if wants_rng:

        def call(j: int, item: Any) -> Any:
            kw = {**kwargs, "rng": batch.random_for(j)}
            return method(batch, *args, **kw) if once else method(batch, item, *args, **kw)

    elif once:

        def call(j: int, item: Any) -> Any:
            return method(batch, *args, **kwargs)

    else:

        def call(j: int, item: Any) -> Any:
            return method(batch, item, *args, **kwargs)

    return call


def _loop(call: Call, todo: Sequence[Any], lo: int, hi: int, out: list[Any]) -> Failure | None:
    """Append the results of items ``lo:hi`` to ``out``, one after another on this thread;
    stop at the first failing item."""
    for j in range(lo, hi):
        try:
            out.append(call(j, todo[j]))
        except Exception as exc:
            return j, exc
    return None


def _pooled(
    call: Call, todo: Sequence[Any], lo: int, hi: int, pool: Executor, helpers: int
) -> tuple[list[Any], Failure | None]:
    """The results of items ``lo:hi``, run by this thread and up to ``helpers`` pool threads.

    Each thread takes the next item until none is left or one has failed. This thread
    waits only for the helpers that started (the others are cancelled), so a bounded pool
    busy with other batches never leaves it waiting. A ``KeyboardInterrupt`` (or another
    ``BaseException`` that is not an ``Exception``) in an item is raised as itself.
    """
    from concurrent.futures import wait

    results: list[Any] = [None] * (hi - lo)
    claims = iter(range(lo, hi))
    claim = threading.Lock()
    failures: list[tuple[int, BaseException]] = []
    stop = [False]  # set once an item has failed or this thread is leaving

    def work() -> None:
        while not stop[0]:
            with claim:
                j = next(claims, hi)
            if j == hi:
                return
            try:
                results[j - lo] = call(j, todo[j])
            except BaseException as exc:  # reported below, by the calling thread
                failures.append((j, exc))
                stop[0] = True

    futures = [pool.submit(_in_pool, work) for _ in range(min(helpers, hi - lo - 1))]
    try:
        work()
    finally:
        stop[0] = True
        wait([f for f in futures if not f.cancel()])
    failures.sort(key=lambda failure: failure[0])
    for _, exc in failures:
        if not isinstance(exc, Exception):
            raise exc
    for j, exc in failures[:1]:
        if isinstance(exc, Exception):  # always (see above): for the type checker
            return results, (j, exc)
    return results, None


def _helpers(pool: Executor) -> int:
    """How many threads the pool has (``ThreadPoolExecutor`` keeps it in ``_max_workers``)."""
    return max(1, getattr(pool, "_max_workers", 1))


def _run_pool(call: Call, todo: Sequence[Any], ctx: Any) -> tuple[list[Any], Failure | None]:
    """``target="threads"``: the items on the run's pool (a pool of its own outside a run)."""
    if ctx is None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, min(8, len(todo)))) as pool:
            return _pooled(call, todo, 0, len(todo), pool, _helpers(pool))
    pool = ctx.run.pool()
    return _pooled(call, todo, 0, len(todo), pool, _helpers(pool))


class _Probe:
    """What ``target="auto"`` has measured of one method in one run, and its choice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.warm = False  # whether the pool's threads have been started on a few items
        self.ratios: list[float] = []  # an item's time on the pool / on the calling thread
        self.target: str | None = None  # "for" or "threads" once decided

    def add(self, ratio: float) -> None:
        """Count a pair of windows."""
        with self._lock:
            if self.target is not None:
                return
            self.ratios.append(ratio)
            if ratio >= _LOSS:
                self.target = "for"
            elif len(self.ratios) == _PROBES:
                middle = sorted(self.ratios)[_PROBES // 2]
                self.target = "threads" if middle <= _GAIN else "for"


def _run_auto(
    call: Call, todo: Sequence[Any], ctx: Any, key: Any
) -> tuple[list[Any], Failure | None]:
    """``target="auto"``: a loop or the pool, as measured for this method in this run."""
    run = ctx.run
    probe = run.resources.get(key) or run.resources.setdefault(key, _Probe())
    results: list[Any] = []
    pos, n = 0, len(todo)
    while pos < n and probe.target is None:
        pool = run.pool()
        helpers = _helpers(pool)
        if not probe.warm:
            # One item per thread, untimed: starting the pool's threads is no fair test.
            stop = min(n, pos + helpers + 1)
            part, failure = _pooled(call, todo, pos, stop, pool, helpers)
            results += part
            if failure is not None:
                return results, failure
            probe.warm, pos = True, stop
            continue
        # A window of items on this thread: about _WINDOW seconds, at most half of those left
        first, half = pos, pos + (n - pos) // 2
        start = time.perf_counter()
        while True:
            failure = _loop(call, todo, pos, pos + 1, results)
            pos += 1
            if failure is not None:
                return results, failure
            if pos >= half or time.perf_counter() - start >= _WINDOW:
                break
        here = (time.perf_counter() - start) / (pos - first)
        # ... then as many items on the pool, and at least one for each of its threads.
        stop = min(n, pos + max(pos - first, helpers + 1))
        if stop - pos < 2:
            continue  # too few items left to compare: on with this thread
        start = time.perf_counter()
        part, failure = _pooled(call, todo, pos, stop, pool, helpers)
        results += part
        if failure is not None:
            return results, failure
        probe.add((time.perf_counter() - start) / (stop - pos) / here)
        pos = stop
    if pos < n and probe.target == "threads":
        pool = run.pool()
        part, failure = _pooled(call, todo, pos, n, pool, _helpers(pool))
        return results + part, failure
    return results, _loop(call, todo, pos, n, results)


def _run_async(calls: list[Callable[[], Any]]) -> list[Any]:
    import asyncio  # only async in-batch parallelism needs it

    async def gather() -> list[Any]:
        return await asyncio.gather(*(c() for c in calls), return_exceptions=True)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(gather())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # this thread already runs a loop
        return pool.submit(asyncio.run, gather()).result()


def _gather_async(call: Call, todo: Sequence[Any]) -> tuple[list[Any], Failure | None]:
    results = _run_async([functools.partial(call, j, item) for j, item in enumerate(todo)])
    for j, r in enumerate(results):
        if isinstance(r, BaseException):
            if not isinstance(r, Exception):
                raise r
            return results, (j, r)
    return results, None


def inbatch_parallel(init: Any, post: Any = None, target: str = "threads") -> Callable[..., Any]:
    """Make a per-item method run over the whole batch (see the module docs)."""
    if target not in TARGETS:
        raise ValueError(
            f"unknown inbatch_parallel target {target!r}; use one of {', '.join(TARGETS)}"
        )
    if isinstance(init, str) and init not in _STANDARD_INITS and not init.isidentifier():
        raise ValueError(f"init must be one of {_STANDARD_INITS}, a method name or a function")

    def decorator(method: Callable[..., Any]) -> Callable[..., Any]:
        is_async = inspect.iscoroutinefunction(method)
        if target == "async" and not is_async:
            raise TypeError(f"target='async' needs an `async def` method; {method.__name__} is not")
        if is_async and target != "async":
            raise TypeError(f"{method.__name__} is `async def`: use target='async'")
        wants_rng = "rng" in inspect.signature(method).parameters
        key = ("inbatch_parallel", method)  # where target="auto" keeps its probe in a run

        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            items = _items(self, init, args, kwargs)
            todo: Sequence[Any] = [None] if items is None else items
            call = _caller(method, self, items is None, wants_rng, args, kwargs)
            ctx = self._ctx
            where = target
            if where in ("threads", "auto") and getattr(_POOL_THREAD, "active", False):
                # nested in-batch parallelism: a pool thread runs the inner items itself,
                # one after another, rather than ask the bounded pool it is part of
                where = "for"
            results: list[Any] = []
            if where == "for" or (where == "auto" and ctx is None):
                failure = _loop(call, todo, 0, len(todo), results)
            elif where == "auto":
                results, failure = _run_auto(call, todo, ctx, key)
            elif where == "async":
                results, failure = _gather_async(call, todo)
            else:
                results, failure = _run_pool(call, todo, ctx)
            if failure is not None:
                j, exc = failure
                item = "the single call" if items is None else f"item #{j} ({todo[j]!r})"
                raise FpipeError(
                    f"{method.__name__} failed for {item} of {len(todo)}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if post is None:
                return self
            return _resolve(self, post)(self, results, *args, **kwargs)

        wrapper.inbatch_parallel = (init, post, target)  # type: ignore[attr-defined]
        return wrapper

    return decorator
