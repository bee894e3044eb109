"""IterState: plain data in and out, every field checked, and nothing ever executed."""

from __future__ import annotations

import base64
import json
import os
import pickle

import pytest

from fpipe import Dataset, IterState, ResumeError


def saved(p=None, **kwargs):
    p = p if p is not None else Dataset(10).p.rebatch(4)
    with p.iterate(3, seed=1, **kwargs) as it:
        next(it)
        return it.get_state()


def test_a_state_round_trips_through_json():
    st = saved()
    d = st.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert IterState.from_dict(json.loads(json.dumps(d))) == st
    assert hash(IterState.from_dict(d)) == hash(st)


def test_a_state_is_immutable_data():
    st = saved()
    with pytest.raises(AttributeError):
        st.epoch = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        st.position["skip"] = 0  # type: ignore[index]


class _Attack:
    """Unpickling this runs code: it writes a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_reading_a_crafted_state_never_unpickles_anything(tmp_path):
    target = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(_Attack(str(target)))).decode()
    d = {**saved().to_dict(), "carry": payload}
    with pytest.raises(ValueError, match=r"unknown IterState key\(s\) \['carry'\]"):
        IterState.from_dict(d)
    with pytest.raises(ResumeError, match="carry"):
        Dataset(10).p.rebatch(4).iterate(3, seed=1, state=d)
    assert not target.exists()
    # nor anywhere a state may hold text: identity, merges, position
    for where in ("identity", "position"):
        bad = {**saved().to_dict(), where: {"x": payload, "y": _Attack(str(target))}}
        with pytest.raises(ValueError):
            IterState.from_dict(bad)
    assert not target.exists()
    assert not os.path.exists(str(target))


GOOD = {
    "seed": 1,
    "epoch": 0,
    "batch_in_epoch": 1,
    "iteration": 1,
    "fingerprint": "ab",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": "1"}, "'seed' must be a non-negative int, got '1'"),
        ({"seed": True}, "'seed' must be a non-negative int, got True"),
        ({"epoch": 1.0}, "'epoch' must be a non-negative int, got 1.0"),
        ({"iteration": -1}, "'iteration' must be a non-negative int, got -1"),
        ({"iteration": 2**70}, "'iteration' must be below 2\\*\\*64"),
        ({"fingerprint": 5}, "'fingerprint' must be a str, got 5"),
        ({"fingerprint": "x" * 5000}, "'fingerprint' must be at most 4096 characters"),
        ({"produced": "1"}, "'produced' must be a list"),
        ({"produced": [1, -2]}, "'produced' must be a non-negative int, got -2"),
        ({"produced": [0] * 20}, "'produced' must be a list of at most 16 counts"),
        ({"position": [1]}, "'position' must be a mapping, not list"),
        ({"position": {"epoch": 0}}, "'position' dict lacks key"),
        ({"position": {"epoch": 0, "batch_in_epoch": 0, "iteration": 0, "x": 1}}, "unknown"),
        ({"position": {"from": {}, "skip": 0, "produced": 0}}, r"\['from'\] dict lacks key"),
        (
            {"position": {"epoch": 0, "batch_in_epoch": 0, "iteration": 0, "merges": []}},
            "'merges' must be a mapping",
        ),
        (
            {
                "position": {
                    "epoch": 0,
                    "batch_in_epoch": 0,
                    "iteration": 0,
                    "merges": {"__import__('os')": GOOD},
                }
            },
            "keys are step paths",
        ),
        (
            {
                "position": {
                    "epoch": 0,
                    "batch_in_epoch": 0,
                    "iteration": 0,
                    "merges": {"0.0": {"seed": 1}},
                }
            },
            "merge 0.0 state dict lacks key",
        ),
        ({"identity": "x"}, "'identity' must be a mapping"),
        ({"identity": {"plan": {1: 2}}}, "keys must be str"),
        ({"identity": {"plan": 1 + 2j}}, "holds a complex; only plain JSON data"),
        ({"epok": 0}, "Did you mean 'epoch'"),
    ],
)
def test_every_field_is_checked(change, message):
    with pytest.raises(ValueError, match=message):
        IterState.from_dict({**GOOD, **change})


def test_missing_keys_are_named():
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['iteration', 'fingerprint'\]"):
        IterState.from_dict({"seed": 1, "epoch": 0, "batch_in_epoch": 0})
    with pytest.raises(ValueError, match="must be a mapping, not str"):
        IterState.from_dict("state")  # type: ignore[arg-type]


def test_nesting_is_bounded():
    pos: dict = {"epoch": 0, "batch_in_epoch": 0, "iteration": 0}
    for _ in range(40):
        pos = {"from": pos, "skip": 0, "produced": 0}
    with pytest.raises(ValueError, match="more than 16 nested rebatch stages"):
        IterState.from_dict({**GOOD, "position": pos})
    merged: dict = dict(GOOD)
    for _ in range(40):
        merged = {
            **GOOD,
            "position": {
                "epoch": 0,
                "batch_in_epoch": 0,
                "iteration": 0,
                "merges": {"0.0": merged},
            },
        }
    with pytest.raises(ValueError, match=r"nested deeper than 16|more than 16"):
        IterState.from_dict(merged)
