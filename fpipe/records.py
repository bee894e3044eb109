"""What a run recorded: the layer of a pipeline that holds the profile and the history
of the run that returned it.

A run's records are not part of the pipeline's value: ``==``, hash and pickling ignore
them, and a pipeline derived from a result (every method makes a new one) has none. Only
the pipeline that ``run()`` (or ``epochs()``) returns carries them.

>>> from fpipe import Dataset
>>> p = Dataset(4).p.init_variable("n", []).update_variable("n", lambda b: len(b), mode="a")
>>> result = p.run(2, profile=True)
>>> result.profile.step("1").calls, result == p.run(2)
(2, True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from .algebra import PipelineValue
from .env import Environment
from .errors import FpipeError

if TYPE_CHECKING:
    from .plot import History
    from .profile import Profile

__all__ = ["RunRecords"]

_R = TypeVar("_R", bound="RunRecords")


class RunRecords(PipelineValue):
    """A pipeline value with the records of the run that made it (see the module docs)."""

    # never part of the value: ==, hash and pickling ignore them
    __slots__ = ("_history", "_profile")

    def _with_run(
        self: _R, env: Environment, profile: Profile | None, history: History | None
    ) -> _R:
        """This pipeline holding ``env``, the final environment of a run of it, and the
        run's records (not part of the value: see ``__slots__``)."""
        out = self._with_env(env)
        object.__setattr__(out, "_profile", profile)
        object.__setattr__(out, "_history", history)
        return out

    # -- what a run recorded ----------------------------------------------------------------
    @property
    def profile(self) -> Profile:
        """Where the time of the run that returned this pipeline went, step by step
        (:class:`~fpipe.profile.Profile`): a record of that run, not part of the value.

        >>> from fpipe import Dataset
        >>> Dataset(4).p.apply(lambda b: b).run(2, profile=True).profile.step("0").calls
        2
        """
        profile = getattr(self, "_profile", None)
        if profile is None:
            raise FpipeError(
                "this pipeline has no profile: only the pipeline that run(..., "
                "profile=True) (or epochs(..., profile=True)) returns has one. A profile is "
                "a record of the run, not part of the pipeline's value, so a pipeline "
                "derived from a result, copied or unpickled has none; "
                "iterate(..., profile=True) gives iterator.profile."
            )
        return profile

    def plot(
        self, *names: str, per: str = "batch", smooth: float | None = None, ax: Any = None
    ) -> Any:
        """Draw variables of the run that returned this pipeline over its batches, or
        per epoch (``per="epoch"``); return the matplotlib Figure (needs matplotlib, the
        ``plot`` extra). See :func:`fpipe.plot.plot_variables` for ``smooth`` and ``ax``.

        >>> from fpipe import Dataset
        >>> p = Dataset(6).p.init_variable("n", []).update_variable("n", lambda b: len(b), mode="a")
        >>> fig = p.run(4).plot("n")
        >>> fig.axes[0].lines[0].get_ydata().tolist()
        [4.0, 2.0]
        """
        from .plot import plot_variables

        env = self.result_env
        if env is None:
            raise FpipeError(
                "plot(): this pipeline holds no run's results; plot what a run returns, "
                "e.g. `pipeline.run(32).plot('loss')`"
            )
        history = getattr(self, "_history", None)
        return plot_variables(env.variables, names, history, per=per, smooth=smooth, ax=ax)
