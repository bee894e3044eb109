"""The machinery of one run: the environment cell, lock tokens, pools and batch contexts.

None of this lives in a :class:`~fpipe.Pipeline`. A run creates a :class:`RunState`,
threads an :class:`~fpipe.env.Environment` through it and drops it at the end;
what remains is the final environment (on the pipeline ``run()`` returns) and,
for resumable iteration, an :class:`~fpipe.plan.IterState`.

Inside an effectful action, ``batch.pipeline`` is the batch's :class:`BatchContext`:
it reads and writes variables, finds models and knows the config. Inside a pure one
it is a :class:`PureView`: the config and the seed, and an error that names the action
and the declaration to add for anything else.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from . import rng
from .env import Environment, appendable, resolve_model, update_mode
from .errors import FpipeError, UndeclaredEffectError, UnknownVariableError, did_you_mean
from .models import model_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["BatchContext", "PureView", "RunState"]


def _held(lock: Any) -> bool:
    """Whether a reentrant lock is held now, by this thread or another (no public API
    says so for an RLock: ``_is_owned`` is what ``threading.Condition`` itself uses)."""
    if lock._is_owned():
        return True
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


class RunState:
    """The mutable shell of one run around its immutable environment."""

    def __init__(
        self,
        *,
        seed: int,
        env: Environment,
        batch_class: type | None,
        config: Mapping[str, Any],
        batch_size: int | None = None,
        streams: Callable[[Any, int, tuple[int, ...]], Iterator[Any]] | None = None,
    ) -> None:
        self.seed = seed
        self._streams = streams
        self.batch_class = batch_class
        self.config = config
        self.batch_size = batch_size
        self._env = env
        self._mutex = threading.RLock()
        # a run's named locks: reentrant (a locked action may call another one by hand)
        self._locks: dict[str, Any] = {}
        # Each model name resolves once per run (its descriptor never changes in a run:
        # imported and static ones are given, a dynamic one is built once): every later
        # batch finds it here without the mutex or the environment's tables.
        self._resolved: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._closers: list[Callable[[], Any]] = []
        self._closed = False
        self.resources: dict[Any, Any] = {}  # per-run helpers of steps (join/merge sources)
        # Lists this run made for `update_variable(..., mode="a"/"e")` that nobody outside
        # the run has seen yet: they grow in place, so n appends cost O(n), not O(n^2).
        # Reading the environment from outside hands them over (the next append copies).
        self._growing: dict[str, list[Any]] = {}

    # -- the environment cell ------------------------------------------------------------
    @property
    def env(self) -> Environment:
        """The environment now; from here on it never changes (it is a value)."""
        with self._mutex:
            self._growing.clear()
            return self._env

    def swap(self, fn: Callable[[Environment], Environment]) -> Environment:
        """Replace the environment by ``fn(env)`` atomically and return the new one."""
        with self._mutex:
            self._env = fn(self._env)
            return self._env

    def _declared(self, name: str, verb: str) -> None:
        if name not in self._env.variables:
            known = sorted(self._env.variables)
            raise UnknownVariableError(
                f"cannot {verb} variable {name!r}: the pipeline never declared it (known "
                f"variables: {known}).{did_you_mean(name, known)} Declare it first with "
                f".init_variable({name!r}, default)."
            )

    def set_variable(self, name: str, value: Any) -> None:
        """Set a declared variable of the run."""
        with self._mutex:
            self._declared(name, "set")
            self._env = self._env.set_variable(name, value)

    def read_variable(self, name: str) -> Any:
        """Variable ``name`` now, or a KeyError: what ``V(name)`` reads, without a lock
        unless the run grows that list in place (then it is handed over: the next append
        copies it, so the value read never changes)."""
        if name in self._growing:
            with self._mutex:
                self._growing.pop(name, None)
        return self._env.variables[name]

    def update_variable(self, name: str, value: Any, mode: str = "w") -> None:
        """Write, append to or extend a declared variable (see ``Environment``)."""
        mode = update_mode(mode)
        with self._mutex:
            self._declared(name, "update")
            if mode == "w":
                self._env = self._env.set_variable(name, value)
                return
            current = self._env.variables[name]
            own = self._growing.get(name)
            if own is None or own is not current:
                own = appendable(current)
                self._growing[name] = own
                self._env = self._env.set_variable(name, own)
            if mode == "a":
                own.append(value)
            else:
                own.extend(value)

    def get_model(self, name: str, batch: Any) -> Any:
        found = self._resolved.get(name)
        if found is not None:
            return found
        # A dynamic model is built once even if asked for concurrently; its factory may
        # set variables of the run (the lock is reentrant), and they are kept.
        with self._mutex:
            descriptor, built = resolve_model(
                self._env, name, batch, self.batch_class, self.config_for
            )
            if built:
                self._env = replace(self._env, dynamic=self._env.dynamic.set(name, descriptor))
            if descriptor is not None:
                self._resolved[name] = descriptor
            return descriptor

    def open_stream(self, source: Any, path: tuple[int, ...]) -> Iterator[Any]:
        """An endless stream of ``source``'s batches for a ``merge`` step at ``path``."""
        if self._streams is None:
            raise RuntimeError("this run cannot open source streams (no iterator gave it one)")
        stream = self._streams(source, int(rng.derive(self.seed, *path).integers(2**62)), path)
        close = getattr(stream, "close", None)
        if close is not None:
            self.on_close(close)
        return stream

    def replica(self) -> RunState:
        """A run like this one with its own copy of the environment.

        It shares the seed, config, locks, step resources and merge streams; what its
        steps do to variables and models stays in the replica. A resumed run remakes the
        batches a ``rebatch`` held with one, so their effects, which the restored
        environment already holds, are not applied twice. It closes with this run.
        """
        twin = RunState(
            seed=self.seed,
            env=self.env,
            batch_class=self.batch_class,
            config=self.config,
            batch_size=self.batch_size,
            streams=self._streams,
        )
        twin._locks = self._locks
        twin.resources = self.resources
        self.on_close(twin.close)
        return twin

    def config_for(self, name: str, own: Mapping[str, Any] | None) -> dict[str, Any]:
        return model_config(self.config, name, own)

    def lock(self, name: str) -> Any:
        found = self._locks.get(name)
        if found is not None:
            return found
        with self._mutex:
            lk = self._locks.get(name)
            if lk is None:
                lk = self._locks[name] = threading.RLock()
                self._env = self._env.with_lock(name)
            return lk

    def lock_is_held(self, name: str) -> bool:
        lk = self._locks.get(name)
        return lk is not None and _held(lk)

    # -- shared helpers -------------------------------------------------------------------
    def pool(self) -> ThreadPoolExecutor:
        """The run's one bounded thread pool for in-batch parallelism."""
        with self._mutex:
            if self._closed:
                raise FpipeError(
                    "this run has ended (an error, close() or the end of its batches): a "
                    "batch still being made cannot start in-batch work any more"
                )
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(
                    max_workers=min(32, (os.cpu_count() or 2) * 2),
                    thread_name_prefix="fpipe-inbatch",
                )
            return self._pool

    def on_close(self, fn: Callable[[], Any]) -> None:
        self._closers.append(fn)

    def close(self) -> None:
        self._closed = True
        closers, self._closers = self._closers, []
        for fn in reversed(closers):
            fn()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class BatchContext:
    """What a batch knows of its run: ``batch.pipeline`` inside an effectful action."""

    __slots__ = (
        "_rng",
        "_rng_step",
        "batch",
        "batch_in_epoch",
        "epoch",
        "iteration",
        "run",
        "step",
        "violation",
    )

    def __init__(
        self, run: RunState, epoch: int, iteration: int, batch_in_epoch: int | None = None
    ) -> None:
        self.run = run
        self.violation: UndeclaredEffectError | None = None  # see PureView
        self.epoch = epoch
        self.iteration = iteration
        # the batch's number in its epoch (``I("batch")``), where the iterator says it
        self.batch_in_epoch = batch_in_epoch
        self.step: Any = None  # the CompiledStep now running
        self.batch: Any = None  # the input of the step now running (dynamic models see it)
        self._rng: np.random.Generator | None = None
        self._rng_step: Any = None

    @property
    def path(self) -> tuple[int, ...]:
        """The position of the running step in the pipeline (``()`` outside a step)."""
        step = self.step
        return step.path if step is not None else ()

    def view(self) -> BatchContext | PureView:
        """What ``batch.pipeline`` gives the running step (pure steps: a PureView)."""
        step = self.step
        if step is not None and not step.effectful:
            return PureView(self)
        return self

    # -- randomness -----------------------------------------------------------------------
    def random(self) -> np.random.Generator:
        step = self.step
        if self._rng_step is not step or self._rng is None:
            self._rng = rng.derive(
                self.run.seed, rng.PURPOSE_BATCH, self.epoch, self.iteration, *self.path
            )
            self._rng_step = step
        return self._rng

    def item_random(self, item: int) -> np.random.Generator:
        return rng.derive(
            self.run.seed, rng.PURPOSE_ITEM, self.epoch, self.iteration, *self.path, item
        )

    def coin(self, path: tuple[int, ...]) -> float:
        """A uniform draw in [0, 1) for a ``p @ prob`` step at ``path``."""
        gen = rng.derive(self.run.seed, rng.PURPOSE_MAYBE, self.epoch, self.iteration, *path)
        return float(gen.random())

    # -- what actions call through batch.pipeline -----------------------------------------
    @property
    def config(self) -> Mapping[str, Any]:
        return self.run.config

    @property
    def seed(self) -> int:
        return self.run.seed

    def get_variable(self, name: str, *default: Any) -> Any:
        return self.run.env.get_variable(name, *default)

    def has_variable(self, name: str) -> bool:
        return name in self.run.env.variables

    def set_variable(self, name: str, value: Any) -> None:
        self.run.set_variable(name, value)

    assign_variable = set_variable

    def update_variable(self, name: str, value: Any, mode: str = "w") -> None:
        self.run.update_variable(name, value, mode)

    def get_model_by_name(self, name: str, batch: Any = None) -> Any:
        return self.run.get_model(name, self.batch if batch is None else batch)

    @property
    def models(self) -> dict[str, Any]:
        return self.run.env.models

    def lock(self, name: str) -> Any:
        """The run's lock ``name`` (``with batch.pipeline.lock("log"): ...``)."""
        return self.run.lock(name)


class PureView:
    """``batch.pipeline`` inside a pure step: the config and seed, nothing of the run's
    environment. Reaching for variables, models or locks stops the run with an error
    that names the step and shows the declaration that makes it effectful."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: BatchContext) -> None:
        self._ctx = ctx

    @property
    def config(self) -> Mapping[str, Any]:
        return self._ctx.run.config

    @property
    def seed(self) -> int:
        return self._ctx.run.seed

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not hasattr(BatchContext, name):
            raise AttributeError(f"batch.pipeline has no attribute {name!r}")
        step = self._ctx.step
        label = step.label if step is not None else "?"
        action = label.split("(", 1)[0]
        if action == "apply":
            fix = "declare the function: `.apply(action(effects=True)(fn), ...)`"
        else:
            fix = f"declare it with `@action(effects=True)` above `def {action}(self, ...)`"
        error = UndeclaredEffectError(
            f"step `{label}` is pure, so it may run ahead of time on a worker, but it used "
            f"batch.pipeline.{name}: it reaches the run's environment (variables, models, "
            f"locks). To run it on the driver, once per batch and in batch order, {fix} "
            "(if it says effects=False, make that effects=True)."
        )
        self._ctx.violation = error  # raised after the step even if the action catches it
        raise error
