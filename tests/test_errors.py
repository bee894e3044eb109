"""Error classes: hierarchy, did_you_mean hints and ActionError's fields and pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import fpipe
from fpipe import (
    ActionError,
    Batch,
    Dataset,
    FpipeError,
    ImmutableBatchError,
    ModelError,
    Pipeline,
    PipelineDefinitionError,
    ResumeError,
    action,
)
from fpipe.errors import did_you_mean


class ErrNums(Batch):
    @action
    def explode(self):
        raise ZeroDivisionError("division went wrong")

    @action
    def keep(self):
        return self


# -- hierarchy -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (PipelineDefinitionError, ValueError),
        (ImmutableBatchError, AttributeError),
        (ModelError, LookupError),
        (ResumeError, ValueError),
        (ActionError, Exception),
    ],
)
def test_every_error_is_an_fpipe_error_and_the_matching_builtin(cls, builtin):
    assert issubclass(cls, FpipeError)
    assert issubclass(cls, builtin)
    assert issubclass(FpipeError, Exception)


def test_error_classes_are_exported_from_the_package():
    for name in fpipe.errors.__all__:
        if name != "did_you_mean":
            assert getattr(fpipe, name) is getattr(fpipe.errors, name)


def test_existing_except_clauses_still_catch_fpipe_errors():
    b = ErrNums(np.arange(2), preloaded=np.zeros(2))
    with pytest.raises(AttributeError, match="Batches are immutable"):
        b.data = np.ones(2)
    with pytest.raises(ValueError, match="has no action 'kep'"):
        Pipeline().kep() << Dataset(2, ErrNums)


@pytest.mark.parametrize("cls", [FpipeError, PipelineDefinitionError, ModelError, ResumeError])
def test_simple_errors_pickle_with_their_message(cls):
    err = pickle.loads(pickle.dumps(cls("what went wrong")))
    assert type(err) is cls
    assert str(err) == "what went wrong"


# -- did_you_mean ------------------------------------------------------------------------------
def test_did_you_mean_suggests_the_closest_name():
    assert did_you_mean("imgaes", ["images", "labels"]) == " Did you mean 'images'?"


def test_did_you_mean_lists_up_to_three_candidates():
    hint = did_you_mean("scale", ["scale1", "scale2", "scale3", "scale4", "other"])
    assert hint.startswith(" Did you mean ")
    assert hint.count(" or ") == 2
    assert "'other'" not in hint


def test_did_you_mean_is_empty_without_a_close_name():
    assert did_you_mean("zzz", ["images", "labels"]) == ""
    assert did_you_mean("images", []) == ""


def test_did_you_mean_accepts_any_iterable():
    assert did_you_mean("lables", (n for n in ["labels"])) == " Did you mean 'labels'?"


def test_unknown_action_error_uses_did_you_mean():
    with pytest.raises(PipelineDefinitionError, match=r"no action 'kep'\. Did you mean 'keep'\?"):
        Pipeline().kep() << Dataset(2, ErrNums)


# -- ActionError -----------------------------------------------------------------------------------
def test_action_error_defaults():
    err = ActionError("boom")
    assert str(err) == "boom"
    assert (err.step, err.position, err.batch_position, err.batch_indices) == ("", -1, -1, None)


def test_action_error_pickles_with_its_fields():
    err = ActionError(
        "step failed", step="scale(2)", position=3, batch_position=7, batch_indices=[4, 5]
    )
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ActionError
    assert str(back) == "step failed"
    assert (back.step, back.position, back.batch_position, back.batch_indices) == (
        "scale(2)",
        3,
        7,
        [4, 5],
    )


def test_action_error_from_a_run_says_what_where_and_why():
    ds = Dataset(7, ErrNums, preloaded=np.zeros(7))
    with pytest.raises(ActionError) as info:
        (Pipeline().keep().explode() << ds).run(6, shuffle=False)
    err = info.value
    msg = str(err)
    assert msg.startswith(
        "step 1 `explode()` failed on batch #0 (epoch 0, 6 items: 0, 1, 2, 3, 4, ...)"
    )
    assert msg.endswith("ZeroDivisionError: division went wrong")
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert err.batch_indices.tolist() == [0, 1, 2, 3, 4, 5]
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == msg
    assert back.step == "explode()" and back.position == 1 and back.batch_position == 0
    np.testing.assert_array_equal(back.batch_indices, err.batch_indices)
