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

Pure or effectful, known before anything runs
---------------------------------------------
A *pure* action depends on its batch and arguments only: a run may compute it ahead of
time, on worker threads or processes, in any order. An *effectful* action reads or
writes the run's environment (variables, models, locks): it runs on the driver, exactly
once per batch, in batch order, one batch at a time. An action is effectful when it is
declared so (``@action(effects=True)``), has ``model=`` or ``use_lock=``, or when its
code (or a function it wraps, e.g. an ``@inbatch_parallel`` method and its ``init`` /
``post`` methods) mentions ``pipeline`` or ``get_model_by_name``. Declare
``effects=False`` to keep an action pure whose code only mentions those names.

>>> @action
... def count(batch):
...     batch.pipeline.update_variable("n", 1, mode="a")
...     return batch
>>> count.effectful, B.double.effectful
(True, False)

A pure action that still reaches the environment (through a helper function fpipe
could not see) is stopped at its first call, with any prefetch, by an error that names
it and shows the declaration to add; it is never run a second time.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Iterator
from typing import Any, overload

from .errors import ImmutableBatchError

__all__ = [
    "ENV_NAMES",
    "ActionDefinition",
    "action",
    "check_result",
    "explain_readonly",
    "mentions_env",
]

_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD

# A function whose code uses one of these names may reach the run's environment.
ENV_NAMES = frozenset({"pipeline", "get_model_by_name"})


class ActionDefinition:
    """What ``@action`` makes of a function: the function plus its run-time needs."""

    __slots__ = ("__dict__", "effects", "fn", "model", "name", "owner", "use_lock")

    def __init__(
        self,
        fn: Callable[..., Any],
        model: str | None,
        use_lock: str | None,
        effects: bool | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@action decorates a function, not {type(fn).__name__}")
        if model is not None and not isinstance(model, str):
            model = getattr(model, "name", None) or getattr(model, "__name__", None)
            if not isinstance(model, str):
                raise TypeError("@action(model=...) takes the model's name")
        if use_lock is not None and not isinstance(use_lock, str):
            raise TypeError("@action(use_lock=...) takes a lock name (a str)")
        if effects is not None and not isinstance(effects, bool):
            raise TypeError(f"@action(effects=...) takes True or False, not {effects!r}")
        if effects is False and (model is not None or use_lock is not None):
            raise TypeError(
                f"@action(effects=False) on {getattr(fn, '__name__', 'an action')!r} contradicts "
                "model=/use_lock=: an action that uses a model or a lock is effectful. Drop "
                "effects=False."
            )
        if model is not None:
            _check_takes_model(fn, model)
        self.fn = fn
        self.effects = effects
        self.model = model
        self.use_lock = use_lock
        self.name: str = getattr(fn, "__name__", "action")
        self.owner: type | None = None
        functools.update_wrapper(self, fn)

    @property
    def effectful(self) -> bool:
        """Whether the action reaches the run's environment (see the module docs)."""
        if self.effects is not None:
            return self.effects
        if self.model is not None or self.use_lock is not None:
            return True
        found = self.__dict__.get("_mentions_env")
        if found is None:  # computed once, when first asked (the owner class is known then)
            found = self.__dict__["_mentions_env"] = mentions_env(self.fn, self.owner)
        return found

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
                with batch.pipeline.lock(self.use_lock):
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
        return (_by_value, (self.fn, self.model, self.use_lock, self.name, self.effects))


def _check_takes_model(fn: Callable[..., Any], model: str) -> None:
    """Refuse an ``@action(model=...)`` function with no parameter for the model."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable without an introspectable signature
        return
    try:
        sig.bind_partial(None, None)  # (self, model)
    except TypeError:
        name = getattr(fn, "__name__", "action")
        params = list(sig.parameters.values())
        first = params[0] if params else inspect.Parameter("self", _POSITIONAL)
        model_param = inspect.Parameter("model", _POSITIONAL)
        try:
            fixed = str(sig.replace(parameters=[first, model_param, *params[1:]]))
        except ValueError:
            fixed = f"({first.name}, model, ...)"
        raise TypeError(
            f"@action(model={model!r}) passes the model as the first argument after "
            f"{first.name}, but {name}{sig} has no parameter for it: write "
            f"`def {name}{fixed}:`"
        ) from None


def _importable(cls: type) -> bool:
    import sys

    if cls.__module__ == "__main__":
        return False
    found: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is cls


def _by_value(
    fn: Callable[..., Any],
    model: str | None,
    use_lock: str | None,
    name: str,
    effects: bool | None = None,
) -> ActionDefinition:
    definition = ActionDefinition(fn, model, use_lock, effects)
    definition.name = name
    return definition


@overload
def action(fn: Callable[..., Any], /) -> ActionDefinition: ...
@overload
def action(
    *, model: str | None = None, use_lock: str | None = None, effects: bool | None = None
) -> Callable[[Callable[..., Any]], ActionDefinition]: ...
def action(
    fn: Any = None,
    /,
    *,
    model: Any = None,
    use_lock: str | None = None,
    effects: bool | None = None,
) -> Any:
    """Mark a function as an action: ``@action`` or ``@action(model=, use_lock=, effects=)``.

    An action takes the batch (and any arguments) and returns a batch: the same one or
    a new one made with ``replace``. ``use_lock`` lets one batch at a time run it.
    ``effects=True`` declares that it reaches the run's environment (it then runs on the
    driver, once per batch, in order); ``effects=False`` that it does not (see the
    module docs for the rule when neither is given).

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
        return ActionDefinition(fn, model, use_lock, effects)
    return lambda f: ActionDefinition(f, model, use_lock, effects)


def mentions_env(fn: Any, owner: type | None = None, seen: set[int] | None = None) -> bool:
    """Whether ``fn``'s code (nested functions, wrapped functions and the methods an
    ``@inbatch_parallel`` wrapper names included) uses a name in :data:`ENV_NAMES` or
    calls an effectful action of ``owner`` by name (``self.locked()``)."""
    seen = set() if seen is None else seen
    for code in _codes(fn, owner, seen):
        names = code.co_names
        if not ENV_NAMES.isdisjoint(names):
            return True
        for name in names if owner is not None else ():
            other = getattr(owner, name, None)
            if isinstance(other, ActionDefinition) and id(other) not in seen:
                seen.add(id(other))
                if other.effects is not None:
                    if other.effects:
                        return True
                elif other.model or other.use_lock or mentions_env(other.fn, owner, seen):
                    return True
    return False


def _codes(fn: Any, owner: type | None, seen: set[int]) -> Iterator[types.CodeType]:
    if id(fn) in seen:
        return
    seen.add(id(fn))
    if isinstance(fn, ActionDefinition):
        fn = fn.fn
    if isinstance(fn, functools.partial):
        yield from _codes(fn.func, owner, seen)
        return
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None and not isinstance(fn, types.FunctionType) and callable(fn):
        call = vars(type(fn)).get("__call__")  # a callable object: its __call__ method
        code = getattr(call, "__code__", None)
    if isinstance(code, types.CodeType):
        yield from _nested(code)
    wrapped = getattr(fn, "__wrapped__", None)
    if wrapped is not None:
        yield from _codes(wrapped, owner, seen)
    for part in getattr(fn, "inbatch_parallel", ())[:2]:  # init and post
        if isinstance(part, str):
            part = getattr(owner, part, None) if owner is not None else None
        if callable(part):
            yield from _codes(part, owner, seen)


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested(const)


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
