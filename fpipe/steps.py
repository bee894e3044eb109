"""Steps: the data-only records a pipeline is a sequence of.

A step is a small frozen record with structural equality, a readable label and
nothing else: it neither compiles nor runs itself. The interpreter
(:mod:`fpipe.interpreter`) dispatches over this closed set of records. Arguments are
frozen when a step is made (:func:`fpipe.values.freeze`): positional ones in a tuple,
keyword ones in a persistent map, arrays copied read-only, so nothing a caller does
later changes a step.

>>> import numpy as np
>>> a = np.ones(2)
>>> step = ActionStep("scale", (a,), {"k": [1, 2]})
>>> a[:] = 5
>>> step.args[0].tolist(), step == ActionStep("scale", (np.ones(2),), {"k": [1, 2]})
([1.0, 1.0], True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyrsistent import pmap

from .actions import ActionDefinition
from .env import update_mode
from .errors import PipelineDefinitionError, UnknownActionError, did_you_mean
from .expressions import Expr
from .models import ModelDefinition
from .values import freeze, freeze_kwargs, thaw, value_hash, values_equal

__all__ = [
    "ActionStep",
    "ApplyStep",
    "ImportModel",
    "InitModel",
    "InitVariable",
    "Join",
    "Maybe",
    "Merge",
    "Rebatch",
    "Repeat",
    "Step",
    "UpdateVariable",
    "action_definition",
]


def _fmt_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    def short(v: Any) -> str:
        if isinstance(v, np.ndarray):
            return f"<array {v.dtype}{list(v.shape)}>"
        r = repr(v)
        return r if len(r) <= 40 else r[:37] + "..."

    # keywords by name: a persistent map has no order of its own (it would vary with the
    # process's string hashes), and a label must read the same in every run
    named = sorted(kwargs.items())
    return ", ".join([*map(short, args), *(f"{k}={short(v)}" for k, v in named)])


class Step:
    """Base class of pipeline steps (frozen dataclasses compared field by field)."""

    # Steps with a per-run effect (declarations) and no per-batch work set this to False.
    per_batch = True

    @property
    def label(self) -> str:
        return type(self).__name__

    def action_names(self) -> Iterator[str]:
        """The names of the batch-class actions this step calls."""
        return iter(())

    def __repr__(self) -> str:
        return self.label

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return all(
            values_equal(getattr(self, f), getattr(other, f))
            for f in self.__dataclass_fields__  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        fields = self.__dataclass_fields__  # type: ignore[attr-defined]
        return hash((type(self).__name__, *(value_hash(getattr(self, f)) for f in fields)))


def action_definition(batch_class: type, name: str) -> ActionDefinition:
    """The ``@action`` called ``name`` on ``batch_class``, or a helpful error."""
    found = getattr(batch_class, name, None)
    if isinstance(found, ActionDefinition):
        return found
    actions = [
        n for n in dir(batch_class) if isinstance(getattr(batch_class, n, None), ActionDefinition)
    ]
    if found is not None and callable(found):
        raise PipelineDefinitionError(
            f"{batch_class.__name__}.{name} is not an action: decorate it with @action to use "
            "it as a pipeline step."
        )
    raise UnknownActionError(
        f"{batch_class.__name__} has no action {name!r}.{did_you_mean(name, actions)} "
        f"Its actions are: {', '.join(sorted(actions)) or '(none)'}."
    )


def _freeze_call(step: Any) -> None:
    object.__setattr__(step, "args", tuple(freeze(a) for a in step.args))
    kwargs = freeze_kwargs(step.kwargs)
    if isinstance(kwargs.get("save_to"), Expr):  # where the result goes: a field of its own
        if step.save_to is not None:
            raise PipelineDefinitionError(
                f"save_to= is given twice: {step.save_to!r} and {kwargs['save_to']!r}"
            )
        object.__setattr__(step, "save_to", kwargs["save_to"])
        kwargs = kwargs.discard("save_to")
    object.__setattr__(step, "kwargs", kwargs)


def _call_text(step: Any) -> str:
    kwargs = step.kwargs if step.save_to is None else {**step.kwargs, "save_to": step.save_to}
    return _fmt_args(step.args, kwargs)


@dataclass(frozen=True, eq=False, repr=False)
class ActionStep(Step):
    """Call the batch class's action ``name`` with the given arguments.

    ``save_to`` (an expression, given as ``save_to=`` among the keyword arguments) is
    where what the action returns is stored: ``V("preds", mode="a")``, ``B("preds")``.
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=pmap)
    save_to: Any = None

    def __post_init__(self) -> None:
        _freeze_call(self)

    @property
    def label(self) -> str:
        return f"{self.name}({_call_text(self)})"

    def action_names(self) -> Iterator[str]:
        yield self.name


