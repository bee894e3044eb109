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
the returned batch; without ``post`` the batch itself is returned. ``target`` is
``"threads"`` (the run's one bounded pool), ``"async"`` (an ``async def`` method, run
on an event loop) or ``"for"`` (a plain loop). A method with an ``rng`` parameter gets
a generator of its own per item (see :meth:`Batch.random_for`).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .actions import ActionDefinition
from .errors import FpipeError

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = ["inbatch_parallel"]

TARGETS = ("threads", "async", "for")
_STANDARD_INITS = ("indices", "items", "run_once")
_POOL_THREAD = threading.local()  # marks the run pool's threads


def _in_pool(call: Callable[..., Any], *args: Any) -> Any:
    _POOL_THREAD.active = True  # pool threads only ever run these calls
    return call(*args)


def _inline(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return call(*args)
    except Exception as exc:
        return exc


def _gather(futures: list[Future]) -> list[Any]:
    """Each item's result or exception, in item order. A KeyboardInterrupt (or another
    BaseException that is not an Exception) propagates as itself, as from a plain loop,
    and the items not started yet are cancelled."""
    results = []
    for k, future in enumerate(futures):
        exc = future.exception()
        if exc is not None and not isinstance(exc, Exception):
            for rest in futures[k + 1 :]:
                rest.cancel()
            raise exc
        results.append(future.result() if exc is None else exc)
    return results


def _items(batch: Any, init: Any, args: tuple, kwargs: dict) -> Sequence[Any] | None:
    if init == "indices":
        return batch.indices.tolist()
    if init == "items":
        return [batch[i] for i in batch.indices.tolist()]
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

        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            items = _items(self, init, args, kwargs)
            once = items is None
            todo: Sequence[Any] = [None] if items is None else items

            def call(j: int, item: Any) -> Any:
                kw = {**kwargs, "rng": self.random_for(j)} if wants_rng else kwargs
                return method(self, *args, **kw) if once else method(self, item, *args, **kw)

            results: list[Any]
            if target == "for":
                results = []
                for j, item in enumerate(todo):
                    try:
                        results.append(call(j, item))
                    except Exception as exc:
                        results.append(exc)
                        break
            elif target == "async":
                results = _run_async(
                    [functools.partial(call, j, item) for j, item in enumerate(todo)]
                )
            else:
                ctx = self._ctx
                if ctx is not None and getattr(_POOL_THREAD, "active", False):
                    # nested in-batch parallelism: waiting on the same bounded pool could
                    # deadlock, so the inner items run here, one after another
                    results = [_inline(call, j, item) for j, item in enumerate(todo)]
                elif ctx is not None:
                    pool = ctx.run.pool()
                    futures = [pool.submit(_in_pool, call, j, item) for j, item in enumerate(todo)]
                    results = _gather(futures)
                else:
                    from concurrent.futures import ThreadPoolExecutor

                    with ThreadPoolExecutor(min(8, len(todo))) as pool:
                        futures = [pool.submit(call, j, item) for j, item in enumerate(todo)]
                        results = _gather(futures)
            for j, r in enumerate(results):
                if isinstance(r, BaseException):
                    item = "the single call" if once else f"item #{j} ({todo[j]!r})"
                    raise FpipeError(
                        f"{method.__name__} failed for {item} of {len(todo)}: "
                        f"{type(r).__name__}: {r}"
                    ) from r
            if post is None:
                return self
            return _resolve(self, post)(self, results, *args, **kwargs)

        wrapper.inbatch_parallel = (init, post, target)  # type: ignore[attr-defined]
        return wrapper

    return decorator
