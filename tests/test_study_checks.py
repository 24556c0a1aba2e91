"""A tuning study is checked whole when it loads, before any data is read: every `space:` and
`fixed:` key is a config key or a study shorthand, every value the space can produce gives a
valid config, and whatever the YAML, loading ends in a `Study` or a `ConfigError` naming the
study file and the key (hypothesis)."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from shopping_mtl import tuning
from shopping_mtl.config import Config, config_from_dict, load_config, merge
from shopping_mtl.errors import ConfigError
from shopping_mtl.tuning import search as search_lib
from shopping_mtl.tuning.study import DERIVED, search_space

# Few examples, a fixed seed (CI sees the same inputs every run), no example database in the
# repo; a deadline loose enough for a busy two-core machine.
PROPERTY = settings(max_examples=100, deadline=dt.timedelta(seconds=10), derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

STUDY = """\
name: tiny
model: ranking
objective: {metric: ranker/holdout_ndcg@10, direction: max}
oracle: {type: random, seed: 0}
budget: {max_trials: 3}
space:
  ranking.architecture: {values: [shared_bottom, mmoe], role: scientific}
  ranking.dropout: {min: 0.0, max: 0.3, step: 0.1}
  ranking.bottom_width: {values: [16, 32]}
fixed:
  ranking.epochs: 1
"""


def study_file(folder: Path, text: str = STUDY) -> Path:
    path = folder / "study.yaml"
    path.write_text(text)
    return path


def refused(folder: Path, text: str) -> str:
    """The message `load_study` refuses `text` with, the file's folder written as D."""
    with pytest.raises(ConfigError) as raised:
        tuning.load_study(study_file(folder, text))
    message = str(raised.value)
    assert message.startswith(f"{folder / 'study.yaml'}: "), message  # names the study file
    return message.replace(str(folder), "D")


def valid(study, values) -> Config:
    return config_from_dict(merge(Config().to_dict(), tuning.build(study, values))).validate()


@pytest.mark.parametrize("line, message", [
    ("  ranking.dropuot: {min: 0.0, max: 0.3}",
     "D/study.yaml: space.ranking.dropuot: unknown config key 'ranking.dropuot' (did you mean 'ranking.dropout'?)"),
    ("  ranking.dropout.rate: {values: [0.1]}",
     "D/study.yaml: space.ranking.dropout.rate: unknown config key 'ranking.dropout.rate': 'ranking.dropout' is a "
     "setting, not a group of settings, nor a study shorthand"),
    ("  ranking.bottom_wdith: {values: [16]}",
     "D/study.yaml: space.ranking.bottom_wdith: unknown config key 'ranking.bottom_wdith'"),
], ids=["typo", "sub-key of a setting", "shorthand typo"])
def test_an_unknown_space_key_is_refused_at_load(tmp_path, line, message):
    text = STUDY.replace("fixed:", line + "\nfixed:")
    assert refused(tmp_path, text).startswith(message)


def test_an_unknown_fixed_key_is_refused_at_load(tmp_path):
    text = STUDY + "  ranking.compare_single_tsak: false\n"
    assert refused(tmp_path, text).startswith(
        "D/study.yaml: fixed.ranking.compare_single_tsak: unknown config key 'ranking.compare_single_tsak' "
        "(did you mean 'ranking.compare_single_task'?)")


