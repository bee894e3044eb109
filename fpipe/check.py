"""Checking a pipeline before it runs: every problem at once, each naming its step.

:func:`check_pipeline` reads a pipeline's steps (those inside ``@ prob`` and the steps
of its join and merge source pipelines included) and returns the :class:`Problem` s it
finds, running nothing:

- arguments that do not bind to the action's signature (missing, unexpected, given
  twice, too many), bound as the run calls the action: ``fn(batch, [model],
  [joined batches...], *args, **kwargs)``;
- ``@action(model=...)`` naming no model, or a static model never ``init_model``-ed;
- ``update_variable`` (or ``save_to=V(...)``) of a variable the pipeline never
  declares, and ``V(name)`` read before the step that declares it;
- ``B(name)`` of a component the batch class lacks;
- ``C(key)`` of a key the config lacks.

A template (a pipeline with no dataset) is checked for what does not depend on the
batch class or the config: its actions, ``B()`` and ``C()`` are checked once it is
linked. ``Pipeline.check()`` raises a :class:`~fpipe.errors.PipelineCheckError`
listing the problems; every run checks its pipeline once, before its first batch.

>>> import numpy as np
>>> from fpipe import Batch, Dataset, Pipeline, action
>>> class Noisy(Batch):
...     @action
...     def blur(self, sigma):
...         return self
>>> p = Pipeline().blur(sigam=1.0).update_variable("seen", 1) << Dataset(4, Noisy)
>>> for problem in check_pipeline(p):
...     print(problem)
step 0 `blur(sigam=1.0)`: unexpected keyword argument 'sigam'. Did you mean 'sigma'? Noisy.blur(self, sigma) takes: sigma
step 1 `update_variable('seen', 1, mode='w')`: variable 'seen' is never declared. Add .init_variable('seen', default) to the pipeline
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .actions import ActionDefinition
from .dataset import Dataset
from .errors import PipelineDefinitionError, did_you_mean
from .expressions import Leaf, contains_expression, leaves
from .models import ModelDefinition, definitions_of
from .steps import (
    ActionStep,
    ApplyStep,
    ImportModel,
    InitModel,
    InitVariable,
    Join,
    Maybe,
    Merge,
    Repeat,
    Step,
    UpdateVariable,
    action_definition,
)

if TYPE_CHECKING:
    from .algebra import PipelineValue

__all__ = ["Problem", "check_pipeline"]

T = TypeVar("T")

_P = inspect.Parameter
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
_BY_NAME = (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)


@dataclass(frozen=True)
class Problem:
    """One thing that would go wrong in a run: where (``path``, ``label``, and for a
    source pipeline's step, ``source``), what kind, and what to do (``message``).

    ``kind`` is one of ``"arguments"``, ``"action"``, ``"model"``, ``"variable"``,
    ``"component"``, ``"config"``.

    >>> str(Problem("arguments", (2, 0), "scale()", "missing argument 'k'"))
    "step 2.0 `scale()`: missing argument 'k'"
    """

    kind: str
    path: tuple[int, ...]
    label: str
    message: str
    source: str = ""
    cause: BaseException | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        where = f"in {self.source}: " if self.source else ""
        return f"{where}step {'.'.join(map(str, self.path))} `{self.label}`: {self.message}"


def check_pipeline(pipeline: PipelineValue) -> list[Problem]:
    """Every problem :mod:`fpipe.check` finds in ``pipeline``, in step order ([] if none)."""
    return _Scope(pipeline, "", {}).run()


class _Scope:
    """One pipeline's steps and what they declare; a source pipeline is a scope of its own."""

    def __init__(self, pipeline: Any, source: str, checked: dict[int, list[Problem]]) -> None:
        self.steps: Sequence[Step] = pipeline.steps
        self.batch_class: type | None = pipeline.batch_class
        self.config: Mapping[str, Any] | None = (
            pipeline.config if pipeline.dataset is not None else None
        )
        self.source = source
        self.checked = checked  # source pipelines already checked, by id: each once
        result = pipeline.result_env
        carried = set(result.variables) if result is not None else set()
        self.declared: dict[str, tuple[int, ...]] = {}  # variable -> where first declared
        self.models: set[str] = set(pipeline.model_env.imported) | set(pipeline.model_env.static)
        for path, step in _walk(self.steps, ()):
            if isinstance(step, InitVariable):
                self.declared.setdefault(step.name, path)
            elif isinstance(step, (InitModel, ImportModel)):
                self.models.add(step.name)
        self.seen = set(carried)  # declared so far, in step order (a result's: from the start)
        self.carried = carried
        self.problems: list[Problem] = []
        self.definitions: dict[str, ModelDefinition] | None = None  # the class's, when needed

    def run(self) -> list[Problem]:
        self.walk(self.steps, ())
        return self.problems

    def add(self, kind: str, path: tuple[int, ...], step: Step, message: str, **kw: Any) -> None:
        self.problems.append(Problem(kind, path, step.label, message, self.source, **kw))

    # -- the steps, in the order a run meets them ----------------------------------------------
    def walk(self, steps: Sequence[Step], base: tuple[int, ...]) -> None:
        joined = 0  # batches a join passes to the next action
        for i, step in enumerate(steps):
            path = (*base, i)
            match step:
                case InitVariable(name=name):
                    self.seen.add(name)
                case Join(sources=sources):
                    joined += len(sources)
                    self.sources("join", path, sources)
                    continue
                case ActionStep(name=name):
                    self.action(path, step, name, joined)
                case ApplyStep(fn=fn):
                    self.apply(path, step, fn, joined)
                case UpdateVariable(name=name, value=value):
                    self.write(path, step, name, f"variable {name!r}")
                    self.expressions(path, step, (value,))
                case Maybe(steps=inner, prob=prob):
                    self.expressions(path, step, (prob,))  # `p @ C("key")`
                    self.walk(inner, path)
                case Repeat(steps=inner, times=times):  # `p * C("key")`
                    self.expressions(path, step, (times,))
                    self.walk(inner, (*path, 0))  # as the first repetition runs them
                case Merge(sources=sources):
                    self.sources("merge", path, sources)
            if step.per_batch:
                joined = 0

    def sources(self, what: str, path: tuple[int, ...], sources: Sequence[Any]) -> None:
        for k, src in enumerate(sources):
            if isinstance(src, Dataset):
                continue
            found = self.checked.get(id(src))
            if found is None:
                where = f"{what} source #{k} of step {'.'.join(map(str, path))}"
                if self.source:
                    where = f"{where} ({self.source})"
                found = self.checked[id(src)] = _Scope(src, where, self.checked).run()
                self.problems.extend(found)

    def action(self, path: tuple[int, ...], step: ActionStep, name: str, joined: int) -> None:
        if self.batch_class is None:  # a template: its actions are checked once it is linked
            self.expressions(path, step, (*step.args, *step.kwargs.values()))
            return
        try:
            definition = action_definition(self.batch_class, name)
        except PipelineDefinitionError as exc:
            self.add("action", path, step, str(exc), cause=exc)
            return
        self.call(path, step, definition, f"{self.batch_class.__name__}.{name}", joined)

    def apply(self, path: tuple[int, ...], step: ApplyStep, fn: Any, joined: int) -> None:
        self.call(path, step, fn, _name(fn), joined)

    def call(self, path: tuple[int, ...], step: Any, fn: Any, name: str, joined: int) -> None:
        model = None
        if isinstance(fn, ActionDefinition):
            fn, model = fn.fn, fn.model
        args, kwargs = step.args, step.kwargs
        lead = _lead(model is not None, joined)
        keywords = tuple(sorted(kwargs)) if kwargs else ()
        save_to = getattr(step, "save_to", None)
        if save_to is not None and _takes(fn, "save_to"):  # then an argument like any other
            keywords, save_to = tuple(sorted((*keywords, "save_to"))), None
            kwargs = {**kwargs, "save_to": step.save_to}
        if getattr(fn, "inbatch_parallel", None) is None:  # the common case, directly
            for message in _binding(fn, name, "", lead, len(args), keywords, frozenset()):
                self.add("arguments", path, step, message)
        else:
            for target, shown, note, extra, given in _targets(fn, name, self.batch_class):
                bound = (*extra, *lead)
                for message in _binding(target, shown, note, bound, len(args), keywords, given):
                    self.add("arguments", path, step, message)
        if model is not None:
            self.model(path, step, model)
        if args or kwargs:
            self.expressions(path, step, (*args, *kwargs.values()))
        if isinstance(save_to, Leaf) and save_to.name is not None:
            if save_to.kind == "V":  # where the result goes
                self.write(
                    path, step, save_to.name, f"save_to={save_to!r}: variable {save_to.name!r}"
                )
            elif save_to.kind == "B":
                self.component(path, step, save_to.name, f"save_to={save_to!r}", store=True)

    def model(self, path: tuple[int, ...], step: Step, name: str) -> None:
        if name in self.models or self.batch_class is None:
            return
        cls = self.batch_class
        if self.definitions is None:
            self.definitions = definitions_of(cls)
        definition: ModelDefinition | None = self.definitions.get(name)
        if definition is None:
            known = sorted(self.models | set(self.definitions))
            self.add(
                "model",
                path,
                step,
                f"@action(model={name!r}) names no model: {cls.__name__} has no @model "
                f"{name!r} and the pipeline neither initialises nor imports one; known models: "
                f"{known}.{did_you_mean(name, known)} Define it with @model on {cls.__name__}, "
                f"or add .import_model({name!r}, source)",
            )
        elif definition.mode == "static":
            self.add(
                "model",
                path,
                step,
                f"static model {definition.qualname} is used but never initialised: add "
                f".init_model({name!r}) to the pipeline",
            )

    def write(self, path: tuple[int, ...], step: Step, name: str, what: str) -> None:
        if name not in self.declared and name not in self.carried:
            known = sorted({*self.declared, *self.carried})
            listed = f" Known variables: {known}." if known else ""
            self.add(
                "variable",
                path,
                step,
                f"{what} is never declared.{did_you_mean(name, known)}{listed} Add "
                f".init_variable({name!r}, default) to the pipeline",
            )

    def expressions(self, path: tuple[int, ...], step: Step, values: Sequence[Any]) -> None:
        """Check the named expressions (``B``, ``V``, ``C``) inside argument ``values``."""
        found: dict[tuple[str, str | None], None] = {}  # each leaf once, in order
        for value in values:
            if contains_expression(value):
                found.update(dict.fromkeys((leaf.kind, leaf.name) for leaf in leaves(value)))
        for kind, name in found:
            if kind == "V" and name is not None:
                self.read(path, step, name)
            elif kind == "B" and name is not None:
                self.component(path, step, name, f"B({name!r})")
            elif kind == "C" and name is not None:
                self.config_key(path, step, name)

    def read(self, path: tuple[int, ...], step: Step, name: str) -> None:
        if name in self.seen:
            return
        where = self.declared.get(name)
        if where is not None:
            message = (
                f"V({name!r}) reads variable {name!r} before it is declared: its "
                f".init_variable({name!r}, ...) is step {'.'.join(map(str, where))}; move it "
                "before this step"
            )
        else:
            known = sorted({*self.declared, *self.carried})
            listed = f" Known variables: {known}." if known else ""
            message = (
                f"V({name!r}) reads variable {name!r}, which is never declared."
                f"{did_you_mean(name, known)}{listed} Add .init_variable({name!r}, default) "
                "before this step"
            )
        self.add("variable", path, step, message)

    def component(
        self, path: tuple[int, ...], step: Step, name: str, what: str, store: bool = False
    ) -> None:
        """``B(name)`` reads a component or another public attribute of the batch
        (``B("indices")``); ``save_to=B(name)`` stores into a component."""
        cls = self.batch_class
        if cls is None:  # a template: its batch class is not known yet
            return
        names = list(getattr(cls, "_component_names", ("data",)))
        attribute = not store and not name.startswith("_") and hasattr(cls, name)
        if name not in names and not attribute:
            self.add(
                "component",
                path,
                step,
                f"{what}: {cls.__name__} has no component {name!r}."
                f"{did_you_mean(name, names)} Its components: {names}; fix the name, or "
                f"declare it in {cls.__name__}.components",
            )

    def config_key(self, path: tuple[int, ...], step: Step, key: str) -> None:
        node: Any = self.config
        if node is None:  # a template: its config may come with `<<` later
            return
        parts = key.split("/")
        for depth, part in enumerate(parts):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
                continue
            where = "config" + "".join(f"[{p!r}]" for p in parts[:depth]) if depth else "the config"
            if isinstance(node, Mapping):
                keys = sorted(map(str, node))
                listed = f"Its keys: {keys}" if keys else "It is empty"
                what = f"{where} has no key {part!r}.{did_you_mean(part, keys)} {listed}"
            else:
                what = f"{where} is {type(node).__name__} {node!r}, not a dict"
            example = "".join(f"{{{p!r}: " for p in parts) + "..." + "}" * len(parts)
            link = f" or `pipeline << {example}`" if len(parts) == 1 else ""
            self.add(
                "config",
                path,
                step,
                f"C({key!r}): {what}. Give it in the config, e.g. `Pipeline({example})`{link}",
            )
            return


@functools.lru_cache(maxsize=256)
def _lead(model: bool, joined: int) -> tuple[str, ...]:
    """What fpipe passes an action before the step's arguments."""
    return ("the batch", *(("the model",) if model else ()), *("the joined batch",) * joined)


def _walk(steps: Sequence[Step], base: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], Step]]:
    for i, step in enumerate(steps):
        yield (*base, i), step
        if isinstance(step, Maybe):
            yield from _walk(step.steps, (*base, i))
        elif isinstance(step, Repeat):
            yield from _walk(step.steps, (*base, i, 0))


