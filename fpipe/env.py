"""Environment: the immutable value a run threads through its steps.

It holds what a run can see besides the batch: variables, models (static ones
from ``init_model``, dynamic ones built in this run, imported ones) and the names
of the locks actions asked for. Every change makes a new environment; a run keeps
the current one in a single cell (see :mod:`fpipe.runstate`) and the final one is
what ``run()`` returns on its result.

>>> env = Environment().set_variable("loss", 1.0)
>>> env.set_variable("loss", 0.5).variables["loss"], env.variables["loss"]
(0.5, 1.0)

Model resolution is a small interpreter over this value: :func:`resolve_model`
looks a name up in imported, static, dynamic and then global models, building a
dynamic model when it is first asked for, and returns the new environment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pyrsistent import PMap, pmap

from .errors import ModelError, did_you_mean
from .models import ModelDefinition, definitions_of

__all__ = ["UPDATE_MODES", "Environment", "appendable", "resolve_model", "update_mode"]

# Update modes of a variable: each accepted spelling and what it means.
UPDATE_MODES = {"w": "w", "write": "w", "a": "a", "append": "a", "e": "e", "extend": "e"}


def update_mode(mode: object) -> str:
    """``mode`` as ``"w"``, ``"a"`` or ``"e"``, or a ValueError that lists the choices.

    >>> update_mode("append")
    'a'
    """
    try:
        return UPDATE_MODES[mode]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown update mode {mode!r}; use 'w' (write), 'a' (append) or 'e' (extend)"
        ) from None


@dataclass(frozen=True)
class Environment:
    """Variables, models and lock names of one run (or of a finished run)."""

    variables: PMap = field(default_factory=pmap)
    static: PMap = field(default_factory=pmap)
    dynamic: PMap = field(default_factory=pmap)
    imported: PMap = field(default_factory=pmap)
    # name -> (definition, config) of dynamic models declared with init_model
    declared: PMap = field(default_factory=pmap)
    locks: frozenset[str] = frozenset()

    # -- variables ------------------------------------------------------------------------
    def set_variable(self, name: str, value: Any) -> Environment:
        """A new environment in which variable ``name`` is ``value``."""
        return replace(self, variables=self.variables.set(name, value))

    def update_variable(self, name: str, value: Any, mode: str = "w") -> Environment:
        """Write (``w``), append to (``a``) or extend (``e``) a variable."""
        mode = update_mode(mode)
        if mode == "w":
            return self.set_variable(name, value)
        start = appendable(self.variables.get(name, None))
        new = [*start, value] if mode == "a" else [*start, *value]
        return self.set_variable(name, new)

    def get_variable(self, name: str, *default: Any) -> Any:
        """The variable's value, else ``default`` if one is given, else a ``KeyError``."""
        try:
            return self.variables[name]
        except KeyError:
            if default:
                return default[0]
            raise KeyError(
                f"no variable {name!r} in this pipeline; known variables: "
                f"{sorted(self.variables)}.{did_you_mean(name, self.variables)} "
                "Declare it with .init_variable(name, default)."
            ) from None

    # -- models ---------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, Any]:
        """Every model this environment holds, by name (imported names win)."""
        return {**self.dynamic, **self.static, **self.imported}

    def with_lock(self, name: str) -> Environment:
        """A new environment that also lists ``name`` among the run's locks."""
        return self if name in self.locks else replace(self, locks=self.locks | {name})

    def __getstate__(self) -> dict[str, Any]:
        return {k: dict(getattr(self, k)) for k in ("variables", "static", "dynamic", "imported")}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        for k in ("variables", "static", "dynamic", "imported"):
            object.__setattr__(self, k, pmap(state.get(k, {})))
        object.__setattr__(self, "declared", pmap())
        object.__setattr__(self, "locks", frozenset())


def appendable(current: Any) -> list[Any]:
    """A variable's value as the list an append or extend starts from: a new list of its
    items (an array's rows too); ``None`` or an empty default (``0``, ``""``) is ``[]``.

    >>> appendable(None), appendable(0), appendable((1, 2))
    ([], [], [1, 2])
    """
    if current is None or (not hasattr(current, "__len__") and not current):
        return []
    return list(current)


_MISSING = object()


def lookup_model(env: Environment, name: str, batch_class: type | None) -> Any:
    """The descriptor ``name`` already has in ``env`` (or a global one), else ``_MISSING``."""
    for table in (env.imported, env.static, env.dynamic):
        if name in table:
            return table[name]
    if batch_class is not None and name not in env.declared:  # a declared dynamic one wins
        definition = definitions_of(batch_class).get(name)
        if definition is not None and definition.mode == "global":
            return definition.descriptor
    return _MISSING


def resolve_model(
    env: Environment,
    name: str,
    batch: Any,
    batch_class: type | None,
    config_for: Callable[[str, Mapping[str, Any]], dict[str, Any]],
) -> tuple[Any, bool]:
    """Find model ``name``: imported, static, dynamic (built now if needed), then global.

    Returns the descriptor and whether this call built it (a dynamic model the caller
    must add to its environment).
    """
    found = lookup_model(env, name, batch_class)
    if found is not _MISSING:
        return found, False
    definition: ModelDefinition | None = None
    config: Mapping[str, Any] = {}
    if name in env.declared:
        definition, config = env.declared[name]
    elif batch_class is not None:
        definition = definitions_of(batch_class).get(name)
    if definition is None:
        known = set(env.models)
        if batch_class is not None:
            known |= set(definitions_of(batch_class))
        raise ModelError(
            f"no model named {name!r} in this run; known models: {sorted(known)}."
            f"{did_you_mean(name, known)} Define it with @model on "
            f"{batch_class.__name__ if batch_class else 'the batch class'}, add "
            f".init_model({name!r}) for a static model, or .import_model({name!r}, source)."
        )
    if definition.mode == "static":
        raise ModelError(
            f"static model {definition.qualname} is used but was never initialised: add "
            f".init_model({name!r}) to the pipeline before the actions that use it."
        )
    return definition.build(batch, config_for(name, config)), True
