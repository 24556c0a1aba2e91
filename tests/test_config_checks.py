"""Nonsense refused: every range a setting's docstring gives is checked when the config loads,
naming the dotted key, the value and what is allowed; a fit whose loss runs away stops the run
with `TrainingDiverged` naming the settings to look at; and no YAML or `--set` value makes the
config loader end in anything but a valid `Config` or a `ConfigError` (hypothesis)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import tempfile
import types
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import train
from conftest import tiny_log
from shopping_mtl import config as config_lib, training
from shopping_mtl.candidates.config import BaselineConfig, CandidateConfig
from shopping_mtl.config import Config, config_from_dict, load_config, parse_override
from shopping_mtl.errors import ConfigError, TrainingDiverged
from shopping_mtl.features import FeatureSet, FeatureSpec
from shopping_mtl.ranking import examples, model as model_lib
from shopping_mtl.ranking.config import RankingConfig
from shopping_mtl.retrieval.config import RetrievalConfig

# Few examples, a fixed seed (CI sees the same inputs every run), no example database in the
# repo; a deadline loose enough for a busy two-core machine.
PROPERTY = settings(max_examples=100, deadline=dt.timedelta(seconds=10), derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def load(*texts: str) -> Config:
    """The config `train.py --set TEXT ...` would load (without the dataset spec's defaults)."""
    overrides: dict = {}
    for text in texts:
        overrides = config_lib.merge(overrides, parse_override(text))
    return load_config(overrides=overrides, with_dataset_defaults=False)


# --------------------------------------------------------------------------------------------
# Ranges, checked at load


# (a value just inside the range, one just outside, what the message must say)
RANGES = [
    ("ranking.learning_rate", "1e-9", "-1", "ranking.learning_rate must be > 0, got -1.0"),
    ("ranking.learning_rate", "0.5", "0", "ranking.learning_rate must be > 0, got 0.0"),
    ("retrieval.learning_rate", "0.5", ".inf", "retrieval.learning_rate must be a finite number, got inf"),
    ("ranking.learning_rate", "0.5", ".nan", "ranking.learning_rate must be a finite number, got nan"),
    ("retrieval.temperature", "0.01", ".nan", "retrieval.temperature must be a finite number, got nan"),
    ("ranking.bottom_layers", "[64, 1]", "[64, 0]", "ranking.bottom_layers must be positive widths, got [64, 0]"),
    ("ranking.expert_layers", "[1]", "[-8]", "ranking.expert_layers must be positive widths, got [-8]"),
    ("ranking.tower_layers", "[]", "[0]", "ranking.tower_layers must be positive widths, got [0]"),
    ("retrieval.tower_layers", "[1, 2]", "[0]", "retrieval.tower_layers must be positive widths, got [0]"),
    ("ranking.loss_weights.save", "0", "-1", "ranking.loss_weights.save must be >= 0, got -1.0"),
    ("ranking.value_weights.purchase", "0.5", "-2", "ranking.value_weights.purchase must be >= 0, got -2.0"),
    ("ranking.value_weights", "{click: 1}", "{click: 0}",
     "ranking.value_weights must give some task a weight > 0 (or be null: chosen on the held-out users), "
     "got {'click': 0.0}"),
    ("retrieval.event_weights.save", "0", "-1", "retrieval.event_weights.save must be >= 0, got -1.0"),
    ("retrieval.event_weights", "{click: 0, save: 0, purchase: 1}", "{click: 0, save: 0, purchase: 0}",
     "retrieval.event_weights must give some event type a weight > 0 (all pairs would weigh 0), "
     "got {'click': 0.0, 'save': 0.0, 'purchase': 0.0}"),
    ("baselines.event_weights.click", "0", "-0.5", "baselines.event_weights.click must be >= 0, got -0.5"),
    ("baselines.covisit_recent_items", "1", "0", "baselines.covisit_recent_items must be positive, got 0"),
    ("baselines.covisit_max_session_items", "1", "-3", "baselines.covisit_max_session_items must be positive, got -3"),
    ("baselines.covisit_decay", "1", "0", "baselines.covisit_decay must be in (0, 1] (1: all seeds alike), got 0.0"),
    ("baselines.covisit_decay", "0.01", "1.5",
     "baselines.covisit_decay must be in (0, 1] (1: all seeds alike), got 1.5"),
    ("baselines.history_half_life_days", "0.01", "0", "baselines.history_half_life_days must be > 0, got 0.0"),
    ("split.min_days", "3", "2", "split.min_days must be >= 3 (a calendar split needs a train, a validation and "
     "a test day), got 2"),
    ("evaluation.bootstrap_seed", "0", "-1", "evaluation.bootstrap_seed must be >= 0, got -1"),
    ("seed", "0", "-1", "seed must be in [0, 4294967295] (numpy's seed range), got -1"),
    ("seed", "4294967295", "4294967296", "seed must be in [0, 4294967295] (numpy's seed range), got 4294967296"),
]


@pytest.mark.parametrize("key, inside, outside, message", RANGES, ids=[f"{r[0]}={r[2]}" for r in RANGES])
def test_a_setting_out_of_its_range_fails_at_load_naming_key_value_and_range(key, inside, outside, message):
    load(f"{key}={inside}")  # the edge of the range is allowed
    with pytest.raises(ConfigError) as raised:
        load(f"{key}={outside}")
    assert str(raised.value) == message


def test_the_cli_refuses_a_negative_learning_rate_before_any_work(capsys, tmp_path):
    code = train.main(["--run-dir", str(tmp_path / "run"), "--set", "ranking.learning_rate=-1"])
    assert code == 2
    err = capsys.readouterr().err
    # The last line, with no traceback (progress lines such as the spec's may come before it).
    assert err.strip().splitlines()[-1] == "error: ranking.learning_rate must be > 0, got -1.0"
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


CONFIG_CLASSES = {"": Config, "data": config_lib.DataConfig, "split": config_lib.SplitConfig,
                  "evaluation": config_lib.EvaluationConfig, "export": config_lib.ExportConfig,
                  "tracking": config_lib.TrackingConfig, "baselines": BaselineConfig,
                  "retrieval": RetrievalConfig, "candidates": CandidateConfig, "ranking": RankingConfig}
# A stated range: "> 0", ">= 1", "< 1", "in (0, 1]", "in [0, 1)", "0 .. 2**32 - 1".
STATED_RANGE = re.compile(r"[<>]=? ?-?\d|\bin [(\[]\d|\d \.\. \d")


def docstring_entries(cls) -> dict[str, str]:
    """The class docstring's `Args:` entries (name -> text) and, for a docstring without
    `Args:`, its body as one entry."""
    doc = cls.__doc__ or ""
    if "Args:" not in doc:
        return {cls.__name__: doc}
    entries: dict[str, str] = {}
    name = None
    for line in doc.split("Args:", 1)[1].splitlines():
        found = re.match(r"^ {8}(\w[\w, ]*):(.*)$", line)
        if found:
            name = found.group(1)
            entries[name] = found.group(2)
        elif name is not None:
            entries[name] += " " + line.strip()
    return entries


def test_every_range_a_docstring_states_is_checked():
    """The docstrings are the contract: a range they state is one `validate` enforces."""
    unchecked = []
    for group, cls in CONFIG_CLASSES.items():
        for name, text in docstring_entries(cls).items():
            if "not checked" in text or (STATED_RANGE.search(text) and "checked" not in text):
                unchecked.append(f"{group}: {name}")
    assert not unchecked


def test_the_defaults_are_unchanged_and_valid_for_every_bundled_dataset():
    assert Config().validate() == Config()
    ranking, retrieval, baselines = RankingConfig(), RetrievalConfig(), BaselineConfig()
    assert (ranking.learning_rate, ranking.dropout, ranking.loss_weights, ranking.value_weights) == (
        0.002, 0.1, {"click": 1.0, "save": 1.0, "purchase": 1.0}, None)
    assert (retrieval.learning_rate, retrieval.temperature, retrieval.tower_layers) == (0.003, 0.2, ())
    assert (baselines.covisit_decay, baselines.history_half_life_days, Config().split.min_days) == (0.9, 1.0, 3)
    for dataset in ("ecomm", "taobao", "taobao_timeslice"):
        load_config(overrides={"data": {"dataset": dataset}})
    # Refused before: a `data:` that is no mapping broke the dataset lookup with a traceback.
    with pytest.raises(ConfigError, match=r"^data must be a mapping, got 5$"):
        load_config(overrides={"data": 5})


# --------------------------------------------------------------------------------------------
# Divergence


def test_check_divergence_on_a_fake_history():
    hint = "ranking.learning_rate, ranking.batch_size"
    training.check_divergence([2.0, 1.5, 1.0], hint)  # a sound fit
    training.check_divergence([0.5, 50.0], hint)  # exactly 100 times: not past it
    training.check_divergence([-1.0, 5.0, 80.0], hint)  # a first loss below 0 gives no scale
    training.check_divergence([], hint)
    with pytest.raises(TrainingDiverged) as raised:
        training.check_divergence([0.5, 40.0, 50.5], hint)
    assert str(raised.value) == (
        "training diverged: epoch 3's loss 50.5 is over 100 times epoch 1's (0.5); the run stops before "
        "anything is exported. Look at ranking.learning_rate, ranking.batch_size (a smaller learning rate "
        "usually helps)")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(TrainingDiverged, match=rf"epoch 5's loss is {bad}; .* Look at ranking.learning_rate"):
            training.check_divergence([2.0, 1.5, 1.0, bad], hint, first_epoch=2)
    with pytest.raises(TrainingDiverged, match="epoch 7's loss is nan; .* Look at the learning rate"):
        training.check_divergence([float("nan")], first_epoch=7)


def test_the_divergence_callback_compares_with_the_first_epoch_of_a_resumed_fit():
    check = training.DivergenceCheck("retrieval.learning_rate")
    check.on_epoch_end(0, {"loss": 2.0})
    check.on_epoch_end(1, {"val_loss": 1e9})  # no training loss logged: nothing to judge
    check.on_epoch_end(2, {"loss": 150.0})
    with pytest.raises(TrainingDiverged, match=r"epoch 4's loss 201 is over 100 times epoch 1's \(2\)"):
        check.on_epoch_end(3, {"loss": 201.0})
    # Resumed at epoch 3 (0-based 2): the state's history holds epochs 1 and 2.
    state = types.SimpleNamespace(history={"loss": [1.0, 0.9]})
    resumed = training.DivergenceCheck("ranking.learning_rate", state=state)
    with pytest.raises(TrainingDiverged, match=r"epoch 3's loss 150 is over 100 times epoch 1's \(1\); .*ranking"):
        resumed.on_epoch_end(2, {"loss": 150.0})


@pytest.fixture(scope="module")
def tiny_ranker_inputs():
    """A few hundred labelled ranker rows on a tiny log, one list per user (as tests/test_ranking.py)."""
    events, items = tiny_log()
    spec = FeatureSpec.from_dict({"user": {"user_id": {"type": "id"}},
                                  "item": {"item_id": {"type": "id"}, "category": {"type": "categorical"}},
                                  "context": ["hour"]})
    features = FeatureSet.adapt(spec, events, items=items)
    rng = np.random.default_rng(1)
    n = 256
    rows = pd.DataFrame({"user_id": [f"u{i}" for i in rng.integers(0, 40, n)],
                         "item_id": [f"i{i}" for i in rng.integers(0, 60, n)],
                         "two_tower_score": rng.random(n).astype(np.float32)})
    click = rng.random(n) < 0.3
    rows["click"] = click.astype(np.float32)
    rows["save"] = (click & (rng.random(n) < 0.4)).astype(np.float32)
    rows["purchase"] = (click & (rng.random(n) < 0.2)).astype(np.float32)
    arrays = examples.ranking_inputs(rows, events, events["timestamp"].max() + pd.Timedelta(hours=1), None, items,
                                     features, history_length=10)
    arrays["list_id"] = pd.factorize(pd.Series(arrays["user_id"]))[0].astype(np.int64)
    return features, arrays


@pytest.mark.parametrize("learning_rate, symptom", [
    (-1.0, r"epoch \d's loss [\d.e+]+ is over 100 times epoch 1's"),  # the case: ascent
    (1e6, r"epoch \d's loss is nan"),  # steps so large the weights overflow
])
def test_a_ranker_whose_loss_runs_away_stops_naming_its_learning_rate(tiny_ranker_inputs, tmp_path, learning_rate,
                                                                     symptom):
    features, arrays = tiny_ranker_inputs
    # Built in code, so not validated: the fit itself must stop what a config check would miss.
    config = RankingConfig(bottom_layers=(16,), tower_layers=(8,), epochs=4, patience=4, batch_size=64,
                           listwise_weight=1.0, learning_rate=learning_rate)
    with pytest.raises(TrainingDiverged, match=symptom) as raised:
        model_lib.train_ranker(features, arrays, arrays, config, seed=0, backup_dir=tmp_path / "backup")
    assert "Look at ranking.learning_rate, ranking.batch_size" in str(raised.value)
    assert not (tmp_path / "backup").exists()  # a rerun with other settings starts afresh


# --------------------------------------------------------------------------------------------
# Fuzz: whatever the YAML, a valid Config or a ConfigError


def config_keys() -> list[str]:
    """Every dotted key of `Config` (groups and settings), and an entry of each mapping setting;
    not `data.dataset`, whose spec lookup is the spec loader's to fuzz."""
    keys = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            key = f"{prefix}{field.name}"
            keys.append(key)
            hint = hints[field.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{key}.")
            elif "Mapping" in str(hint):
                keys.extend(f"{key}.{entry}" for entry in ("click", "save", "purchase", "two_tower", "bogus"))

    walk(Config, "")
    return [k for k in keys if k != "data.dataset"]


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 2), st.text(max_size=8), st.sampled_from(["mmoe", "lambda", "fixed", "auto", "10,20", "2019-06-18"]),
    st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2030, 1, 1)),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)
