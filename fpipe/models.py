"""``@model``: model factories keyed by mode, and how a name finds its definition.

A model definition is a Batch method marked with ``@model(mode=...)`` that returns
a *descriptor*: anything (a list of tensors, a dict of numpy weights, a Keras
model...). fpipe calls it, never the user:

- ``global``: called once, with no arguments, when the class is created;
- ``static``: called as ``(pipeline, config)`` when ``init_model(name)`` is added to a
  pipeline; every pipeline derived from that one shares the descriptor;
- ``dynamic``: called as ``(batch, config)`` at most once per run, when an action of
  that run first asks for it.

>>> from fpipe import Batch, model
>>> class WithModels(Batch):
...     @model()
...     def zeros():
...         return {"w": [0.0, 0.0]}
>>> WithModels.zeros.descriptor
{'w': [0.0, 0.0]}

No registry is kept: a template pipeline finds a definition by walking the live
subclasses of :class:`~fpipe.Batch` (definitions only, never built models).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .batch import Batch
from .errors import ModelError, did_you_mean

__all__ = [
    "MODES",
    "ModelDefinition",
    "definitions_of",
    "find_definition",
    "model",
    "model_config",
]

MODES = ("global", "static", "dynamic")
# How fpipe calls a factory of each mode.
SIGNATURES = {"global": "()", "static": "(pipeline, config)", "dynamic": "(batch, config)"}
_UNBUILT = object()


def _check_signature(fn: Callable[..., Any], mode: str) -> None:
    """Refuse a factory that cannot be called the way fpipe calls one of its mode."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable without an introspectable signature
        return
    try:
        sig.bind(*([None] * (0 if mode == "global" else 2)))
    except TypeError:
        name = getattr(fn, "__name__", "model")
        raise TypeError(
            f"{mode} model factory {name}{sig} has the wrong signature: fpipe calls a "
            f"{mode} model as {name}{SIGNATURES[mode]}. Write `def {name}"
            f"{SIGNATURES[mode]}:` under @model(mode={mode!r})"
        ) from None


class ModelDefinition:
    """What ``@model`` makes of a method: its factory and mode (and, if global, its descriptor)."""

    __slots__ = ("_descriptor", "fn", "mode", "name", "owner")

    def __init__(self, fn: Callable[..., Any], mode: str) -> None:
        if mode not in MODES:
            raise ValueError(
                f"unknown model mode {mode!r} for {getattr(fn, '__name__', fn)!r}; "
                f"use one of {', '.join(MODES)}"
            )
        _check_signature(fn, mode)
        self.fn = fn
        self.mode = mode
        self.name: str = getattr(fn, "__name__", "model")
        self.owner: type | None = None
        self._descriptor: Any = _UNBUILT

    @property
    def qualname(self) -> str:
        return f"{self.owner.__name__}.{self.name}" if self.owner else self.name

    @property
    def descriptor(self) -> Any:
        """The built descriptor of a global model."""
        if self.mode != "global":
            raise ModelError(
                f"{self.qualname} is a {self.mode} model: it has no descriptor outside a "
                "pipeline. Use pipeline.get_model_by_name(name) or batch.get_model_by_name(name)."
            )
        return self._descriptor

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner
        self.name = name
        # Batch.__init_subclass__ builds a Batch's global models: an error raised here
        # would reach the user wrapped in "RuntimeError: Error calling __set_name__".
        if not issubclass(owner, Batch):
            self.build_global()

    def build_global(self) -> None:
        """Build a global model's descriptor (fpipe calls this when the class is created)."""
        if self.mode == "global":
            try:
                self._descriptor = self.fn()
            except Exception as exc:
                raise ModelError(
                    f"global model {self.qualname} failed to build when the class was created: "
                    f"{type(exc).__name__}: {exc}. A global model takes no arguments and sees "
                    "nothing outside itself; use mode='static' or 'dynamic' if it needs a "
                    "pipeline, a config or data."
                ) from exc

    def build(self, first: Any, config: dict[str, Any]) -> Any:
        """Call the factory (static: ``first`` is the pipeline, dynamic: the batch)."""
        try:
            return self.fn(first, config)
        except Exception as exc:
            raise ModelError(
                f"{self.mode} model {self.qualname} failed to build (called as "
                f"{self.name}{SIGNATURES[self.mode]}): {type(exc).__name__}: {exc}"
            ) from exc

    def __get__(self, instance: Any, owner: type | None = None) -> ModelDefinition:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ModelError(
            f"model definition {self.qualname} must not be called: fpipe builds models itself. "
            f"To use the model, write `@action(model={self.name!r})` or call "
            f"`self.get_model_by_name({self.name!r})` inside an action"
            + (
                f", and add `.init_model({self.name!r})` to the pipeline."
                if self.mode == "static"
                else "."
            )
        )

    def __repr__(self) -> str:
        return f"<{self.mode} model {self.qualname}>"

    def __reduce__(self) -> tuple[Any, ...]:
        if self.owner is None:
            raise TypeError(f"cannot pickle model definition {self.name!r} outside a class")
        return (getattr, (self.owner, self.name))