# -- binding arguments to a signature -------------------------------------------------------------
def _targets(
    fn: Any, name: str, batch_class: type | None
) -> Iterator[tuple[Any, str, str, tuple[str, ...], frozenset[str]]]:
    """The functions a call of ``fn`` passes the step's arguments to: ``(function, name
    shown, a note shown after its signature, roles passed before the arguments (besides
    the batch, the model and the joined batches), keywords passed by fpipe)``.

    An ``@inbatch_parallel`` method is called per item as ``method(batch, item, *args,
    **kwargs)`` (with ``rng=`` if it takes one); its ``init`` method or function as
    ``init(batch, *args, **kwargs)`` and its ``post`` as ``post(batch, results, *args,
    **kwargs)``.
    """
    parallel = getattr(fn, "inbatch_parallel", None)
    method = getattr(fn, "__wrapped__", None)
    if parallel is None or method is None:
        yield fn, name, "", (), frozenset()
        return
    init, post, _ = parallel
    sig = _signature(method)
    given = frozenset({"rng"}) if sig is not None and "rng" in sig.parameters else frozenset()
    item = () if init == "run_once" else ("the item",)
    how = "once" if init == "run_once" else "per item"
    yield method, name, f" (@inbatch_parallel calls it {how})", item, given
    for part, role, extra in ((init, "init", ()), (post, "post", ("the results",))):
        if isinstance(part, str) and part not in ("indices", "items", "run_once"):
            part = getattr(batch_class, part, None) if batch_class is not None else None
        if callable(part) and not isinstance(part, (ActionDefinition, str)):
            yield (
                part,
                _name(part),
                f" (the {role} of @inbatch_parallel on {name})",
                extra,
                frozenset(),
            )