@dataclass(frozen=True, eq=False, repr=False)
class ApplyStep(Step):
    """Call a plain function ``fn(batch, *args, **kwargs) -> batch`` (or an ``@action`` one)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=pmap)
    save_to: Any = None  # as ActionStep's

    def __post_init__(self) -> None:
        _freeze_call(self)

    @property
    def label(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        inner = _call_text(self)
        return f"apply({name}{', ' + inner if inner else ''})"


@dataclass(frozen=True, eq=False, repr=False)
class InitVariable(Step):
    """Declare a variable; each run starts it from ``init()`` or a copy of ``default``."""

    name: str
    default: Any = None
    init: Callable[[], Any] | None = None
    init_on_each_run: bool = False
    per_batch = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", freeze(self.default))

    @property
    def label(self) -> str:
        return f"init_variable({self.name!r}, {_fmt_args((self.default,), {})})"

    def value(self) -> Any:
        """The variable's starting value: a fresh, writable copy for each run."""
        return self.init() if self.init is not None else thaw(self.default)


@dataclass(frozen=True, eq=False, repr=False)
class InitModel(Step):
    """Declare a model: a static one's descriptor is in the pipeline's model
    environment (built by ``init_model``); a dynamic one gets its config here."""

    name: str
    definition: ModelDefinition
    config: Mapping[str, Any] = field(default_factory=pmap)
    per_batch = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", freeze_kwargs(self.config))

    @property
    def label(self) -> str:
        cfg = f", config={dict(self.config)!r}" if self.config else ""
        return f"init_model({self.definition.qualname!r}{cfg})"


@dataclass(frozen=True, eq=False, repr=False)
class ImportModel(Step):
    """Use model ``name`` taken from another pipeline; the descriptor itself is in the
    pipeline's model environment (taken when ``import_model`` is called)."""

    name: str
    per_batch = False

    @property
    def label(self) -> str:
        return f"import_model({self.name!r})"


@dataclass(frozen=True, eq=False, repr=False)
class UpdateVariable(Step):
    """Write, append or extend a variable as each batch passes.

    ``value`` may be a callable ``value(batch)`` evaluated on the batch.
    """

    name: str
    value: Any
    mode: str = "w"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", freeze(self.value))
        object.__setattr__(self, "mode", update_mode(self.mode))

    @property
    def label(self) -> str:
        return f"update_variable({self.name!r}, {_fmt_args((self.value,), {})}, mode={self.mode!r})"


@dataclass(frozen=True, eq=False, repr=False)
class Maybe(Step):
    """Run ``steps`` on a batch with probability ``prob`` (``pipeline @ prob``); ``prob``
    may be a config expression (``pipeline @ C("aug_prob")``), read when the step runs."""

    steps: tuple[Step, ...]
    prob: Any  # a float, or an expression of the config

    @property
    def label(self) -> str:
        inner = " + ".join(s.label for s in self.steps) or "<empty>"
        return f"({inner}) @ {self.prob}"

    def action_names(self) -> Iterator[str]:
        for s in self.steps:
            yield from s.action_names()


@dataclass(frozen=True, eq=False, repr=False)
class Repeat(Step):
    """Run ``steps`` ``times`` times over, ``times`` a config expression read when the step
    runs (``pipeline * C("repeats")``; a plain count repeats the steps themselves)."""

    steps: tuple[Step, ...]
    times: Any

    @property
    def label(self) -> str:
        inner = " + ".join(s.label for s in self.steps) or "<empty>"
        return f"({inner}) * {self.times!r}"

    def action_names(self) -> Iterator[str]:
        for s in self.steps:
            yield from s.action_names()


@dataclass(frozen=True, eq=False, repr=False)
class Join(Step):
    """Pass the batches of ``sources`` (datasets or linked pipelines) with the same ids
    to the next action."""

    sources: tuple[Any, ...]

    @property
    def label(self) -> str:
        return f"join({len(self.sources)} source{'s' * (len(self.sources) != 1)})"


@dataclass(frozen=True, eq=False, repr=False)
class Merge(Step):
    """Concatenate each batch with the next batch of every source."""

    sources: tuple[Any, ...]
    merge_fn: Callable[[list[Any]], Any] | None = None

    @property
    def label(self) -> str:
        return f"merge({len(self.sources)} source{'s' * (len(self.sources) != 1)})"


@dataclass(frozen=True, eq=False, repr=False)
class Rebatch(Step):
    """Regroup the stream of items into batches of ``batch_size`` (a barrier)."""

    batch_size: int
    merge_fn: Callable[[list[Any]], Any] | None = None

    @property
    def label(self) -> str:
        return f"rebatch({self.batch_size})"
