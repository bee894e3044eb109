"""Exceptions raised by fpipe. Each message says what failed, where, and what to do."""

from __future__ import annotations

__all__ = [
    "ActionError",
    "FpipeError",
    "GlobalRandomWarning",
    "ImmutableBatchError",
    "ModelError",
    "PipelineCheckError",
    "PipelineDefinitionError",
    "ResumeError",
    "UndeclaredEffectError",
    "UnknownActionError",
    "UnknownVariableError",
    "did_you_mean",
]

import difflib
from collections.abc import Iterable, Sequence
from typing import Any


class FpipeError(Exception):
    """Base class of every error fpipe raises on purpose."""


class PipelineDefinitionError(FpipeError, ValueError):
    """A pipeline was described in a way that cannot run (unknown action, bad argument...)."""


class PipelineCheckError(PipelineDefinitionError):
    """A pipeline's check (``pipeline.check()``, or the one each run makes before its
    first batch) found problems. ``problems`` holds them all (:class:`fpipe.check.Problem`);
    the message shows one per line, each naming the step, the mistake and the fix. The
    first problem's underlying error, if any, is chained as ``__cause__``.
    """

    def __init__(self, problems: Sequence[Any], limit: int = 30) -> None:
        self.problems = tuple(problems)
        n = len(self.problems)
        lines = [f"- {p}" for p in self.problems[:limit]]
        if n > limit:
            lines.append(f"- ... and {n - limit} more (this error's .problems lists them all)")
        super().__init__(
            f"the pipeline has {n} problem{'s' * (n != 1)}, found before any batch ran:\n"
            + "\n".join(lines)
        )
        causes = (getattr(p, "cause", None) for p in self.problems)
        self.__cause__ = next((c for c in causes if c is not None), None)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


class UnknownActionError(PipelineDefinitionError, AttributeError):
    """A pipeline names an action its batch class does not have.

    It is an AttributeError too, so ``hasattr(pipeline, name)`` answers False.
    """


class UndeclaredEffectError(FpipeError):
    """A step classified pure reached the run's environment (variables, models, locks).

    The message names the step and shows the declaration (``@action(effects=True)``)
    that makes it run on the driver, once per batch and in batch order.
    """


class UnknownVariableError(FpipeError, KeyError):
    """A variable was read, set or updated that the pipeline never declared."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class ActionError(FpipeError):
    """A step failed while a batch went through it.

    ``step`` is the step's name, ``position`` its place in the pipeline, ``batch_position``
    the batch's number in the run (0-based) and ``batch_indices`` the ids of its items.
    The original exception is chained as ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str = "",
        position: int = -1,
        batch_position: int = -1,
        batch_indices: object = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.position = position
        self.batch_position = batch_position
        self.batch_indices = batch_indices

    def __reduce__(
        self,
    ) -> tuple[Any, ...]:  # keep the fields when the error crosses a process boundary
        return (
            _rebuild_action_error,
            (self.args[0], self.step, self.position, self.batch_position, self.batch_indices),
        )


def _rebuild_action_error(
    message: str, step: str, position: int, batch_position: int, batch_indices: Any
) -> ActionError:
    return ActionError(
        message,
        step=step,
        position=position,
        batch_position=batch_position,
        batch_indices=batch_indices,
    )


class ImmutableBatchError(FpipeError, AttributeError):
    """Something tried to change a batch in place."""


class ModelError(FpipeError, LookupError):
    """A model could not be defined, found or built."""


class GlobalRandomWarning(UserWarning):
    """An action drew from numpy's global random generator, so the run is not reproducible.

    fpipe checks this on the first batch of each run; use ``batch.random`` instead.
    """


class ResumeError(FpipeError, ValueError):
    """An iteration state does not belong to the pipeline it was given to."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A ' Did you mean ...?' hint for a misspelt ``name``, or ''."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