def model(fn: Any = None, /, *, mode: str = "global") -> Any:
    """Mark a Batch method as a model factory: ``@model``, ``@model()`` or ``@model(mode=...)``.

    >>> import numpy as np
    >>> from fpipe import Batch, Dataset, Pipeline, action
    >>> class Scaled(Batch):
    ...     @model(mode="static")
    ...     def doc_scale(pipeline, config):
    ...         return {"k": config.get("k", 1.0)}
    ...     @action(model="doc_scale")
    ...     def scale(self, m):
    ...         return self.replace(data=self.data * m["k"])
    >>> p = Pipeline().init_model("doc_scale", {"k": 3.0}).scale() << Dataset(2, Scaled, preloaded=np.ones(2))
    >>> p.next_batch(2).data.tolist(), p.get_model_by_name("doc_scale")
    ([3.0, 3.0], {'k': 3.0})
    """
    if fn is not None:
        if isinstance(fn, str):
            raise TypeError("write @model(mode=...) with a keyword")
        return ModelDefinition(fn, mode)
    if mode not in MODES:
        raise ValueError(f"unknown model mode {mode!r}; use one of {', '.join(MODES)}")
    return lambda f: ModelDefinition(f, mode)


def model_config(
    pipeline_config: Mapping[str, Any], name: str, own: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a factory receives: ``init_model``'s config over the pipeline config's
    section named after the model.

    >>> model_config({"net": {"units": 8, "lr": 0.1}}, "net", {"lr": 0.01})
    {'units': 8, 'lr': 0.01}
    """
    from toolz import merge  # lazily: a model config is merged once per model

    section = pipeline_config.get(name)
    if section is not None and not isinstance(section, Mapping):
        raise TypeError(
            f"model {name!r}: the pipeline config's section {name!r} is the model's config, "
            f"so config must be a dict, got {type(section).__name__} {section!r}; write "
            f"`Pipeline({{{name!r}: {{...}}}})`, or rename the config key"
        )
    if own is not None and not isinstance(own, Mapping):
        raise TypeError(
            f"init_model({name!r}, config=...): config must be a dict, got "
            f"{type(own).__name__} {own!r}"
        )
    return merge(section or {}, own or {})


def definitions_of(batch_class: type) -> dict[str, ModelDefinition]:
    """The model definitions a batch class has, its own and inherited."""
    found: dict[str, ModelDefinition] = {}
    for klass in reversed(batch_class.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, ModelDefinition):
                found[name] = value
    return found


def _all_batch_classes() -> list[type]:
    seen: list[type] = []
    stack = [Batch]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def find_definition(ref: Any, batch_class: type | None = None) -> ModelDefinition:
    """Resolve ``ref`` (a name, ``"Class.name"`` or a definition) to its model definition.

    The batch class's own definitions win; otherwise the name must be unique among all
    Batch classes.
    """
    if isinstance(ref, ModelDefinition):
        return ref
    if not isinstance(ref, str):
        raise TypeError(f"a model is named by a str or its @model method, not {type(ref).__name__}")
    if batch_class is not None and "." not in ref:
        own = definitions_of(batch_class)
        if ref in own:
            return own[ref]
    classes = _all_batch_classes()
    if "." in ref:
        cls_name, _, name = ref.rpartition(".")
        matches = {
            id(d): d
            for c in classes
            if c.__name__ == cls_name or c.__qualname__ == cls_name
            for n, d in definitions_of(c).items()
            if n == name
        }
    else:
        name = ref
        matches = {id(d): d for c in classes for n, d in definitions_of(c).items() if n == name}
    if len(matches) == 1:
        return next(iter(matches.values()))
    if not matches:
        known = {n for c in classes for n in definitions_of(c)}
        raise ModelError(
            f"no @model named {ref!r} is defined on "
            f"{batch_class.__name__ if batch_class else 'any Batch class'}."
            f"{did_you_mean(name, known)}"
        )
    names = sorted(d.qualname for d in matches.values())
    raise ModelError(
        f"model name {ref!r} is ambiguous: it is defined on {', '.join(names)}. Name one "
        f"explicitly, e.g. init_model({names[0]!r}), or pass the method itself "
        f"(init_model({names[0]}))."
    )