def _name(fn: Any) -> str:
    """A function's name as a message shows it: ``Class.method``, ``f``, ``<lambda>``."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name.rpartition("<locals>.")[2] if isinstance(name, str) else repr(fn)


def _takes(fn: Any, name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` (not ``*args`` or ``**kwargs``)."""
    sig = _signature(fn)
    param = sig.parameters.get(name) if sig is not None else None
    return param is not None and param.kind not in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD)


def _memoized(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` remembering its results by arguments (signatures are cached per function);
    a call with an unhashable argument (a callable object that is not hashable) is not
    remembered."""
    cached = functools.lru_cache(maxsize=4096)(fn)

    def call(*args: Any) -> T:
        try:
            return cached(*args)
        except TypeError:  # unhashable
            return fn(*args)

    call.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return call


def _signature_of(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: not checked
        return None


_signature = _memoized(_signature_of)


def _bind(
    fn: Any,
    name: str,
    note: str,
    lead: tuple[str, ...],
    n_args: int,
    keywords: tuple[str, ...],
    given: frozenset[str],
) -> tuple[str, ...]:
    """What is wrong with calling ``fn(*lead, *n_args arguments, **keywords)``, fpipe
    passing the keywords ``given`` itself; one message per mistake."""
    sig = _signature(fn)
    if sig is None:
        return ()
    params = list(sig.parameters.values())
    shown = f"{name}{sig}{note}"
    positional = [p for p in params if p.kind in _POSITIONAL]
    star_args = any(p.kind is _P.VAR_POSITIONAL for p in params)
    star_kwargs = any(p.kind is _P.VAR_KEYWORD for p in params)
    n_pos = len(lead) + n_args
    out: list[str] = []
    if not star_args and n_pos > len(positional):
        if len(lead) > len(positional):
            roles = _roles(lead[len(positional) :])
            out.append(
                f"{shown} has no parameter for {roles}: fpipe calls it with {_roles(lead)} "
                "before the step's arguments; add a parameter for each"
            )
        else:
            room = len(positional) - len(lead)
            out.append(
                f"{n_args} positional argument{'s' * (n_args != 1)} given, but {shown} takes "
                f"{f'at most {room}' if room else 'none'} after {_roles(lead)}; pass fewer, "
                "or name them"
            )
    filled = {p.name: role for p, role in zip(positional, lead, strict=False)}
    by_position = {p.name for p in positional[: len(lead) + n_args]}
    names = [p.name for p in params if p.kind in _BY_NAME and p.name not in filled]
    suggested: set[str] = set()  # a misspelt keyword's parameter is not "missing" as well
    for key in keywords:
        param = sig.parameters.get(key)
        if key in filled:
            out.append(
                f"{key}= is given, but parameter {key!r} of {shown} receives {filled[key]}; "
                f"drop {key}="
            )
        elif key in by_position:
            out.append(
                f"argument {key!r} of {shown} is given twice, by position and as {key}=...; "
                "pass it once"
            )
        elif param is not None and param.kind is _P.POSITIONAL_ONLY and not star_kwargs:
            out.append(f"{key!r} is positional-only in {shown}: pass it by position")
        elif param is None and not star_kwargs:
            suggested.update(difflib.get_close_matches(key, names, n=1, cutoff=0.6))
            out.append(
                f"unexpected keyword argument {key!r}.{did_you_mean(key, names)} {shown} takes: "
                f"{', '.join(names) or 'no keyword arguments'}"
            )
    for key in sorted(given & by_position):
        out.append(
            f"argument {key!r} of {shown} receives a positional argument, but fpipe passes "
            f"{key}= itself; pass fewer positional arguments, or name them"
        )
    missing = [
        p.name
        for p in params
        if p.default is _P.empty
        and p.name not in keywords
        and p.name not in given
        and p.name not in by_position
        and p.name not in suggested
        and p.kind in (*_POSITIONAL, _P.KEYWORD_ONLY)
    ]
    if missing:
        quoted = ", ".join(map(repr, missing))
        how = (
            "by position or " if any(sig.parameters[m].kind in _POSITIONAL for m in missing) else ""
        )
        out.append(
            f"missing argument{'s' * (len(missing) > 1)} {quoted} of {shown}; pass "
            f"{'them' if len(missing) > 1 else 'it'} {how}as "
            + ", ".join(f"{m}=..." for m in missing)
        )
    if not out:  # what this reading missed, Python's own binding says
        try:
            sig.bind(*range(n_pos), **dict.fromkeys((*keywords, *given)))
        except TypeError as exc:
            out.append(f"the arguments do not fit {shown}: {exc}")
    return tuple(out)


_binding = _memoized(_bind)


def _roles(lead: Sequence[str]) -> str:
    """``("the batch", "the joined batch", "the joined batch")`` -> 'the batch and 2 joined
    batches'."""
    counts: dict[str, int] = {}
    for role in lead:
        counts[role] = counts.get(role, 0) + 1
    parts = [role if n == 1 else _plural(role, n) for role, n in counts.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _plural(role: str, n: int) -> str:
    noun = role.removeprefix("the ")
    return f"{n} {noun}es" if noun.endswith("batch") else f"{n} {noun}s"