KEYS = st.one_of(st.sampled_from(config_keys()), st.text(max_size=10), st.integers(-2, 2))


def nest(pairs) -> dict:
    """Dotted key -> value pairs as a nested mapping; a later key replaces what is in its way."""
    out: dict = {}
    for key, value in pairs:
        *parents, last = key.split(".") if isinstance(key, str) else [key]
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return out


def numbers(value):
    if isinstance(value, dict):
        for inner in value.values():
            yield from numbers(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from numbers(inner)
    elif isinstance(value, float):
        yield value


def assert_valid(config) -> None:
    assert isinstance(config, Config)
    assert config_from_dict(config.to_dict()).validate() == config  # what config.yaml records loads again
    assert all(math.isfinite(x) for x in numbers(config.to_dict()))  # NaN passes every range check


@PROPERTY
@given(pairs=st.lists(st.tuples(KEYS, VALUES), max_size=6), spec_defaults=st.booleans())
@example(pairs=[("data", 5)], spec_defaults=True)  # was an AttributeError
@example(pairs=[("ranking.dropout", float("nan"))], spec_defaults=False)  # was loaded
def test_fuzz_the_config_file_ends_in_a_config_or_a_config_error(pairs, spec_defaults):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(nest(pairs), sort_keys=False))
        try:
            config = load_config(path, with_dataset_defaults=spec_defaults)
        except ConfigError as err:
            assert str(err)
            return
    assert_valid(config)


@PROPERTY
@given(key=st.one_of(st.sampled_from(config_keys()), st.text(max_size=12)),
       raw=st.one_of(st.text(max_size=20), VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip())))
@example(key="data", raw="[ecomm]")  # was an AttributeError
@example(key="retrieval.learning_rate", raw=".inf")  # was loaded
def test_fuzz_a_set_flag_ends_in_a_config_or_a_config_error(key, raw):
    try:  # as train.py loads it, the dataset spec's defaults included
        config = load_config(overrides=parse_override(f"{key}={raw}"))
    except ConfigError as err:
        assert str(err)
        return
    assert_valid(config)
