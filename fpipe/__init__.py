"""fpipe: a functional, immutable pipeline DSL for ML data processing and training.

>>> import numpy as np
>>> from fpipe import Batch, Dataset, Pipeline, action
>>> class Scaled(Batch):
...     @action
...     def scale(self, k):
...         return self.replace(data=self.data * k)
>>> ds = Dataset(4, Scaled, preloaded=np.arange(4.0))
>>> [b.data.tolist() for b in (Pipeline().scale(2) << ds).gen_batch(2)]
[[0.0, 2.0], [4.0, 6.0]]
"""

from .actions import action
from .batch import Batch, SkipBatch
from .checkpoint import Checkpoint
from .dataset import Dataset
from .env import Environment
from .errors import (
    ActionError,
    FpipeError,
    GlobalRandomWarning,
    ImmutableBatchError,
    ModelError,
    PipelineCheckError,
    PipelineDefinitionError,
    ResumeError,
    UndeclaredEffectError,
    UnknownActionError,
    UnknownVariableError,
)
from .executors import DaskExecutor, Executor, ProcessExecutor, ThreadExecutor
from .expressions import B, C, F, I, R, V
from .files import FilesIndex
from .index import DatasetIndex
from .iterator import PipelineIterator
from .models import model
from .parallel import inbatch_parallel
from .pipeline import Pipeline
from .plan import BatchPlan
from .profile import Profile
from .progress import Bar
from .state import IterState

__version__ = "0.1.0"

__all__ = [
    "ActionError",
    "B",
    "Bar",
    "Batch",
    "BatchPlan",
    "C",
    "Checkpoint",
    "DaskExecutor",
    "Dataset",
    "DatasetIndex",
    "Environment",
    "Executor",
    "F",
    "FilesIndex",
    "FpipeError",
    "GlobalRandomWarning",
    "I",
    "ImmutableBatchError",
    "IterState",
    "ModelError",
    "Pipeline",
    "PipelineCheckError",
    "PipelineDefinitionError",
    "PipelineIterator",
    "ProcessExecutor",
    "Profile",
    "R",
    "ResumeError",
    "SkipBatch",
    "ThreadExecutor",
    "UndeclaredEffectError",
    "UnknownActionError",
    "UnknownVariableError",
    "V",
    "action",
    "inbatch_parallel",
    "model",
]