@pytest.mark.parametrize("line, message", [
    ("  ranking.dropout: {min: 0.0, max: 1.5}",
     "D/study.yaml: space.ranking.dropout max 1.5 gives an invalid config: ranking.dropout must be in [0, 1), "
     "got 1.5"),
    ("  ranking.learning_rate: {values: [0.01, -1.0]}",
     "D/study.yaml: space.ranking.learning_rate value -1.0 gives an invalid config: ranking.learning_rate must "
     "be > 0, got -1.0"),
    ("  ranking.loss_weights.sav: {min: 0.5, max: 2.0}",
     "D/study.yaml: space.ranking.loss_weights.sav min 0.5 gives an invalid config: ranking.loss_weights has "
     "unknown key 'sav'; known: click, save, purchase"),
    ("  candidates.quotas.nope: {values: [10, 20]}",
     "D/study.yaml: space.candidates.quotas.nope value 10 gives an invalid config: candidates.quotas has "
     "unknown key 'nope'; known: "),
    ("  ranking.architecture: {values: [mmoe, moe]}",
     "D/study.yaml: space.ranking.architecture value 'moe' gives an invalid config: ranking.architecture is "
     "'moe'; known: shared_bottom, mmoe, ple, esmm"),
    ("  ranking.epochs: {min: 1.0, max: 3.0}",
     "D/study.yaml: space.ranking.epochs min 1.0 gives an invalid config: ranking.epochs must be an integer, "
     "got 1.0"),
    ("  ranking.tower_width: {values: [16.5, 32.5]}",
     "D/study.yaml: space.ranking.tower_width value 16.5 gives an invalid config: study shorthand "
     "ranking.tower_width must be an integer >= 1, got 16.5"),
    ("  ranking.bottom_depth: {min: 1, max: 1000000000}",
     "D/study.yaml: space.ranking.bottom_depth max 1000000000 gives an invalid config: study shorthand "
     "ranking.bottom_depth must be an integer in [0, 16], got 1000000000"),
    ("  ranking.listwise_weight: {values: [0, 0.5]}",
     "D/study.yaml: space.ranking.listwise_weight: Keras Tuner refuses it: A `Choice` can contain only one type "
     "of value"),
    ("  ranking.learning_rate: {min: 0.0, max: 0.01, sampling: log}",
     "D/study.yaml: space.ranking.learning_rate: Keras Tuner refuses it: For HyperParameters.Float"),
], ids=["range end", "choice value", "mapping entry", "source name", "architecture", "float for an int",
        "float shorthand", "depth of a billion layers", "mixed types", "log range from 0"])
def test_a_space_value_that_makes_an_invalid_config_is_refused_at_load(tmp_path, line, message):
    # Replaces the tiny study's own entry of that key (if any) with this one.
    key = line.split(":", 1)[0].strip()
    kept = [row for row in STUDY.splitlines() if not row.startswith(f"  {key}:")]
    text = "\n".join(kept).replace("fixed:", line + "\nfixed:") + "\n"
    assert refused(tmp_path, text).startswith(message)


def test_a_fixed_value_that_makes_an_invalid_config_is_refused_at_load(tmp_path):
    assert refused(tmp_path, STUDY.replace("ranking.epochs: 1", "ranking.epochs: 0")) == (
        "D/study.yaml: fixed.ranking.epochs = 0 gives an invalid config: ranking.epochs must be positive, got 0")


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "D/study.yaml: a study must be a mapping, got ['a', 'b']"),
    (STUDY.replace("budget: {max_trials: 3}", "budget: {max_trials: many}"),
     "D/study.yaml: budget.max_trials must be an integer >= 1, got 'many'"),
    (STUDY.replace("{type: random, seed: 0}", "{type: hyperband, factor: 1}"),
     "D/study.yaml: oracle.factor must be an integer >= 2, got 1"),
    (STUDY.replace("ranking.dropout: {min: 0.0, max: 0.3, step: 0.1}", "ranking.dropout: {min: low, max: 0.3}"),
     "D/study.yaml: space.ranking.dropout needs numbers for min and max, got 'low' and 0.3"),
    (STUDY.replace("ranking.bottom_width: {values: [16, 32]}", "ranking.bottom_width: {values: 16}"),
     "D/study.yaml: space.ranking.bottom_width.values must be a non-empty list, got 16"),
    (STUDY.replace("fixed:\n  ranking.epochs: 1\n", "fixed: [ranking.epochs]\n"),
     "D/study.yaml: fixed must be a mapping, got ['ranking.epochs']"),
    (STUDY.replace("name: tiny", "name: ../elsewhere"),
     "D/study.yaml: name must be a text without '/' (it names the trials' folder), got '../elsewhere'"),
], ids=["not a mapping", "budget", "oracle", "range of text", "values not a list", "fixed not a mapping",
        "name a path"])
