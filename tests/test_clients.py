"""The serving clients' request builder (`examples/recommend_request.py`): every input of the
model's signature, the caller's values where given, the documented missing value elsewhere.
The clients themselves answer against exports in tests/test_serving.py and, on EComm's export
with its user features, tests/test_pipeline.py."""

from __future__ import annotations

import math
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "examples"))  # the examples are scripts, not a package
from recommend_request import RequestError, parse_features, parse_history, request_inputs  # noqa: E402

SIGNATURE = {"user_id": "string", "gender": "string", "income": "float32", "history_item_ids": "string",
             "history_events": "string", "history_timestamps": "int64", "timestamp": "int64"}


def test_every_input_of_the_signature_is_filled():
    inputs = request_inputs(SIGNATURE, "u1", [("i9", "click", 100), ("i3", "save", 90)], 200, {"income": "52.5"})
    assert set(inputs) == set(SIGNATURE)
    assert inputs["user_id"] == ["u1"] and inputs["timestamp"] == [200]
    assert inputs["history_item_ids"] == [["i9", "i3"]] and inputs["history_events"] == [["click", "save"]]
    assert inputs["history_timestamps"] == [[100, 90]]
    assert inputs["income"] == [52.5] and inputs["gender"] == [""]  # a feature not given: missing


def test_a_user_without_history_or_features_sends_missing_values():
    inputs = request_inputs(SIGNATURE, "new", [], 200)
    assert inputs["history_item_ids"] == [[""]] and inputs["history_timestamps"] == [[0]]
    assert math.isnan(inputs["income"][0]) and inputs["gender"] == [""]


def test_bad_values_are_refused_naming_them():
    with pytest.raises(RequestError, match="the model has no input shoe_size; its user features: gender, income"):
        request_inputs(SIGNATURE, "u1", [], 200, {"shoe_size": "42"})
    with pytest.raises(RequestError, match="income='abc': the model takes a number"):
        request_inputs(SIGNATURE, "u1", [], 200, {"income": "abc"})
    with pytest.raises(RequestError, match="'i1:view:5' is not item:event:unix_seconds\\[:session\\]"):
        parse_history("i1:view:5")
    with pytest.raises(RequestError, match="--feature 'gender' is not name=value"):
        parse_features(["gender"])
    assert parse_history("a:b:click:5, c:purchase:4") == [("a:b", "click", 5, ""), ("c", "purchase", 4, "")]


def test_a_history_may_name_each_events_session():
    history = parse_history("i9:click:100:s2, i3:save:90:s1, a:b:click:80")
    assert history == [("i9", "click", 100, "s2"), ("i3", "save", 90, "s1"), ("a:b", "click", 80, "")]
    signature = {**SIGNATURE, "history_sessions": "string"}
    inputs = request_inputs(signature, "u1", history, 200)
    assert inputs["history_sessions"] == [["s2", "s1", ""]] and inputs["history_item_ids"] == [["i9", "i3", "a:b"]]
    assert "history_sessions" not in request_inputs(SIGNATURE, "u1", history, 200)  # a spec without sessions
