"""What the stages of a run share: the run folder, the figures so far, and each stage's typed
hand-off to the stages after it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from shopping_mtl.config import Config

if TYPE_CHECKING:  # the stages import this module; their hand-off types are only named here
    from shopping_mtl.candidates.stage import CandidatesOutput
    from shopping_mtl.data.stage import DataOutput
    from shopping_mtl.ranking.stage import RankingOutput
    from shopping_mtl.retrieval.stage import RetrievalOutput


def write_atomic(path: Path, text: str) -> None:
    """Write text to a sibling temp file and rename it into place: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write a frame as Parquet the same way: a temp file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


@dataclass
class RunState:
    """The run folder, the figures so far, and what each stage hands on (None until it ran).

    `metrics` becomes metrics.json (figures of the run, reproducible), `info` run_info.json
    (where the data came from, timings, exports), `histories` the per-epoch curves tracked.
    """

    config: Config
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    histories: dict[str, dict] = field(default_factory=dict)  # model -> Keras History.history
    data: DataOutput | None = None
    retrieval: RetrievalOutput | None = None
    candidates: CandidatesOutput | None = None
    ranking: RankingOutput | None = None
    tracking_error: str | None = None  # set when recording the finished run in MLflow failed

    @property
    def dataset(self):
        return self.data.dataset

    @property
    def split(self):
        return self.data.split

    @property
    def truth(self):
        return self.data.truth

    def fit_label(self, model: str) -> str:
        """`model` with the fold it is fitted in, when the run has several folds: what a fit's
        epoch log lines start with, e.g. "ranker mmoe, fold 2019-06-18 (2 of 3)"."""
        fold = self.info.get("fold")
        return f"{model}, fold {fold['name']} ({fold['number']} of {fold['of']})" if fold else model

    def backup_dir(self, name: str) -> Path:
        """Where the fit of model `name` keeps what a rerun into this run folder resumes from."""
        return self.run_dir / ".backup" / name

    def examples_dir(self, name: str) -> Path | None:
        """Where model `name`'s training examples are written as Parquet shards and streamed
        from (`data.stream_above_events`), or None: they are held in memory."""
        threshold = self.config.data.stream_above_events
        if threshold is None or len(self.dataset.events) <= threshold:
            return None
        return self.run_dir / ".examples" / name

    def write_list(self, frame: pd.DataFrame, name: str) -> Path:
        """Write a list file into the run folder atomically."""
        path = self.run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(frame, path)
        return path