def test_a_malformed_study_is_a_config_error_not_a_traceback(tmp_path, text, message):
    assert refused(tmp_path, text) == message


def test_shorthands_in_fixed_become_config_values(tmp_path):
    study = tuning.load_study(study_file(tmp_path, STUDY + "  ranking.tower_width: 8\n"))
    assert tuning.build(study, {})["ranking"]["tower_layers"] == [8]
    config = valid(study, {"ranking.bottom_width": 32})
    assert list(config.ranking.tower_layers) == [8] and list(config.ranking.bottom_layers) == [32, 16]


def test_the_shipped_studies_give_valid_configs_for_every_value():
    """Each shipped study loads, and each value of its space builds a valid config; the
    retrieval study's `hard_negatives: 0` ("off": a Keras Tuner choice cannot hold null) builds
    null, which was refused before."""
    for name in ("ranker", "retrieval"):
        study = tuning.load_study(ROOT / "tuning" / f"{name}.yaml")
        search_space(study)
        for param in study.space:
            for value in param.ends():
                valid(study, {param.name: value})
    assert valid(study, {"retrieval.hard_negatives": 0}).retrieval.hard_negatives is None
    assert valid(study, {"retrieval.hard_negatives": 4}).retrieval.hard_negatives == 4


def test_the_study_is_checked_against_the_runs_own_config(tmp_path):
    # Valid only where the run's cut-offs fit the list size the study fixes.
    path = study_file(tmp_path, STUDY + "  evaluation.list_size: 20\n")
    with pytest.raises(ConfigError, match="evaluation.ks goes up to 100 but evaluation.list_size is 20"):
        tuning.load_study(path)
    base = load_config(overrides={"evaluation": {"ks": [10, 20]}}, with_dataset_defaults=False)
    assert tuning.load_study(path, base=base).fixed["evaluation.list_size"] == 20


