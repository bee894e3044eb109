"""Checkpoint: make a long run survive a restart.

``pipeline.run(..., checkpoint=Checkpoint(path, every=50))`` saves the iteration
state (seed, epoch, position) and the run's environment (variables and picklable
models) every 50 batches, atomically. When the same run starts again with the same
checkpoint, it resumes after the last saved batch and ends with the same result as
a run that was never interrupted (given actions that are functions of the batch,
``batch.random`` and the environment).

>>> import tempfile, os, numpy as np
>>> from fpipe import Dataset
>>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
>>> p = Dataset(10).p.init_variable("n", 0).update_variable("n", lambda b: len(b), mode="a")
>>> p.run(4, checkpoint=Checkpoint(path, every=1)).get_variable("n")
[4, 4, 2]
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyrsistent import pmap

from .env import Environment
from .errors import FpipeError
from .plan import IterState

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["Checkpoint"]


@dataclass(frozen=True)
class Checkpoint:
    """Where and how often to save a run (``every`` batches); ``models=False`` saves variables only."""

    path: str | os.PathLike[str]
    every: int = 100
    models: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"Checkpoint(every=...) must be a positive int, not {self.every!r}")

    def load(self) -> tuple[IterState, Environment] | None:
        """The saved state and environment, or None if nothing was saved yet."""
        try:
            with open(self.path, "rb") as f:
                saved = pickle.load(f)
        except FileNotFoundError:
            return None
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise FpipeError(
                f"checkpoint {self.path} is corrupt or not an fpipe checkpoint "
                f"({type(exc).__name__}: {exc}); delete it to start the run afresh"
            ) from exc
        if not isinstance(saved, dict) or "state" not in saved or "variables" not in saved:
            raise FpipeError(
                f"checkpoint {self.path} is not an fpipe checkpoint (it holds a "
                f"{type(saved).__name__}, not a dict with 'state' and 'variables'); "
                "delete it to start the run afresh"
            )
        env = Environment(
            variables=pmap(saved["variables"]),
            static=pmap(saved.get("static", {})),
            dynamic=pmap(saved.get("dynamic", {})),
        )
        return IterState.from_dict(saved["state"]), env

    def save(self, state: IterState, env: Environment) -> None:
        """Write ``state`` and ``env`` atomically (a crash leaves the previous save intact)."""
        payload: dict[str, Any] = {"state": state.to_dict(), "variables": dict(env.variables)}
        if self.models:
            payload["static"] = dict(env.static)
            payload["dynamic"] = dict(env.dynamic)
        try:
            data = pickle.dumps(payload)
        except Exception as exc:
            raise FpipeError(
                f"cannot checkpoint the run to {self.path}: {type(exc).__name__}: {exc}. "
                "Keep model weights in pipeline variables (numpy arrays pickle), or pass "
                "Checkpoint(..., models=False) and save the model yourself."
            ) from exc
        import tempfile

        folder = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fpipe-ckpt-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def run(self, pipeline: Pipeline, params: dict[str, Any]) -> Pipeline:
        """Run ``pipeline`` to the end, resuming from and saving to this checkpoint."""
        saved = self.load()
        state, restore = saved if saved is not None else (None, None)
        with pipeline._iterator(params, state=state, restore=restore) as it:
            for k, _ in enumerate(it, start=1):
                if k % self.every == 0:
                    self.save(it.get_state(), it.env)
            self.save(it.get_state(), it.env)
            return it.result()
