"""``@action``: marks a function as a pipeline step that maps a batch to a batch.

>>> import numpy as np
>>> from fpipe import Batch, action
>>> class B(Batch):
...     @action
...     def double(self):
...         return self.replace(data=self.data * 2)
>>> B(np.arange(2), preloaded=np.array([1, 2])).double().data
array([2, 4])

An action is an ordinary method, so it can be called on a batch by hand; in a
pipeline it becomes a step (``pipeline.double()``). ``@action(model="m")`` passes
the model descriptor ``m`` as the first argument after ``self``;
``@action(use_lock="name")`` lets one batch at a time run it within a run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, overload

from .errors import ImmutableBatchError

__all__ = ["ActionDefinition", "action", "check_result", "explain_readonly"]


class ActionDefinition:
    """What ``@action`` makes of a function: the function plus its run-time needs."""

    __slots__ = ("__dict__", "fn", "model", "name", "owner", "use_lock")

    def __init__(self, fn: Callable[..., Any], model: str | None, use_lock: str | None) -> None:
        if not callable(fn):
            raise TypeError(f"@action decorates a function, not {type(fn).__name__}")
        if model is not None and not isinstance(model, str):
            model = getattr(model, "name", None) or getattr(model, "__name__", None)
            if not isinstance(model, str):
                raise TypeError("@action(model=...) takes the model's name")
        if use_lock is not None and not isinstance(use_lock, str):
            raise TypeError("@action(use_lock=...) takes a lock name (a str)")
        self.fn = fn
        self.model = model
        self.use_lock = use_lock
        self.name: str = getattr(fn, "__name__", "action")
        self.owner: type | None = None
        functools.update_wrapper(self, fn)

    @property
    def needs_env(self) -> bool:
        """True when the action uses a model or a lock, i.e. the run's environment."""
        return self.model is not None or self.use_lock is not None

    @property
    def qualname(self) -> str:
        return f"{self.owner.__name__}.{self.name}" if self.owner else self.name

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)

    def __call__(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the action on ``batch`` by hand (outside a pipeline or inside another action)."""
        if self.model is not None:
            args = (batch.get_model_by_name(self.model), *args)
        try:
            if self.use_lock is not None and batch._ctx is not None:
                with batch._ctx.run.lock(self.use_lock):
                    result = self.fn(batch, *args, **kwargs)
            else:
                result = self.fn(batch, *args, **kwargs)
        except ValueError as exc:
            explained = explain_readonly(exc, batch, self.qualname)
            if explained is None:
                raise
            raise explained from exc
        return check_result(self.qualname, result)

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}" for k, v in (("model", self.model), ("use_lock", self.use_lock)) if v
        )
        return f"<action {self.qualname}{extra}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # A method of an importable class pickles by reference to it. Otherwise (a plain
        # function, or a class that cloudpickle/Dask sends by value, e.g. one defined in
        # a script's __main__, whose attributes are restored one by one) it goes by value.
        if self.owner is not None and _importable(self.owner):
            return (getattr, (self.owner, self.name))
        return (_by_value, (self.fn, self.model, self.use_lock, self.name))


def _importable(cls: type) -> bool:
    import sys

    if cls.__module__ == "__main__":
        return False
    found: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is cls


def _by_value(
    fn: Callable[..., Any], model: str | None, use_lock: str | None, name: str
) -> ActionDefinition:
    definition = ActionDefinition(fn, model, use_lock)
    definition.name = name
    return definition


@overload
def action(fn: Callable[..., Any], /) -> ActionDefinition: ...
@overload
def action(
    *, model: str | None = None, use_lock: str | None = None
) -> Callable[[Callable[..., Any]], ActionDefinition]: ...
def action(fn: Any = None, /, *, model: Any = None, use_lock: str | None = None) -> Any:
    """Mark a function as an action: ``@action`` or ``@action(model=..., use_lock=...)``.

    An action takes the batch (and any arguments) and returns a batch: the same one or
    a new one made with ``replace``. ``use_lock`` lets one batch at a time run it.

    >>> import numpy as np
    >>> from fpipe import Batch, Dataset
    >>> class Counted(Batch):
    ...     @action(use_lock="log")
    ...     def count(self):
    ...         self.pipeline.update_variable("sizes", len(self), mode="a")
    ...         return self
    >>> Dataset(5, Counted).p.init_variable("sizes", []).count().run(2, prefetch=2).get_variable("sizes")
    [2, 2, 1]
    """
    if fn is not None:
        return ActionDefinition(fn, model, use_lock)
    return lambda f: ActionDefinition(f, model, use_lock)


def check_result(name: str, result: Any) -> Any:
    """Return ``result`` if it is a batch, else raise an error naming the action."""
    from .batch import Batch

    if isinstance(result, Batch):
        return result
    if result is None:
        hint = "Did you forget `return self` (or `return self.replace(...)`)?"
    else:
        hint = "Return `self` or a new batch, e.g. `return self.replace(images=...)`."
    raise TypeError(
        f"action {name!r} returned {type(result).__name__}, not a batch. {hint} "
        "To keep a value, store it with self.pipeline.set_variable(name, value)."
    )


def explain_readonly(
    exc: BaseException, batch: Any = None, name: str | None = None
) -> ImmutableBatchError | None:
    """Turn numpy's 'read-only' error into one that says how to change a batch."""
    if not (isinstance(exc, ValueError) and "read-only" in str(exc)):
        return None
    names = tuple(getattr(batch, "components", None) or ()) or ("data",)
    c = names[0]
    where = f"action {name!r}: " if name else ""
    return ImmutableBatchError(
        f"{where}{exc}: batch components are read-only because batches are immutable. "
        f"Build a new batch instead of writing in place, e.g. "
        f"`return self.replace({c}=self.{c} * 2)` (copy first if you must write: "
        f"`{c} = self.{c}.copy(); {c}[0] = 0; return self.replace({c}={c})`)."
    )