def test_a_search_with_a_bad_study_stops_before_any_data_is_read(tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the search prepared a run folder or ran a stage before checking its study")

    monkeypatch.setattr(search_lib.pipeline, "prepare_state", no_work)
    monkeypatch.setattr(search_lib.pipeline, "run_stage", no_work)
    config = load_config(overrides={"run_dir": str(tmp_path / "run"), "tracking": {"enabled": False}})
    bad = study_file(tmp_path, STUDY.replace("ranking.dropout:", "ranking.dropuot:"))
    with pytest.raises(ConfigError, match=r"study.yaml: space.ranking.dropuot: unknown config key 'ranking.dropuot'"):
        tuning.run_search(config, bad, final_run=False)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Fuzz: whatever the YAML, a Study (whose every value gives a valid config) or a ConfigError


SETTINGS = ["ranking.dropout", "ranking.learning_rate", "ranking.batch_size", "ranking.architecture",
            "ranking.loss_weights.save", "ranking.bottom_layers", "ranking.epochs", "ranking.value_weights",
            "retrieval.temperature", "retrieval.hard_negatives", "retrieval.embedding_dim",
            "candidates.quotas.covisit", "evaluation.list_size", "ranking", "ranking.dropout.x", *DERIVED]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 600), st.integers(),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(-1, 2), st.text(max_size=6),
                    st.sampled_from(["mmoe", "log", "linear", "nuisance", "scientific", "random", "hyperband"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)
GOOD_PARAM = st.one_of(
    st.fixed_dictionaries({"values": st.lists(st.integers(-2, 600), min_size=1, max_size=3)}),
    st.fixed_dictionaries({"values": st.lists(st.floats(-1, 2), min_size=1, max_size=3)}),
    st.fixed_dictionaries({"values": st.lists(st.sampled_from(["mmoe", "esmm", "lambda", "x"]), min_size=1,
                                              max_size=2)},
                          optional={"role": st.sampled_from(["scientific", "nuisance"])}),
    st.fixed_dictionaries({"min": st.integers(-2, 8), "max": st.integers(-2, 600)},
                          optional={"step": st.integers(-1, 3)}),
    st.fixed_dictionaries({"min": st.floats(-1, 1), "max": st.floats(0, 2)},
                          optional={"sampling": st.sampled_from(["linear", "log"]), "step": st.floats(0, 0.5)}),
)
ANY_PARAM = st.one_of(
    st.fixed_dictionaries({"values": VALUES}, optional={"role": SCALARS}),
    st.fixed_dictionaries({"min": SCALARS, "max": SCALARS},
                          optional={"step": SCALARS, "sampling": SCALARS, "default": SCALARS}),
    VALUES,
)
KEYS = st.one_of(st.sampled_from(SETTINGS), st.sampled_from(SETTINGS), st.text(max_size=12))


def well_formed(model: str):
    """A study of `model` whose parts are mostly well-formed, with a few bad ones (each a way in
    deeper than the first check)."""
    own = st.sampled_from([k for k in SETTINGS if k.startswith((f"{model}.", "candidates."))])
    param = st.one_of(GOOD_PARAM, GOOD_PARAM, GOOD_PARAM, ANY_PARAM)
    rare = st.one_of(st.none(), SCALARS)  # mostly left out or null, sometimes wrong
    return st.fixed_dictionaries(
        {"model": st.just(model),
         "space": st.dictionaries(st.one_of(own, own, own, KEYS), param, min_size=1, max_size=3)},
        optional={"name": st.one_of(st.from_regex(r"\A[a-z_]{1,8}\Z"), st.from_regex(r"\A[a-z_]{1,8}\Z"), SCALARS),
                  "objective": st.fixed_dictionaries({"direction": st.sampled_from(["max", "min"])},
                                                     optional={"metric": st.one_of(st.just("m"), rare)}),
                  "oracle": st.fixed_dictionaries({"type": st.sampled_from(["random", "bayesian", "hyperband"])},
                                                  optional={"seed": st.one_of(st.integers(0, 3), rare),
                                                            "factor": st.one_of(st.integers(1, 4), rare)}),
                  "budget": st.fixed_dictionaries({"max_trials": st.one_of(st.integers(0, 30), rare)}),
                  "fixed": st.dictionaries(st.one_of(own, KEYS), st.one_of(st.integers(0, 200), SCALARS, VALUES),
                                           max_size=2)})


STUDIES = st.sampled_from(["ranking", "retrieval"]).flatmap(well_formed)
MALFORMED = st.one_of(VALUES, st.dictionaries(st.sampled_from(["model", "space", "fixed", "oracle", "budget", "name",
                                                               "objective", "extra"]), VALUES, max_size=4))


@PROPERTY
@given(raw=st.one_of(STUDIES, STUDIES, MALFORMED))
@example(raw={"model": "retrieval", "space": {"retrieval.tower_depth": {"min": 0, "max": 2}},
              "fixed": {"retrieval.tower_width": 16}})
@example(raw={"model": "ranking", "space": {"ranking.dropout": {"min": "low", "max": 1}}})
@example(raw={"model": "ranking", "space": {"ranking.bottom_width": {"values": ["wide"]}}})
@example(raw={"model": "ranking", "space": {"ranking.dropout": 0.1}})
@example(raw={"model": "ranking", "space": {"ranking.dropout": {"values": [0.1]}}, "fixed": {"ranking": 5}})
def test_fuzz_a_study_ends_in_a_checked_study_or_a_config_error(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "study.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        try:
            study = tuning.load_study(path)
        except ConfigError as err:
            assert str(err).startswith(str(path)), err  # names the study file
            return
    # What loaded, the search can declare and every value it checked builds a valid config.
    search_space(study)
    for param in study.space:
        for value in param.ends():
            valid(study, {param.name: value})
