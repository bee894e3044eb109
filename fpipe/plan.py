"""Batching plans: which positions go in which batch, reproducibly and resumably.

A :class:`BatchPlan` is a value describing how ``n_items`` positions are cut into
batches over epochs. It stores a resolved integer seed, so the same plan always yields
the same batches. :meth:`BatchPlan.iterate` yields, with each batch, the
:class:`IterState` reached after it; iteration can restart from any such state.

>>> plan = BatchPlan.make(5, 2, shuffle=False)
>>> [pos.tolist() for _, pos in plan.iterate()]
[[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import rng
from .errors import ResumeError
from .state import IterState

__all__ = ["BatchPlan", "IterState"]

_CACHE_ATTRS = ("_order_cache", "_fingerprint")


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _as_int(x: Any) -> Any:
    return int(x) if _is_int(x) else x  # bad values are reported by __post_init__


def _positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not _is_int(value):
        expected = "a positive int or None" if allow_none else "a positive int"
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if value <= 0:  # type: ignore[operator]
        raise ValueError(f"{name} must be positive, got {value}")


def _callable_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{name}"


@dataclass(frozen=True)
class BatchPlan:
    """How ``n_items`` positions are cut into batches over epochs.

    Build it with :meth:`make`, which validates the arguments and resolves the seed.
    ``shuffle`` is ``False`` (index order), ``True`` or an int seed (a fresh permutation
    per epoch), or a callable ``f(positions, generator) -> permutation of positions``.
    With ``n_iters`` set, iteration runs across epochs until that many batches were
    produced and ``n_epochs`` is ignored; with neither set it never ends.

    >>> plan = BatchPlan.make(6, 4, shuffle=5, n_epochs=2, drop_last=True)
    >>> plan.batches_per_epoch
    1
    >>> [len(pos) for _, pos in plan.iterate()]
    [4, 4]
    """

    n_items: int
    batch_size: int
    shuffle: object
    n_epochs: int | None
    n_iters: int | None
    drop_last: bool
    seed: int
    extra_fingerprint: str = ""

    def __post_init__(self) -> None:
        _positive_int("n_items", self.n_items)
        _positive_int("batch_size", self.batch_size)
        if self.batch_size > self.n_items:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the dataset ({self.n_items} "
                f"items); use a batch_size <= {self.n_items}"
            )
        _positive_int("n_epochs", self.n_epochs, allow_none=True)
        _positive_int("n_iters", self.n_iters, allow_none=True)
        if not isinstance(self.drop_last, (bool, np.bool_)):
            raise TypeError(f"drop_last must be a bool, got {self.drop_last!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise TypeError(
                f"BatchPlan.seed must be a non-negative int, got {self.seed!r}; "
                "use BatchPlan.make(...) to resolve a Generator or None"
            )
        if not isinstance(self.extra_fingerprint, str):
            raise TypeError(f"extra_fingerprint must be a str, got {self.extra_fingerprint!r}")
        sh = self.shuffle
        if _is_int(sh):
            if sh != self.seed:
                raise ValueError(
                    f"shuffle={sh} is the seed, but seed={self.seed} differs; give it once"
                )
        elif not (isinstance(sh, (bool, np.bool_, np.random.Generator)) or callable(sh)):
            raise TypeError(
                "shuffle must be a bool, an int seed, a numpy Generator or a callable "
                f"f(positions, generator), not {type(sh).__name__}"
            )
        object.__setattr__(self, "_order_cache", None)
        object.__setattr__(self, "_fingerprint", None)

    @classmethod
    def make(
        cls,
        n_items: int,
        batch_size: int,
        shuffle: object = False,
        n_epochs: int | None = 1,
        n_iters: int | None = None,
        drop_last: bool = False,
        seed: int | np.random.Generator | None = None,
        extra_fingerprint: str = "",
    ) -> BatchPlan:
        """Validate the arguments and resolve the seed into a reproducible plan.

        ``shuffle`` and ``seed`` are resolved by :func:`fpipe.rng.resolve_shuffle`: the seed
        is ``shuffle`` itself when that is an int (``seed`` may then only repeat it), one
        draw from ``shuffle`` when it is a numpy Generator (the plan then stores
        ``shuffle=True``), else ``seed``: an int, a Generator (one draw) or None (fresh
        from the OS). ``n_epochs`` is stored as None when ``n_iters`` is given.

        >>> BatchPlan.make(10, 3, shuffle=42).seed
        42
        """
        shuffle, shuffle_seed = rng.resolve_shuffle(shuffle, seed, allow_callable=True)
        # a plan always has a seed (batch randomness needs one), shuffled or not
        resolved = rng.normalize_seed(seed) if shuffle_seed is None else shuffle_seed
        if n_iters is not None:
            n_epochs = None
        return cls(
            n_items=_as_int(n_items),
            batch_size=_as_int(batch_size),
            shuffle=shuffle,
            n_epochs=None if n_epochs is None else _as_int(n_epochs),
            n_iters=None if n_iters is None else _as_int(n_iters),
            drop_last=bool(drop_last) if isinstance(drop_last, np.bool_) else drop_last,
            seed=resolved,
            extra_fingerprint=extra_fingerprint,
        )

    # -- pickling: the memo attributes are not part of the value ------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        for k in _CACHE_ATTRS:
            object.__setattr__(self, k, None)

    # -- derived values -----------------------------------------------------------------
    @property
    def batches_per_epoch(self) -> int:
        """Batches in one epoch: the incomplete last one counts unless ``drop_last``."""
        if self.drop_last:
            return self.n_items // self.batch_size
        return -(-self.n_items // self.batch_size)

    @property
    def total_batches(self) -> int | None:
        """How many batches :meth:`iterate` yields from the start, or None if endless."""
        if self.n_iters is not None:
            return self.n_iters
        if self.n_epochs is not None:
            return self.n_epochs * self.batches_per_epoch
        return None

    def _shuffle_kind(self) -> str:
        sh = self.shuffle
        if sh is False or (isinstance(sh, np.bool_) and not sh):
            return "ordered"
        if isinstance(sh, (bool, np.bool_, np.random.Generator)) or _is_int(sh):
            return "shuffled"
        return "callable:" + _callable_name(sh)  # type: ignore[arg-type]

    @property
    def fingerprint(self) -> str:
        """A short string identifying the plan's shape, not its seed (16 hex digits)."""
        fp: str | None = self._fingerprint  # type: ignore[attr-defined]
        if fp is None:
            parts = [
                "fpipe.BatchPlan/1",
                self.n_items,
                self.batch_size,
                self._shuffle_kind(),
                bool(self.drop_last),
                self.n_epochs,
                self.n_iters,
                self.extra_fingerprint,
            ]
            import hashlib

            fp = hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]
            object.__setattr__(self, "_fingerprint", fp)
        return fp

    def parts(self) -> dict[str, Any]:
        """The plan's shape as plain data (what a resume state is checked against).

        >>> BatchPlan.make(10, 4, n_epochs=2).parts()["batch_size"]
        4
        """
        return {
            "n_items": int(self.n_items),
            "batch_size": int(self.batch_size),
            "shuffle": self._shuffle_kind(),
            "drop_last": bool(self.drop_last),
            "n_epochs": self.n_epochs,
            "n_iters": self.n_iters,
        }

    def initial_state(self) -> IterState:
        """The state before the first batch."""
        return IterState(self.seed, 0, 0, 0, self.fingerprint)

    # -- orders ---------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """The positions ``0..n_items-1`` in the order epoch ``epoch`` visits them.

        A shuffled epoch's order is ``rng.derive(seed, PURPOSE_SHUFFLE, epoch)
        .permutation(n_items)``: it depends on the seed and the epoch only. The array is
        read-only and shared.

        >>> BatchPlan.make(4, 2).epoch_order(3).tolist()
        [0, 1, 2, 3]
        """
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        kind = self._shuffle_kind()
        key = -1 if kind == "ordered" else int(epoch)
        cache = self._order_cache  # type: ignore[attr-defined]
        if cache is not None and cache[0] == key:
            return cache[1]
        n = self.n_items
        if kind == "ordered":
            order = np.arange(n, dtype=np.int64)
        else:
            gen = rng.derive(self.seed, rng.PURPOSE_SHUFFLE, int(epoch))
            if kind == "shuffled":
                order = gen.permutation(n).astype(np.int64, copy=False)
            else:
                order = self._call_shuffle(gen)
        order.setflags(write=False)
        object.__setattr__(self, "_order_cache", (key, order))
        return order

    def _call_shuffle(self, gen: np.random.Generator) -> np.ndarray:
        fn: Callable[..., Any] = self.shuffle  # type: ignore[assignment]
        n = self.n_items
        result = np.asarray(fn(np.arange(n, dtype=np.int64), gen))
        if (
            result.shape != (n,)
            or result.dtype.kind not in "iu"
            or not np.array_equal(np.sort(result), np.arange(n))
        ):
            raise ValueError(
                f"shuffle function {_callable_name(fn)} must return a permutation of the "
                f"{n} positions it was given, but returned an array of shape "
                f"{result.shape} and dtype {result.dtype} that is not one"
            )
        return np.array(result, dtype=np.int64)

    # -- iteration ----------------------------------------------------------------------
    def _check_state(self, state: IterState) -> None:
        if not isinstance(state, IterState):
            raise TypeError(f"state must be an IterState, not {type(state).__name__}")
        if state.fingerprint != self.fingerprint:
            raise ResumeError(
                "this iteration state belongs to another pipeline, dataset or batching plan: "
                f"its fingerprint is {state.fingerprint!r} but this plan's is "
                f"{self.fingerprint!r} (the number of items, batch_size, shuffle kind, "
                "drop_last, n_epochs, n_iters and the pipeline itself must be the same as "
                "when the state was saved)"
            )

    def resume(self, state: IterState) -> BatchPlan:
        """This plan with the seed of ``state``, which must have this plan's fingerprint.

        >>> plan = BatchPlan.make(8, 2, shuffle=True, seed=1)
        >>> st = list(plan.iterate())[1][0]
        >>> BatchPlan.make(8, 2, shuffle=True).resume(st).seed
        1
        """
        self._check_state(state)
        return self.reseeded(state.seed)

    def reseeded(self, seed: int) -> BatchPlan:
        """This plan with another seed (an int shuffle, which is the seed, follows it)."""
        if seed == self.seed:
            return self
        shuffle = seed if _is_int(self.shuffle) else self.shuffle
        return dataclasses.replace(self, seed=seed, shuffle=shuffle)

    def iterate(self, state: IterState | None = None) -> Iterator[tuple[IterState, np.ndarray]]:
        """Yield ``(state_after, positions)`` for each batch, from ``state`` or the start.

        ``positions`` is a read-only int64 slice of the epoch's order; ``state_after`` is
        the state once this batch is produced, so iterating from it continues with the
        next batch. Batches never span two epochs; with ``drop_last`` an epoch's
        incomplete tail is skipped. A state past the end yields nothing.

        >>> plan = BatchPlan.make(3, 2, n_epochs=2)
        >>> [(st.epoch, st.batch_in_epoch, pos.tolist()) for st, pos in plan.iterate()]
        [(0, 1, [0, 1]), (0, 2, [2]), (1, 1, [0, 1]), (1, 2, [2])]
        """
        seed, fp = self.seed, self.fingerprint
        return (
            (IterState(seed, epoch, in_epoch, it, fp), positions)
            for epoch, in_epoch, it, positions in self.coordinates(state)
        )

    def coordinates(
        self, state: IterState | None = None
    ) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """Like :meth:`iterate`, but yield the numbers of each ``state_after``
        ``(epoch, batch_in_epoch, iteration, positions)`` instead of an IterState
        per batch (the pipeline's hot path builds a state only when asked for one)."""
        if state is None:
            state = self.initial_state()
        else:
            self._check_state(state)
            if state.seed != self.seed:
                raise ResumeError(
                    f"this iteration state was saved with seed={state.seed}, but this plan "
                    f"has seed={self.seed}; call plan.resume(state) first to continue with "
                    "the state's seed"
                )
            if not 0 <= state.batch_in_epoch <= self.batches_per_epoch or state.epoch < 0:
                raise ResumeError(
                    f"iteration state {state} is inconsistent with this plan "
                    f"({self.batches_per_epoch} batches per epoch)"
                )
        return self._iterate(state)

    def _iterate(self, state: IterState) -> Iterator[tuple[int, int, int, np.ndarray]]:
        per_epoch = self.batches_per_epoch
        n, bs = self.n_items, self.batch_size
        n_epochs, n_iters = self.n_epochs, self.n_iters
        epoch, first, it = state.epoch, state.batch_in_epoch, state.iteration
        if n_iters is not None and it >= n_iters:
            return
        # in index order a batch's positions are a range of its own (no whole-epoch array
        # kept alive by the batches); shuffled ones are slices of the epoch's permutation
        ordered = self._shuffle_kind() == "ordered"
        while n_epochs is None or epoch < n_epochs:
            order = None if ordered else self.epoch_order(epoch)
            for b in range(first, per_epoch):
                if n_iters is not None and it >= n_iters:
                    return
                it += 1
                start, stop = b * bs, min(b * bs + bs, n)
                if order is None:
                    positions = np.arange(start, stop, dtype=np.int64)
                    positions.setflags(write=False)
                else:
                    positions = order[start:stop]
                yield epoch, b + 1, it, positions
            epoch += 1
            first = 0
            if n_iters is not None and it >= n_iters:
                return
