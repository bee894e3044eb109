"""What a pipeline declares besides its per-batch steps: variables and models.

:class:`Declarations` is the part of :class:`~fpipe.Pipeline` that adds and reads
declarations. A pipeline's *model environment* (an :class:`~fpipe.env.Environment`
holding static and imported descriptors) is part of its value: ``init_model`` builds
a static model once, and every pipeline made from that one shares it;
``with_fresh_models()`` builds them again for a repeatable re-run.

>>> from fpipe import Pipeline
>>> p = Pipeline().init_variable("seen", [])
>>> p.get_variable("seen"), p.has_variable("seen"), p.set_variable("seen", [1]).get_variable("seen")
([], True, [1])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pyrsistent import PMap, PVector

from .env import _MISSING, Environment, lookup_model
from .errors import ModelError, UnknownVariableError, did_you_mean
from .models import ModelDefinition, find_definition, model_config
from .steps import ImportModel, InitModel, InitVariable, Maybe, Repeat, Step, UpdateVariable

if TYPE_CHECKING:
    from .dataset import Dataset

__all__ = ["Declarations"]


class Declarations:
    """Variables and models of a pipeline (a mixin of :class:`~fpipe.Pipeline`)."""

    __slots__ = ()
    _steps: PVector[Step]
    _config: PMap
    _models: Environment
    _env: Environment | None

    if TYPE_CHECKING:

        @property
        def batch_class(self) -> type | None: ...
        @property
        def dataset(self) -> Dataset | None: ...
        def _with_steps(self, *steps: Step, models: Environment | None = None) -> Any: ...
        def _new(self, **changes: Any) -> Any: ...

    # -- variables ------------------------------------------------------------------------
    def init_variable(
        self,
        name: str,
        default: Any = None,
        init: Callable[[], Any] | None = None,
        init_on_each_run: bool = False,
    ) -> Any:
        """Declare a variable. Each run starts it from ``init()`` or a copy of ``default``.

        ``default`` is frozen now (arrays copied read-only): writing to the caller's
        object later, or to the variable inside a run, never changes the declaration.
        With ``init_on_each_run=False``, running a pipeline that ``run()`` returned
        carries the variable over from that run.
        """
        if not isinstance(name, str):
            raise TypeError(f"a variable name is a str, not {type(name).__name__}")
        if init is not None and not callable(init):
            raise TypeError("init must be a callable returning the initial value")
        return self._with_steps(InitVariable(name, default, init, init_on_each_run))

    def set_variable(self, name: str, value: Any) -> Any:
        """A pipeline whose variable ``name`` starts each run as ``value``."""
        steps, found = _edit_inits(
            self._steps, name, lambda s: InitVariable(name, value, None, s.init_on_each_run)
        )
        if not found:
            steps += (InitVariable(name, value),)
        return self._new(steps=steps)

    assign_variable = set_variable
    """Another name for :meth:`set_variable`."""

    def update_variable(self, name: str, value: Any, mode: str = "w") -> Any:
        """Add a step that writes (``w``), appends (``a``) or extends (``e``) a variable
        as each batch passes; ``value`` may be a function of the batch or hold named
        expressions (``V("n") + 1``, ``B("labels")``: see :mod:`fpipe.expressions`)."""
        return self._with_steps(UpdateVariable(name, value, mode))

    def _declared(self) -> dict[str, InitVariable]:
        # in the order a run applies them (also those inside `@ prob`): the last one wins
        return {s.name: s for s in _walk(self._steps) if isinstance(s, InitVariable)}

    def get_variable(self, name: str, *default: Any) -> Any:
        """The variable's value: after a run, its final value; before, its initial value.

        A pipeline's answer never changes: ``next_batch`` does not touch it (read the
        iteration's variables with ``pipeline.iteration().get_variable(name)``).
        """
        env = self._env
        if env is not None and name in env.variables:
            return env.variables[name]
        declared = self._declared()
        if name in declared:
            return declared[name].value()
        if default:
            return default[0]
        known = sorted(set(declared) | set(env.variables if env else ()))
        raise UnknownVariableError(
            f"pipeline has no variable {name!r}; known variables: {known}."
            f"{did_you_mean(name, known)} Declare it with .init_variable({name!r}, default)."
        )

    def has_variable(self, name: str) -> bool:
        """Whether ``name`` is declared (``init_variable``) or held after a run."""
        env = self._env
        return name in self._declared() or (env is not None and name in env.variables)

    @property
    def variables(self) -> dict[str, Any]:
        """All variables: final values after a run, else initial values."""
        out = {n: s.value() for n, s in self._declared().items()}
        if self._env is not None:
            out.update(self._env.variables)
        return out

    def del_variable(self, name: str) -> Any:
        """A pipeline without the variable ``name``."""
        if name not in self._declared():
            raise UnknownVariableError(
                f"pipeline has no variable {name!r} to delete; known: {sorted(self._declared())}"
            )
        return self._new(steps=_edit_inits(self._steps, name, None)[0])

    delete_variable = del_variable
    """Another name for :meth:`del_variable`."""

    def delete_all_variables(self) -> Any:
        """A pipeline without any variable."""
        return self._new(steps=_edit_inits(self._steps, None, None)[0])

    # -- models ---------------------------------------------------------------------------
    def init_model(
        self, name: str | ModelDefinition, config: Mapping[str, Any] | None = None
    ) -> Any:
        """Declare a model: a static one is built now, a dynamic one is configured.

        ``name`` is a model name, ``"BatchClass.name"`` or the ``@model`` method itself
        (``init_model(MyBatch.my_model)``).
        """
        definition = find_definition(name, self.batch_class)
        if definition.mode == "global":
            raise ModelError(
                f"{definition.qualname} is a global model: it was built with its class and "
                "needs no init_model. Use it directly with @action(model=...)."
            )
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(
                f"init_model({definition.name!r}, config=...): config must be a dict, got "
                f"{type(config).__name__} {config!r}; e.g. `init_model({definition.name!r}, "
                "{'units': 32})`"
            )
        step = InitModel(definition.name, definition, config or {})
        if definition.mode == "dynamic":
            model_config(self._config, definition.name, step.config)  # check the config now
            return self._with_steps(step)
        descriptor = definition.build(
            _StaticView(self), model_config(self._config, definition.name, step.config)
        )
        models = replace(self._models, static=self._models.static.set(step.name, descriptor))
        return self._with_steps(step, models=models)

    def import_model(self, name: str, source: Declarations) -> Any:
        """Use model ``name`` of ``source`` (e.g. the pipeline a training run returned)."""
        if not isinstance(source, Declarations):
            raise TypeError(f"import_model takes a source Pipeline, not {type(source).__name__}")
        try:  # fail now, naming the model and the source, if it is not there
            descriptor = source.get_model_by_name(name)
        except ModelError as exc:
            where = f"linked to {source.dataset!r}" if source.dataset is not None else "a template"
            raise ModelError(
                f"import_model({name!r}, source): the source pipeline ({where}, "
                f"{len(source._steps)} step{'s' * (len(source._steps) != 1)}) has no model "
                f"{name!r}: {exc}"
            ) from exc
        models = replace(self._models, imported=self._models.imported.set(name, descriptor))
        return self._with_steps(ImportModel(name), models=models)

    def with_fresh_models(self) -> Any:
        """This pipeline with each static model built anew by its factory.

        Static models are shared by every pipeline made from the one that called
        ``init_model``, and training changes them; run a pipeline with fresh models to
        repeat a run from the start.
        """
        static = self._models.static
        for step in _walk(self._steps):
            if isinstance(step, InitModel) and step.definition.mode == "static":
                config = model_config(self._config, step.definition.name, step.config)
                static = static.set(step.name, step.definition.build(_StaticView(self), config))
        return self._new(models=replace(self._models, static=static))

    def get_model_by_name(self, name: str) -> Any:
        """The model ``name`` this pipeline holds (after a run: the run's final one)."""
        if self._env is not None:
            found = lookup_model(self._env, name, self.batch_class)
            if found is not _MISSING:
                return found
        found = lookup_model(self._models, name, self.batch_class)
        if found is not _MISSING:
            return found
        raise ModelError(
            f"pipeline has no model {name!r}; it has {sorted(self.models)}."
            f"{did_you_mean(name, self.models)} Static models need .init_model({name!r}); "
            "dynamic ones exist only in a run: use the pipeline that run() returned."
        )

    @property
    def models(self) -> dict[str, Any]:
        """The models this pipeline holds, by name (after a run: the run's final ones)."""
        out = dict(self._models.models)
        if self._env is not None:
            out.update(self._env.models)
        return out


class _StaticView:
    """What a static model factory sees: the pipeline's variables so far and its config."""

    def __init__(self, pipeline: Declarations) -> None:
        self._pipeline = pipeline
        self.config = pipeline._config

    def get_variable(self, name: str, *default: Any) -> Any:
        return self._pipeline.get_variable(name, *default)

    def has_variable(self, name: str) -> bool:
        return self._pipeline.has_variable(name)

    @property
    def dataset(self) -> Any:
        return self._pipeline.dataset


def _walk(steps: Sequence[Step]) -> Iterator[Step]:
    """Every step, those inside ``@ prob`` included, in the order a run meets them."""
    for s in steps:
        yield s
        if isinstance(s, (Maybe, Repeat)):
            yield from _walk(s.steps)


def _edit_inits(
    steps: Sequence[Step], name: str | None, new: Callable[[InitVariable], Step] | None
) -> tuple[tuple[Step, ...], int]:
    """Replace (``new``) or drop (``None``) the declarations of ``name`` (None: all),
    also inside ``@ prob`` steps; return the new steps and how many were found."""
    out: list[Step] = []
    hits = 0
    for s in steps:
        if isinstance(s, InitVariable) and name in (None, s.name):
            hits += 1
            if new is None:
                continue
            s = new(s)
        elif isinstance(s, (Maybe, Repeat)):
            inner, n = _edit_inits(s.steps, name, new)
            if n:
                hits += n
                s = replace(s, steps=inner)
        out.append(s)
    return tuple(out), hits
