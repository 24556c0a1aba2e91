"""A run's data as an MLflow dataset input: `dataset_input(info, metrics)`.

Metadata only (the data is never copied): the name, a digest (the data fingerprint), the source
(the spec) and a profile of counts the MLflow UI shows beside the dataset.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils import validation
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

# MLflow keeps at most 36 characters of a dataset digest; the data fingerprint is a SHA-256 (64).
MAX_DATASET_DIGEST = validation.MAX_DATASET_DIGEST_SIZE
# The run's figures (`state.metrics` after the data stage) that a dataset input's profile holds,
# as profile key -> metric name.
PROFILE_METRICS = {
    "events": "data/events_used",
    "users": "data/distinct_users",
    "items": "data/distinct_items",
    "events_in_log": "data/events",
    "train_events": "split/train_events",
    "validation_events": "split/validation_events",
    "test_events": "split/test_events",
    "test_users": "eval/test_users",
}


class SpecSource(DatasetSource):
    """Where a dataset comes from: its spec file (or data folder), as MLflow's `local` source
    type with `{"uri": <path>}`. Written here rather than resolved through MLflow's registry,
    which warns that a local path matches two registered sources."""

    def __init__(self, uri: str):
        self.uri = str(uri)

    @staticmethod
    def _get_source_type() -> str:
        return "local"

    def load(self) -> str:
        """The path itself: the spec is read by the project's readers, not by MLflow."""
        return self.uri

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # never picked by MLflow's source registry: built explicitly

    @classmethod
    def _resolve(cls, raw_source: Any) -> "SpecSource":
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> "SpecSource":
        return cls(source_dict["uri"])


class ProfiledDataset(MetaDataset):
    """A `MetaDataset` (metadata only: the data is never copied) with a profile, a JSON object
    of counts the MLflow UI shows beside the dataset."""

    def __init__(self, source: DatasetSource, name: str, digest: str, profile: Mapping[str, Any]):
        self._profile = dict(profile)
        super().__init__(source=source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self._profile, sort_keys=True)
        return config


def dataset_input(info: Mapping, metrics: Mapping | None = None) -> DatasetInput | None:
    """The run's data as an MLflow dataset input (context `training`), or None when `info` has
    no `dataset` or `data_fingerprint` (the data stage has not run).

    name: the dataset name (`info["dataset"]`); when the run used part of the log (fewer events
    used than read: `data.max_events`, `data.until`), "<name> (<used> of <read> events)", so
    that each subset is its own MLflow dataset: MLflow keeps one dataset per name and digest in
    an experiment, with the profile it was first logged with. digest: the data fingerprint cut to
    MLflow's 36 characters (the whole fingerprint is the `data.fingerprint` tag and the
    profile's `fingerprint`). source: the spec file (`info["spec"]`, else `info["data_root"]`).
    profile: `PROFILE_METRICS` found in `metrics` as integers, `fingerprint`, `synthetic`.

    Args:
        info: the pipeline's run info after the data stage (`state.info`).
        metrics: the run's figures after the data stage (`state.metrics`).
    """
    if "dataset" not in info or "data_fingerprint" not in info:
        return None
    metrics = metrics or {}
    fingerprint = str(info["data_fingerprint"])
    profile: dict[str, Any] = {key: int(metrics[name]) for key, name in PROFILE_METRICS.items()
                               if name in metrics and math.isfinite(float(metrics[name]))}
    profile["fingerprint"] = fingerprint
    if "synthetic" in info:
        profile["synthetic"] = bool(info["synthetic"])
    name = str(info["dataset"])
    used, read = profile.get("events"), profile.get("events_in_log")
    if used is not None and read is not None and used < read:
        name = f"{name} ({used} of {read} events)"
    source = SpecSource(str(info.get("spec") or info.get("data_root") or name))
    dataset = ProfiledDataset(source, name=name, digest=fingerprint[:MAX_DATASET_DIGEST],
                              profile=profile)
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])
